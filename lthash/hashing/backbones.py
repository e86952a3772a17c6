"""Backbones: a small CNN for 28-32 px images (the CPU default) and torchvision's AlexNet,
ResNet18/34/50 and ViT-B/16, all built with ``weights=None``.

Pretrained weights come only from a local file named in the config
(``hashing.pretrained.<backbone>``): safetensors preferred, a ``.pth``/``.pt`` state dict only
through ``torch.load(weights_only=True)``. Nothing is ever downloaded.

Every backbone takes float images N x C x H x W in [0, 1] at the data's size and channel
count; :class:`Preprocess` adapts them (grey to 3 channels, resize, normalise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lthash.errors import LthashError

BACKBONES = ("cnn", "alexnet", "resnet18", "resnet34", "resnet50", "vit_b_16")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_image_size(name: str, native: int) -> int:
    """Input side a backbone runs at when the config sets none: native for the CNN and ResNets
    (at least 32), at least 64 for AlexNet (its stride-4 stem and three pools), 224 for ViT-B/16."""
    if name == "vit_b_16":
        return 224
    if name == "alexnet":
        return max(native, 64)
    if name.startswith("resnet"):
        return max(native, 32)
    return native


class Preprocess(nn.Module):
    """x in [0,1] -> channel repeat (grey to 3 where needed) -> bilinear resize -> (x - mean) / std."""

    def __init__(self, in_channels: int, out_channels: int, size: int, native: int,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.size, self.native = in_channels, out_channels, size, native
        self.register_buffer("mean", torch.tensor(mean[:out_channels]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std[:out_channels]).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels != self.out_channels:
            x = x.mean(dim=1, keepdim=True).expand(-1, self.out_channels, -1, -1) if self.in_channels > 1 \
                else x.expand(-1, self.out_channels, -1, -1)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """Three conv blocks (3x3 conv, BatchNorm, ReLU; max-pool after the first two), then
    global average pooling and FC+ReLU to ``feature_dim``. About 30k conv parameters at width 16."""

    def __init__(self, in_channels: int, width: int = 16, feature_dim: int = 256) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(in_channels, width), nn.MaxPool2d(2),
                                      *block(width, 2 * width), nn.MaxPool2d(2),
                                      *block(2 * width, 4 * width))
        self.fc = nn.Sequential(nn.Linear(4 * width, feature_dim), nn.ReLU(inplace=True))
        self.map_channels = 4 * width

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(fmap, 1).flatten(1))


class Backbone(nn.Module):
    """A feature extractor with an optional convolutional map stage.

    ``forward(x) = pool(feature_map(x))`` for convolutional backbones; ``map_channels`` is the
    channel count of the map (attention methods re-weight it); ViT has no map
    (``map_channels = 0``). ``out_dim`` is the length of the pooled feature vector.
    """

    def __init__(self, name: str, in_channels: int, native_size: int, image_size: int | None = None,
                 cnn_width: int = 16, cnn_feature_dim: int = 256) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise LthashError(f"unknown backbone '{name}' (known: {', '.join(BACKBONES)})")
        self.name = name
        size = int(image_size or default_image_size(name, native_size))
        if name == "vit_b_16" and size % 16:
            raise LthashError(f"hashing.image_size {size} must be a multiple of 16 for vit_b_16")
        if name == "cnn":
            self.pre = Preprocess(in_channels, in_channels, size, native_size, (0.5,) * 3, (0.5,) * 3)
            self.net = SmallCNN(in_channels, cnn_width, cnn_feature_dim)
            self.map_channels, self.out_dim = self.net.map_channels, cnn_feature_dim
            return
        import torchvision.models as tvm  # slow to import (pulls in torch._dynamo): only when needed

        self.pre = Preprocess(in_channels, 3, size, native_size, IMAGENET_MEAN, IMAGENET_STD)
        if name == "alexnet":
            self.net = tvm.alexnet(weights=None)
            self.net.classifier = nn.Sequential(*list(self.net.classifier.children())[:-1])
            self.map_channels, self.out_dim = 256, 4096
        elif name.startswith("resnet"):
            self.net = getattr(tvm, name)(weights=None)
            self.net.fc = nn.Identity()
            self.out_dim = self.net.layer4[-1].conv1.in_channels if name == "resnet50" else 512
            self.map_channels = self.out_dim
        else:
            self.net = tvm.vit_b_16(weights=None, image_size=size)
            self.net.heads = nn.Identity()
            self.map_channels, self.out_dim = 0, 768

    @property
    def has_map(self) -> bool:
        return self.map_channels > 0

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed images -> the last convolutional feature map (N x map_channels x h x w)."""
        x = self.pre(x)
        if self.name == "cnn":
            return self.net.features(x)
        if self.name == "alexnet":
            return self.net.features(x)
        if self.name.startswith("resnet"):
            n = self.net
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            return n.layer4(n.layer3(n.layer2(n.layer1(x))))
        raise LthashError("vit_b_16 has no convolutional feature map (use a CNN backbone for this method)")

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        """Feature map -> feature vector (N x out_dim)."""
        if self.name == "cnn":
            return self.net.pool(fmap)
        if self.name == "alexnet":
            return self.net.classifier(torch.flatten(self.net.avgpool(fmap), 1))
        return torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_map:
            return self.pool(self.feature_map(x))
        return self.net(self.pre(x))


def read_state_dict(path: str | Path, key: str) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file: safetensors, or a .pth/.pt state dict loaded with
    ``torch.load(weights_only=True)``. ``key`` (the config key naming the file) goes in errors."""
    path = Path(path)
    if not path.is_file():
        raise LthashError(f"pretrained weights file named by config key '{key}' not found: {path} "
                          "(weights are never downloaded; put the file there or set the key to null)")
    if path.suffix == ".safetensors":
        from lthash.io import load_safetensors

        state, _ = load_safetensors(path)
        return state
    if path.suffix in (".pth", ".pt", ".bin"):
        try:
            state: Any = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise LthashError(f"{path} (config key '{key}') is not a loadable state dict: {exc}") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise LthashError(f"{path} (config key '{key}') does not hold a state dict")
        return state
    raise LthashError(f"{path} (config key '{key}'): weights must be .safetensors or a .pth/.pt state dict")


def load_pretrained(backbone: Backbone, path: str | Path, key: str) -> list[str]:
    """Load a torchvision-format state dict into ``backbone.net``; return the keys left at init.

    Prefixes ``module.``/``model.`` are stripped; the ImageNet classifier's last layer
    (replaced here) is ignored. No matching key at all is an error naming the file.
    """
    state = read_state_dict(path, key)
    cleaned = {}
    for name, tensor in state.items():
        for prefix in ("module.", "model.", "backbone.net."):
            if name.startswith(prefix):
                name = name[len(prefix):]
        cleaned[name] = tensor
    target = backbone.net.state_dict()
    usable = {k: v for k, v in cleaned.items() if k in target and target[k].shape == v.shape}
    if not usable:
        raise LthashError(f"{path} (config key '{key}') has no weights matching backbone '{backbone.name}'")
    backbone.net.load_state_dict(usable, strict=False)
    return sorted(set(target) - set(usable))

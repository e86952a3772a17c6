"""Text-to-image model components: the tiny pixel-space model and Stable Diffusion 1.x/2.x folders.

Both model sizes pass through the same :class:`DiffusionComponents` and the same diffusers
folder layout (``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` and, for latent
models, ``vae/``). The tiny model has no VAE: it denoises pixels scaled to [-1, 1]. Its
tokenizer is a word-level CLIP BPE tokenizer (:mod:`lthash.generate.tokenizer`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from lthash.errors import LthashError
from lthash.generate.tokenizer import build_word_tokenizer

MODEL_INFO_FILE = "lthash_model.json"


@dataclass
class TinyModelConfig:
    """Architecture of the tiny pixel-space text-to-image model.

    Cross-attention sits only at the lowest UNet resolution and in the mid block (attention
    at higher resolutions costs 2x-20x on CPU for little gain at this size). The noise
    schedule clips predicted images to [-1, 1] (pixel space): without it, few-step DDIM
    sampling of an under-trained model drifts to grey noise.
    """

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_head_dim: int = 8
    norm_num_groups: int = 8
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate_size: int = 128
    max_length: int = 16
    placeholder_slots: int = 16
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "TinyModelConfig":
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise LthashError(f"unknown tiny model setting(s): {', '.join(unknown)}")
        if "block_out_channels" in values:
            values["block_out_channels"] = tuple(values["block_out_channels"])
        return cls(**values)


@dataclass
class DiffusionComponents:
    """Everything a training or sampling loop needs from a text-to-image model.

    ``image_size``/``channels`` describe the pixel images the model draws (the VAE's input
    for latent models); ``noise_scheduler`` is the DDPM schedule used for training.
    """

    unet: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any
    vae: Any | None
    image_size: int
    channels: int
    kind: str = "tiny"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def model_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the tensors the UNet denoises."""
        size = self.image_size // self.vae_scale_factor
        return int(self.unet.config.in_channels), size, size

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "DiffusionComponents":
        """Move every module in place; returns self."""
        kwargs = {key: value for key, value in (("device", device), ("dtype", dtype)) if value is not None}
        for module in (self.unet, self.text_encoder, self.vae):
            if module is not None and kwargs:
                module.to(**kwargs)
        return self

    def max_length(self) -> int:
        return int(min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings))


def build_tiny_components(
    vocabulary_words: Iterable[str],
    image_size: int = 28,
    channels: int = 1,
    seed: int = 0,
    config: TinyModelConfig | dict | None = None,
) -> DiffusionComponents:
    """A freshly initialised tiny pixel-space text-to-image model (UNet, CLIP text encoder, tokenizer).

    The text encoder's embedding table has ``placeholder_slots`` spare rows beyond the
    vocabulary, so tokens added later with ``tokenizer.add_tokens`` (``<v0>``...) have a row.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = config if isinstance(config, TinyModelConfig) else TinyModelConfig.from_dict(config)
    levels = len(cfg.block_out_channels)
    factor = 2 ** (levels - 1)
    if image_size % factor:
        raise LthashError(f"tiny model image_size {image_size} must be divisible by {factor} "
                          f"({levels} UNet levels)")
    tokenizer = build_word_tokenizer(vocabulary_words, cfg.max_length)
    torch.manual_seed(seed)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer) + cfg.placeholder_slots,
        hidden_size=cfg.text_hidden_size,
        intermediate_size=cfg.text_intermediate_size,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=cfg.text_hidden_size,
    )
    text_encoder = CLIPTextModel(text_config)
    unet = UNet2DConditionModel(
        sample_size=image_size,
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownBlock2D",) * (levels - 1) + ("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1),
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=tuple(cfg.block_out_channels),
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cfg.text_hidden_size,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
    )
    scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                              prediction_type=cfg.prediction_type, clip_sample=True, clip_sample_range=1.0)
    info = {"kind": "tiny", "image_size": image_size, "channels": channels, "config": _jsonable(asdict(cfg))}
    return DiffusionComponents(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                               noise_scheduler=scheduler, vae=None, image_size=image_size,
                               channels=channels, kind="tiny", info=info)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


def save_components(components: DiffusionComponents, path: str | os.PathLike,
                    extras: Callable[[Path], None] | None = None) -> Path:
    """Save in diffusers folder format, atomically (temporary sibling folder, then rename).

    ``extras(folder)`` may add files (figures, logs) to the folder before it is published.
    """
    import diffusers

    from lthash.io import atomic_dir

    path = Path(path)
    with atomic_dir(path) as tmp:
        components.unet.save_pretrained(tmp / "unet", safe_serialization=True)
        components.text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        components.tokenizer.save_pretrained(tmp / "tokenizer")
        components.noise_scheduler.save_pretrained(tmp / "scheduler")
        if components.vae is not None:
            components.vae.save_pretrained(tmp / "vae", safe_serialization=True)
        index = {
            "_class_name": "StableDiffusionPipeline" if components.vae is not None else "LthashTinyPipeline",
            "_diffusers_version": diffusers.__version__,
            "unet": ["diffusers", type(components.unet).__name__],
            "text_encoder": ["transformers", type(components.text_encoder).__name__],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", type(components.noise_scheduler).__name__],
            "vae": ["diffusers", type(components.vae).__name__] if components.vae is not None else [None, None],
        }
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        info = dict(components.info, kind=components.kind, image_size=components.image_size,
                    channels=components.channels)
        (tmp / MODEL_INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
        if extras is not None:
            extras(tmp)
    return path


_WEIGHTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}
_CONFIGS = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
            "scheduler": "scheduler_config.json"}


def _check_folder(path: Path, need_vae: bool) -> None:
    if not path.is_dir():
        raise LthashError(f"model folder not found: {path}")
    missing = []
    parts = ["unet", "text_encoder", "tokenizer", "scheduler"] + (["vae"] if need_vae else [])
    for part in parts:
        folder = path / part
        if not folder.is_dir():
            missing.append(f"{part} (no {part}/ folder)")
            continue
        if part == "tokenizer":
            if not ((folder / "vocab.json").exists() and (folder / "merges.txt").exists()) \
                    and not (folder / "tokenizer.json").exists():
                missing.append("tokenizer (no vocab.json + merges.txt or tokenizer.json)")
            continue
        if not (folder / _CONFIGS[part]).exists():
            missing.append(f"{part} (no {part}/{_CONFIGS[part]})")
        if part in _WEIGHTS:
            stem = _WEIGHTS[part]
            if not (folder / f"{stem}.safetensors").exists() and not (folder / f"{stem}.safetensors.index.json").exists():
                others = sorted(p.name for p in folder.glob(f"{stem}*"))
                hint = (f"; found {', '.join(others)}: only safetensors weights are loaded, convert them"
                        if others else "")
                missing.append(f"{part} (no {part}/{stem}.safetensors{hint})")
    if missing:
        raise LthashError(f"model folder {path} is incomplete: missing " + "; ".join(missing))


def _load_part(name: str, path: Path, loader, **kwargs) -> Any:
    try:
        return loader(path / name, **kwargs)
    except LthashError:
        raise
    except Exception as exc:  # diffusers/transformers raise many types for a corrupt file
        raise LthashError(f"cannot load {name} from {path / name}: {type(exc).__name__}: {exc}") from exc


def load_components(path: str | os.PathLike, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None, unet: Any | None = None) -> DiffusionComponents:
    """Load the tiny model folder or a Stable Diffusion 1.x/2.x diffusers folder.

    A folder written by :func:`save_components` for the tiny model has no ``vae/``; any
    other folder must have one. Missing parts are named all at once; only safetensors
    weights are read. ``unet``, when given, is used instead of the folder's own (a concept's
    UNet), so the folder's UNet weights are not read. Only the classes a folder needs are
    imported: diffusers' autoencoders package (53 modules) only for a latent model.
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path)
    info_path = path / MODEL_INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    need_vae = info.get("kind", "stable-diffusion") != "tiny"
    _check_folder(path, need_vae)
    if unet is None:
        unet = _load_part("unet", path, UNet2DConditionModel.from_pretrained, use_safetensors=True)
    text_encoder = _load_part("text_encoder", path, CLIPTextModel.from_pretrained, use_safetensors=True)
    tokenizer = _load_part("tokenizer", path, CLIPTokenizer.from_pretrained)
    scheduler = _load_part("scheduler", path, DDPMScheduler.from_pretrained)
    vae = None
    if need_vae:
        from diffusers import AutoencoderKL

        vae = _load_part("vae", path, AutoencoderKL.from_pretrained, use_safetensors=True)
    if vae is not None:
        image_size = int(unet.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1)
        channels = int(vae.config.in_channels)
    else:
        image_size = int(info.get("image_size", unet.config.sample_size))
        channels = int(info.get("channels", unet.config.in_channels))
    components = DiffusionComponents(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                                     noise_scheduler=scheduler, vae=vae, image_size=image_size,
                                     channels=channels, kind="tiny" if not need_vae else "stable-diffusion",
                                     info=info)
    for module in (unet, text_encoder, vae):
        if module is not None:
            module.eval()
            module.requires_grad_(False)
    return components.to(device, dtype)


def with_text_time_embedding(unet: Any) -> Any:
    """``unet`` rebuilt with a pooled-text pathway into its time embedding, starting as ``unet``.

    The copy has diffusers' ``addition_embed_type: "text"``: emb(t, c) = emb(t) + n2(P(pool(n1(c)))),
    the text encoder's output c attention-pooled, projected to the time-embedding width and added
    to the time embedding every ResNet block reads, at every resolution (the path class labels
    take in class-conditional diffusion models). The final LayerNorm n2 starts at weight 0, bias 0,
    so the added term is 0 and the copy computes exactly what ``unet`` does until it trains. Its
    config says so, so the saved UNet loads with the pathway through :func:`load_components`, and
    callers keep calling ``unet(x, t, c)``. Heads of the pooling: width // 64 (at least 1).
    """
    from diffusers import UNet2DConditionModel

    if unet.config.get("addition_embed_type") == "text":
        return unet
    if unet.config.get("addition_embed_type") is not None:
        raise LthashError(f"the UNet already has an addition embedding ({unet.config['addition_embed_type']!r})")
    width = int(unet.config.cross_attention_dim)
    config = dict(unet.config, addition_embed_type="text", addition_embed_type_num_heads=max(1, width // 64))
    rebuilt = UNet2DConditionModel.from_config(config)
    missing, unexpected = rebuilt.load_state_dict(unet.state_dict(), strict=False)
    if unexpected or any(not key.startswith("add_embedding.") for key in missing):
        raise LthashError(f"cannot add a text-time embedding to this UNet: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        rebuilt.add_embedding.norm2.weight.zero_()
        rebuilt.add_embedding.norm2.bias.zero_()
    rebuilt.to(device=unet.device)
    return rebuilt if rebuilt.dtype == unet.dtype else rebuilt.to(dtype=unet.dtype)


def _to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert an N x C x H x W float tensor to ``channels`` (grey <-> RGB)."""
    have = x.shape[1]
    if have == channels:
        return x
    if have == 1:
        return x.repeat(1, channels, 1, 1)
    if channels == 1 and have == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(dim=1, keepdim=True)
    raise LthashError(f"cannot convert images with {have} channels to {channels}")


def _resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def images_to_pixels(images_uint8: np.ndarray | torch.Tensor, image_size: int, channels: int) -> torch.Tensor:
    """uint8 N x H x W x C -> float N x channels x image_size x image_size in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images_uint8))
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise LthashError(f"images must be N x H x W x C uint8, got shape {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return _resize(_to_channels(x, channels), image_size).clamp(-1.0, 1.0)


def encode_images(components: DiffusionComponents, images_uint8: np.ndarray | torch.Tensor,
                  generator: torch.Generator | None = None, sample: bool = True) -> torch.Tensor:
    """Images (uint8 NHWC) -> the tensors the UNet denoises.

    Pixel models: pixels in [-1, 1] at the model resolution. Latent models: VAE latents
    (a sample of the posterior, or its mean with ``sample=False``) times the scaling factor.
    """
    x = images_to_pixels(images_uint8, components.image_size, components.channels)
    vae = components.vae
    if vae is None:
        return x.to(components.device, components.dtype)
    x = x.to(vae.device, vae.dtype)
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
        latents = dist.sample(generator=generator) if sample else dist.mean
    return latents * vae.config.scaling_factor


# Latents the VAE decodes per call. SD 1.5's decoder at 512 px took 1.25 GB per image in fp32 on
# CPU (benchmarks/bench_true_shapes.py): the paper config's synthesis batch of 16 decoded at once
# would add about 10 GB in fp16 at the end of every batch; one at a time, about 0.6 GB whatever the
# batch (diffusers' "VAE slicing").
VAE_DECODE_SLICE = 1


def decode(components: DiffusionComponents, x: torch.Tensor,
           size: tuple[int, int, int] | None = None) -> np.ndarray:
    """Model-space tensors -> uint8 N x H x W x C, resized to ``size`` = (H, W, C) when given.

    Latent models decode :data:`VAE_DECODE_SLICE` images per VAE call (the decoder works on
    each image alone: its group norms have no batch statistics)."""
    vae = components.vae
    with torch.no_grad():
        if vae is not None:
            x = torch.cat([vae.decode(part.to(vae.dtype) / vae.config.scaling_factor).sample
                           for part in (x.split(VAE_DECODE_SLICE) or (x,))])
        x = x.float().clamp(-1.0, 1.0)
        if size is not None:
            height, width, channels = size
            x = _to_channels(_resize(x, (height, width)), channels).clamp(-1.0, 1.0)
        images = ((x + 1.0) * 127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


def tokenize(components: DiffusionComponents, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids, padded/truncated to the text encoder's length."""
    ids = components.tokenizer(list(prompts), padding="max_length", truncation=True,
                               max_length=components.max_length(), return_tensors="pt").input_ids
    return ids.to(components.text_encoder.device)


def encode_prompts(components: DiffusionComponents, prompts: Sequence[str]) -> torch.Tensor:
    """Prompts -> text encoder hidden states (N x L x D), the UNet's cross-attention input."""
    return components.text_encoder(tokenize(components, prompts))[0]


def build_tiny_stable_diffusion(seed: int = 0, image_size: int = 32,
                                words: Iterable[str] | None = None) -> DiffusionComponents:
    """:func:`lthash.generate.stable_diffusion.build_stable_diffusion` of the ``tiny`` architecture
    (``words`` None = its default vocabulary)."""
    from lthash.generate.stable_diffusion import SD_WORDS, build_stable_diffusion

    return build_stable_diffusion("tiny", seed, image_size, SD_WORDS if words is None else words)


def save_tiny_stable_diffusion(path: str | os.PathLike, seed: int = 0, image_size: int = 32) -> Path:
    """:func:`lthash.generate.stable_diffusion.save_stable_diffusion` of the ``tiny`` architecture."""
    from lthash.generate.stable_diffusion import save_stable_diffusion

    return save_stable_diffusion(path, "tiny", seed, image_size)

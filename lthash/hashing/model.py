"""Building a hash model from the hashing config, and reading/writing ``model.safetensors``.

A run's ``model.safetensors`` holds the method module's state dict; its metadata (method,
backbone, bits, num_classes, input_shape, class_counts, seed, params) is enough to rebuild the
module, so ``lthash encode`` needs nothing but the run folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from lthash.errors import LthashError
from lthash.hashing.backbones import BACKBONES, Backbone, load_pretrained
from lthash.hashing.methods import REGISTRY, HashMethod, get_method
from lthash.hashing.methods.base import method_section
from lthash.hashing.methods.shallow import PixelFeatures

log = logging.getLogger("lthash.hashing")
MODEL_FILE = "model.safetensors"
MODEL_FORMAT = 1


def resolve_choice(params: Mapping[str, Any], key: str) -> Any:
    """The single value of a key that may hold a list (the workflow crosses lists into jobs)."""
    value = params[key]
    if isinstance(value, list):
        if len(value) != 1:
            raise LthashError(f"config key 'hashing.{key}' lists {value}: a training job takes one value "
                              "(the workflow passes each job its own)")
        value = value[0]
    return value


def job_choice(params: Mapping[str, Any]) -> tuple[str, str, int]:
    """(method, backbone, bits) of one job, checked against the registry and the backbone list."""
    method, backbone, bits = (resolve_choice(params, k) for k in ("method", "backbone", "bits"))
    get_method(method)
    if backbone not in BACKBONES:
        raise LthashError(f"config key 'hashing.backbone': unknown backbone '{backbone}' (known: {', '.join(BACKBONES)})")
    return method, backbone, int(bits)


def method_options(params: Mapping[str, Any], method: str) -> dict[str, Any]:
    """The options of ``method`` in validated hashing params (a method without options has no section)."""
    section = method_section(method)
    return dict(params[section]) if section in params else {}


def build_model(params: Mapping[str, Any], method: str, backbone_name: str, bits: int, num_classes: int,
                input_shape: tuple[int, int, int], class_counts: np.ndarray, seed: int,
                load_weights: bool = True) -> HashMethod:
    """A freshly initialised model (seeded), with pretrained backbone weights if configured."""
    cls = get_method(method)
    height, width, channels = input_shape
    torch.manual_seed(seed)
    if not cls.trainable and params["shallow"]["features"] == "pixels":
        features: torch.nn.Module = PixelFeatures(input_shape)
    else:
        features = Backbone(backbone_name, channels, max(height, width), params["image_size"],
                            params["cnn"]["width"], params["cnn"]["feature_dim"])
        weights = params["pretrained"].get(backbone_name)
        if weights and load_weights:
            missing = load_pretrained(features, weights, f"hashing.pretrained.{backbone_name}")
            log.info("pretrained %s from %s (%d keys left at init)", backbone_name, weights, len(missing))
    return cls(features, bits, num_classes, method_options(params, method), class_counts, seed)


def model_metadata(model: HashMethod, backbone: str, input_shape: tuple[int, int, int], seed: int,
                   params: Mapping[str, Any]) -> dict[str, Any]:
    return {"format": MODEL_FORMAT, "method": model.name, "backbone": backbone, "bits": model.bits,
            "num_classes": model.num_classes, "input_shape": list(input_shape),
            "class_counts": model.class_counts.tolist(), "seed": seed, "params": dict(params)}


def fit_buffers(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Give buffers whose size is set by fitting (shallow methods) the stored shapes before loading."""
    for name, buffer in list(model.named_buffers()):
        if name in state and tuple(state[name].shape) != tuple(buffer.shape):
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(owner, name.rsplit(".", 1)[-1], torch.empty_like(state[name]))


def load_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    fit_buffers(model, state)
    model.load_state_dict(state, strict=True)


def _decode(value: str) -> Any:
    """Metadata values: JSON where they parse (numbers, lists, dicts), else the plain string."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def read_model(run_dir: str | Path, device: str = "cpu") -> tuple[HashMethod, dict[str, Any]]:
    """Rebuild a run's model (eval mode, on ``device``) and return it with its metadata."""
    from lthash.io import load_safetensors

    path = Path(run_dir) / MODEL_FILE
    if not path.exists():
        raise LthashError(f"{run_dir} is not a finished training run: {MODEL_FILE} missing")
    state, raw = load_safetensors(path)
    meta = {key: _decode(value) for key, value in raw.items()}
    if meta.get("method") not in REGISTRY:
        raise LthashError(f"{path}: unknown method {meta.get('method')!r} in metadata")
    model = build_model(meta["params"], meta["method"], meta["backbone"], int(meta["bits"]),
                        int(meta["num_classes"]), tuple(meta["input_shape"]),
                        np.asarray(meta["class_counts"]), int(meta["seed"]), load_weights=False)
    load_state(model, state)
    return model.to(device).eval(), meta


def init_from_run(model: HashMethod, run_dir: str | Path) -> dict[str, Any]:
    """Copy every tensor of another run's model whose name and shape match (pretrain -> fine-tune).

    Returns what was loaded and skipped; nothing matching is an error naming the run.
    """
    from lthash.io import load_safetensors

    path = Path(run_dir) / MODEL_FILE
    if not path.exists():
        raise LthashError(f"--init {run_dir}: no {MODEL_FILE} there (is the run finished?)")
    state, _ = load_safetensors(path)
    target = model.state_dict()
    usable = {k: v for k, v in state.items() if k in target and tuple(target[k].shape) == tuple(v.shape)}
    if not usable:
        raise LthashError(f"--init {run_dir}: no tensor matches this model (different method or backbone?)")
    model.load_state_dict(usable, strict=False)
    skipped = sorted(set(target) - set(usable))
    if skipped:
        log.info("init from %s: %d tensors loaded, %d kept at init (%s...)", run_dir, len(usable), len(skipped), skipped[:3])
    return {"loaded": len(usable), "skipped": skipped}

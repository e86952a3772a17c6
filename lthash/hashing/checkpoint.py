"""Epoch checkpoints in ``<RUN_DIR>.partial/``: weights and optimiser state as safetensors,
everything else (epoch, history, RNG states, fingerprint of the inputs) as JSON.

A checkpoint is the folder ``epoch-NNNN/`` holding ``model.safetensors``,
``optimizer.safetensors`` (and ``best.safetensors`` when selecting by validation), with
``state.json`` written last: a folder without a readable ``state.json`` (a kill mid-write) is
skipped, and so is one whose fingerprint differs from the current run's inputs.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from lthash.errors import LthashError
from lthash.io import load_safetensors, read_json, save_safetensors, write_json
from lthash.optimizer_state import flatten_optimizer_state, unflatten_optimizer_state

log = logging.getLogger("lthash.hashing")


def rng_states() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """torch (CPU and CUDA) RNG states as tensors; python and numpy states as JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = cuda_state
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return tensors, {"python": [version, list(internal), gauss],
                     "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}


def restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(partial: Path, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: Mapping[str, Any], best: Mapping[str, torch.Tensor] | None, keep: int) -> Path:
    """Write checkpoint ``epoch`` (epochs done so far) and prune all but the newest ``keep``."""
    folder = partial / f"epoch-{epoch:04d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_safetensors(folder / "model.safetensors", model.state_dict())
    opt_tensors, opt_meta = flatten_optimizer_state(optimizer.state_dict())
    rng_tensors, rng_meta = rng_states()
    save_safetensors(folder / "optimizer.safetensors", {**opt_tensors, **rng_tensors})
    if best is not None:
        save_safetensors(folder / "best.safetensors", best)
    write_json(folder / "state.json", {**state, "epoch": epoch, "optimizer": opt_meta, "rng": rng_meta})
    for old in sorted(partial.glob("epoch-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_checkpoint(partial: Path, fingerprint: str) -> dict[str, Any] | None:
    """The newest complete checkpoint made from the same inputs, loaded; None if there is none."""
    if not partial.is_dir():
        return None
    for folder in sorted(partial.glob("epoch-*"), reverse=True):
        try:
            state = read_json(folder / "state.json")
            if state.get("fingerprint") != fingerprint:
                log.warning("ignoring checkpoint %s: made from other inputs or params", folder)
                continue
            model, _ = load_safetensors(folder / "model.safetensors")
            extra, _ = load_safetensors(folder / "optimizer.safetensors")
            best = load_safetensors(folder / "best.safetensors")[0] if (folder / "best.safetensors").exists() else None
        except (LthashError, json.JSONDecodeError, KeyError) as exc:
            log.warning("skipping unreadable checkpoint %s: %s", folder, exc)
            continue
        optimizer = unflatten_optimizer_state(extra, state["optimizer"])
        return {"folder": folder, "state": state, "model": model, "optimizer": optimizer,
                "rng_tensors": {k: v for k, v in extra.items() if k.startswith("rng.")}, "best": best}
    return None

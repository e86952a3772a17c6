"""Epoch checkpoints in ``<RUN_DIR>.partial/``: weights, optimiser and RNG states
(:func:`lthash.checkpointing.capture_rng`, keys ``rng.*``) as safetensors, everything else
(epoch, history, fingerprint of the inputs) as JSON.

A checkpoint is the folder ``epoch-NNNN/`` holding ``model.safetensors``,
``optimizer.safetensors`` (and ``best.safetensors`` when selecting by validation), with
``state.json`` written last: a folder without a readable ``state.json`` (a kill mid-write) is
skipped, and so is one whose fingerprint differs from the current run's inputs.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from lthash.checkpointing import capture_rng
from lthash.errors import LthashError
from lthash.io import load_safetensors, read_json, save_safetensors, write_json
from lthash.optimizer_state import flatten_optimizer_state, unflatten_optimizer_state

log = logging.getLogger("lthash.hashing")


def save_checkpoint(partial: Path, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: Mapping[str, Any], best: Mapping[str, torch.Tensor] | None, keep: int) -> Path:
    """Write checkpoint ``epoch`` (epochs done so far) and prune all but the newest ``keep``."""
    folder = partial / f"epoch-{epoch:04d}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_safetensors(folder / "model.safetensors", model.state_dict())
    opt_tensors, opt_meta = flatten_optimizer_state(optimizer.state_dict())
    save_safetensors(folder / "optimizer.safetensors", {**opt_tensors, **capture_rng(prefix="rng.")})
    if best is not None:
        save_safetensors(folder / "best.safetensors", best)
    write_json(folder / "state.json", {**state, "epoch": epoch, "optimizer": opt_meta})
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

"""Checkpoints of a personalisation run in ``<out>.partial/``, and resume from the newest valid one.

A checkpoint is a folder ``ckpt-S-NNNNNN`` (stage index S, optimiser steps done NNNNNN in
that stage) holding

- ``weights.safetensors``: every parameter changed so far (the [V] row, and the UNet
  parameters of the stages run so far),
- ``optimizer.safetensors``: the current stage's optimiser state, flattened to tensors with
  its ``param_groups`` and the gradient scaler state as JSON metadata,
- ``rng-<process>.safetensors``: the run's torch generator state and the process's global
  torch CPU/CUDA, python and numpy states (:func:`lthash.checkpointing.capture_rng`, one file
  per process under accelerate),
- ``state.json``: stage index, step, fingerprint of the run's settings, and the stage log.

It is written to a temporary sibling and renamed into place, so a kill mid-write leaves no
checkpoint under a valid name; a checkpoint that fails to load (truncated file) is skipped.
Resuming restores the weights, optimiser and RNG states bit for bit, so on CPU the final
weights equal those of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from lthash.errors import LthashError
from lthash.io import canonical_json, load_safetensors, save_safetensors
from lthash.optimizer_state import flatten_optimizer_state, unflatten_optimizer_state

log = logging.getLogger("lthash.personalize")

CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d+)-(\d{6})$")


@dataclass
class Checkpoint:
    """What a resume needs: position, weights, optimiser state, RNG states, stage log."""

    stage_index: int
    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    scaler: dict[str, Any] | None
    rng: dict[str, torch.Tensor]
    stage_log: list[dict[str, Any]] = field(default_factory=list)


class CheckpointManager:
    """Writes and finds checkpoints in ``partial_dir`` for one run (identified by ``fingerprint``).

    ``keep`` newest checkpoints are kept. A folder holding checkpoints of other settings
    (different fingerprint) is cleared on start, so a changed config never resumes stale state.
    Under accelerate every process calls :meth:`save`: each writes its RNG state
    (``rng-<process_index>``), ``barrier`` waits for all, and the main process assembles the
    checkpoint.
    """

    def __init__(self, partial_dir: str | os.PathLike, fingerprint: Mapping[str, Any], keep: int = 2,
                 process_index: int = 0, is_main_process: bool = True,
                 barrier: Callable[[], None] | None = None) -> None:
        self.dir = Path(partial_dir)
        self.fingerprint = json.loads(canonical_json(fingerprint))
        self.keep = keep
        self.process_index = process_index
        self.is_main_process = is_main_process
        self.barrier = barrier or (lambda: None)

    def prepare(self) -> None:
        """Create the folder; drop it first if it belongs to a run with other settings."""
        marker = self.dir / "fingerprint.json"
        if self.dir.exists() and self.is_main_process:
            try:
                same = json.loads(marker.read_text()) == self.fingerprint
            except (OSError, json.JSONDecodeError):
                same = False
            if not same:
                log.info("discarding %s: it belongs to a run with other settings", self.dir)
                shutil.rmtree(self.dir)
        if self.is_main_process:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                marker.write_text(canonical_json(self.fingerprint))

    def checkpoints(self) -> list[tuple[int, int, Path]]:
        """(stage index, step, folder) of every checkpoint under a valid name, oldest first."""
        if not self.dir.exists():
            return []
        found = []
        for path in self.dir.iterdir():
            match = CHECKPOINT_PATTERN.match(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), int(match.group(2)), path))
        return sorted(found)

    def save(self, stage_index: int, step: int, weights: Mapping[str, torch.Tensor],
             optimizer_state: Mapping[str, Any] | None, scaler_state: Mapping[str, Any] | None,
             rng: Mapping[str, torch.Tensor], stage_log: list[dict[str, Any]]) -> Path:
        """Write one checkpoint atomically (temporary folder renamed into place)."""
        final = self.dir / f"ckpt-{stage_index}-{step:06d}"
        pending = self.dir / "pending-rng"
        pending.mkdir(parents=True, exist_ok=True)
        save_safetensors(pending / f"rng-{self.process_index}.safetensors", dict(rng))
        self.barrier()
        if not self.is_main_process:
            self.barrier()
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=self.dir))
        try:
            save_safetensors(tmp / "weights.safetensors", dict(weights))
            if optimizer_state is not None:
                tensors, meta = flatten_optimizer_state(optimizer_state)
                save_safetensors(tmp / "optimizer.safetensors", tensors,
                                 {"meta": canonical_json(meta), "scaler": canonical_json(scaler_state)})
            for rng_file in pending.glob("rng-*.safetensors"):
                os.replace(rng_file, tmp / rng_file.name)
            (tmp / "state.json").write_text(canonical_json({
                "stage_index": stage_index, "step": step, "fingerprint": self.fingerprint,
                "stage_log": stage_log}))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            self.barrier()
        for _, _, old in self.checkpoints()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_latest(self) -> Checkpoint | None:
        """The newest checkpoint that loads completely, or None; broken ones are skipped."""
        for stage_index, step, path in reversed(self.checkpoints()):
            try:
                return self._load(path, stage_index, step)
            except (LthashError, OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
                log.warning("skipping unreadable checkpoint %s: %s", path, exc)
        return None

    def _load(self, path: Path, stage_index: int, step: int) -> Checkpoint:
        state = json.loads((path / "state.json").read_text())
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError("fingerprint differs")
        weights, _ = load_safetensors(path / "weights.safetensors")
        optimizer = scaler = None
        if (path / "optimizer.safetensors").exists():
            tensors, meta = load_safetensors(path / "optimizer.safetensors")
            optimizer = unflatten_optimizer_state(tensors, json.loads(meta["meta"]))
            scaler = json.loads(meta.get("scaler", "null"))
        rng_path = path / f"rng-{self.process_index}.safetensors"
        if not rng_path.exists():
            rng_path = path / "rng-0.safetensors"
        rng, _ = load_safetensors(rng_path)
        return Checkpoint(stage_index, step, weights, optimizer, scaler, rng, state.get("stage_log", []))

    def remove(self) -> None:
        """Delete the partial folder (once the final output is in place)."""
        if self.is_main_process:
            shutil.rmtree(self.dir, ignore_errors=True)

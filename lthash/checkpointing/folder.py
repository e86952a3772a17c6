"""Resumable checkpoints of one run in its ``.partial`` folder: the scheme every training stage uses.

Base training, personalisation and hash training all checkpoint through
:class:`CheckpointFolder`. A checkpoint is a folder ``ckpt-NNNNNN[-NNNNNN...]`` named by the
run's position (base: steps done; personalisation: stage index, steps done in it; hash
training: epochs done), written through :func:`lthash.io.atomic_dir` so a kill mid-write
leaves nothing under a valid name. It holds

- ``tensors.safetensors``: named groups of tensors (``<group>/<name>``: the weights, an EMA,
  the best-so-far weights) and every optimiser's state flattened by
  :func:`lthash.checkpointing.optimizer.flatten_optimizer_state` (``optimizer/<name>.*``),
- ``rng-<process>.safetensors``: each process's RNG states
  (:func:`lthash.checkpointing.rng.capture_rng`); under accelerate every process writes its own,
- ``state.json``: the position, the run's fingerprint, the optimisers' JSON parts and the
  stage's own JSON state (loss history, stage log, scaler state).

The folder holds ``fingerprint.json``, the identity of the run's inputs and settings;
:meth:`CheckpointFolder.prepare` discards a folder made by a run with another identity, so a
changed config never resumes stale state. :meth:`CheckpointFolder.latest` returns the newest
checkpoint that loads completely, skipping truncated ones.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from lthash.checkpointing.optimizer import flatten_optimizer_state, unflatten_optimizer_state
from lthash.checkpointing.rng import capture_rng, restore_rng
from lthash.errors import LthashError
from lthash.io import atomic_dir, canonical_json, load_safetensors, save_safetensors

log = logging.getLogger("lthash.checkpointing")

CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{6}(?:-\d{6})*)$")
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
FINGERPRINT_FILE = "fingerprint.json"
OPTIMIZER_GROUP = "optimizer"


def partial_folder(out: str | os.PathLike) -> Path:
    """Where the checkpoints of the run writing ``out`` live: ``<out>.partial`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def checkpoint_name(position: Sequence[int]) -> str:
    """``ckpt-`` and the position's numbers, six digits each: (2, 40) -> ``ckpt-000002-000040``."""
    if not position or any(int(p) < 0 for p in position):
        raise ValueError(f"a checkpoint position is one or more non-negative integers, not {position!r}")
    return "ckpt-" + "-".join(f"{int(p):06d}" for p in position)


@dataclass
class Checkpoint:
    """One loaded checkpoint: where the run was, its tensors, optimisers, RNG and JSON state."""

    path: Path
    position: tuple[int, ...]
    tensors: dict[str, dict[str, torch.Tensor]]
    optimizers: dict[str, dict[str, Any]]
    state: dict[str, Any]
    rng: dict[str, torch.Tensor]

    def restore_rng(self, generator: torch.Generator | None = None) -> None:
        """Put this process's global RNG states (and ``generator``'s) back as they were at save time."""
        restore_rng(self.rng, generator)


class CheckpointFolder:
    """The checkpoints of one run (identified by ``fingerprint``) in ``folder``; the newest ``keep`` are kept.

    Under accelerate every process calls :meth:`save`: each writes its RNG states, ``barrier``
    waits for all, and the main process writes the tensors and state.
    """

    def __init__(self, folder: str | os.PathLike, fingerprint: Any, keep: int = 2, process_index: int = 0,
                 is_main_process: bool = True, barrier: Callable[[], None] | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep at least one checkpoint, not {keep}")
        self.dir = Path(folder)
        self.fingerprint = json.loads(canonical_json(fingerprint))
        self.keep = keep
        self.process_index = process_index
        self.is_main_process = is_main_process
        self.barrier = barrier or (lambda: None)

    def prepare(self) -> None:
        """Create the folder, first discarding it if a run with another fingerprint made it.

        The main process does the work; every process returns once it is done (``barrier``).
        """
        if self.is_main_process:
            marker = self.dir / FINGERPRINT_FILE
            if self.dir.exists():
                try:
                    same = json.loads(marker.read_text()) == self.fingerprint
                except (OSError, json.JSONDecodeError):
                    same = False
                if not same:
                    log.info("discarding %s: it was made by a run with other inputs or settings", self.dir)
                    shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            if not marker.exists():
                marker.write_text(canonical_json(self.fingerprint))
        self.barrier()

    def checkpoints(self) -> list[tuple[tuple[int, ...], Path]]:
        """(position, folder) of every checkpoint under a valid name, oldest first."""
        if not self.dir.is_dir():
            return []
        found = []
        for path in self.dir.iterdir():
            match = CHECKPOINT_PATTERN.match(path.name)
            if match and path.is_dir():
                found.append((tuple(int(p) for p in match.group(1).split("-")), path))
        return sorted(found)

    def save(self, position: Sequence[int], tensors: Mapping[str, Mapping[str, torch.Tensor]],
             state: Mapping[str, Any], optimizers: Mapping[str, Mapping[str, Any]] | None = None,
             generator: torch.Generator | None = None) -> Path:
        """Write the checkpoint at ``position`` (replacing one there) and prune all but the newest ``keep``.

        ``tensors`` maps group names (no ``/``) to named tensors; ``optimizers`` maps names to
        ``optimizer.state_dict()``; ``state`` is JSON. This process's RNG states (and
        ``generator``'s) are captured now.
        """
        final = self.dir / checkpoint_name(position)
        pending = self.dir / "pending-rng"
        pending.mkdir(parents=True, exist_ok=True)
        save_safetensors(pending / f"rng-{self.process_index}.safetensors", capture_rng(generator))
        self.barrier()
        if not self.is_main_process:
            self.barrier()
            return final
        try:
            flat: dict[str, torch.Tensor] = {}
            for group, named in tensors.items():
                if "/" in group or group == OPTIMIZER_GROUP:
                    raise ValueError(f"invalid tensor group name {group!r}")
                flat.update({f"{group}/{name}": value.detach() for name, value in named.items()})
            optimizer_meta = {}
            for name, optimizer_state in (optimizers or {}).items():
                optimizer_tensors, optimizer_meta[name] = flatten_optimizer_state(
                    optimizer_state, prefix=f"{OPTIMIZER_GROUP}/{name}")
                flat.update(optimizer_tensors)
            with atomic_dir(final) as tmp:
                save_safetensors(tmp / TENSORS_FILE, flat)
                for rng_file in pending.glob("rng-*.safetensors"):
                    os.replace(rng_file, tmp / rng_file.name)
                (tmp / STATE_FILE).write_text(canonical_json({
                    "position": list(position), "fingerprint": self.fingerprint,
                    "optimizers": optimizer_meta, "state": dict(state)}))
        finally:
            self.barrier()
        for _, old in self.checkpoints()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def latest(self) -> Checkpoint | None:
        """The newest checkpoint of this run that loads completely, or None; broken ones are skipped."""
        for position, path in reversed(self.checkpoints()):
            try:
                return self._load(path, position)
            except (LthashError, OSError, KeyError, ValueError) as exc:
                log.warning("skipping unreadable checkpoint %s: %s", path, exc)
        return None

    def _load(self, path: Path, position: tuple[int, ...]) -> Checkpoint:
        record = json.loads((path / STATE_FILE).read_text())
        if record["fingerprint"] != self.fingerprint:
            raise ValueError("it was made by a run with other inputs or settings")
        flat, _ = load_safetensors(path / TENSORS_FILE)
        groups: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in flat.items():
            group, name = key.split("/", 1)
            if group != OPTIMIZER_GROUP:
                groups.setdefault(group, {})[name] = value
        optimizers = {name: unflatten_optimizer_state(flat, meta, prefix=f"{OPTIMIZER_GROUP}/{name}")
                      for name, meta in record["optimizers"].items()}
        rng_path = path / f"rng-{self.process_index}.safetensors"
        if not rng_path.exists():
            rng_path = path / "rng-0.safetensors"
        rng, _ = load_safetensors(rng_path)
        return Checkpoint(path, position, groups, optimizers, record["state"], rng)

    def remove(self) -> None:
        """Delete the folder (once the run's final output is in place; main process only)."""
        if self.is_main_process:
            shutil.rmtree(self.dir, ignore_errors=True)

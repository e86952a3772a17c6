"""Checkpoint and resume, one scheme for every training stage (base, personalisation, hash training).

- :mod:`.folder`: :class:`CheckpointFolder`, the ``ckpt-*`` folders of a run's ``.partial``
  folder (atomic writes, fingerprint, pruning, skipping broken checkpoints);
- :mod:`.rng`: every RNG state of a process as tensors, restored bit for bit;
- :mod:`.optimizer`: optimiser state as tensors plus JSON (no pickle).
"""

from lthash.checkpointing.folder import Checkpoint, CheckpointFolder, checkpoint_name, partial_folder
from lthash.checkpointing.optimizer import flatten_optimizer_state, unflatten_optimizer_state
from lthash.checkpointing.rng import capture_rng, restore_rng

__all__ = ["Checkpoint", "CheckpointFolder", "capture_rng", "checkpoint_name", "flatten_optimizer_state",
           "partial_folder", "restore_rng", "unflatten_optimizer_state"]

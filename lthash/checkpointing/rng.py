"""RNG states for resumable checkpoints (:class:`lthash.checkpointing.CheckpointFolder` writes them).

:func:`capture_rng` turns every random state a training loop draws from into tensors that
go into a checkpoint's safetensors file beside the weights (no pickle, no JSON side file);
:func:`restore_rng` puts them back bit for bit. Keys (after ``prefix``):

- ``generator``: the run's own ``torch.Generator`` (when the run has one),
- ``torch_cpu`` and ``torch_cuda.<i>``: torch's global CPU and per-device CUDA states,
- ``python.state`` (int64: version, then the Mersenne Twister words), ``python.gauss``
  (float64: [1, cached value] or [0, 0]),
- ``numpy.keys`` (int64, 624 words), ``numpy.position`` (int64: pos, has_gauss),
  ``numpy.gauss`` (float64: the cached Gaussian) for numpy's legacy global generator.

Optimiser state is flattened the same way by :mod:`lthash.checkpointing.optimizer`.
"""

from __future__ import annotations

import random
from typing import Mapping

import numpy as np
import torch


def capture_rng(generator: torch.Generator | None = None, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every RNG state of this process (and ``generator``'s) as tensors named ``<prefix><key>``."""
    states = {"torch_cpu": torch.get_rng_state()}
    if generator is not None:
        states["generator"] = generator.get_state()
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"torch_cuda.{index}"] = state
    version, internal, gauss = random.getstate()
    states["python.state"] = torch.tensor([version, *internal], dtype=torch.int64)
    states["python.gauss"] = torch.tensor([0.0, 0.0] if gauss is None else [1.0, gauss], dtype=torch.float64)
    _, keys, position, has_gauss, cached = np.random.get_state()
    states["numpy.keys"] = torch.from_numpy(keys.astype(np.int64))
    states["numpy.position"] = torch.tensor([int(position), int(has_gauss)], dtype=torch.int64)
    states["numpy.gauss"] = torch.tensor([float(cached)], dtype=torch.float64)
    return {prefix + key: value for key, value in states.items()}


def restore_rng(tensors: Mapping[str, torch.Tensor], generator: torch.Generator | None = None,
                prefix: str = "") -> None:
    """Put back what :func:`capture_rng` captured (``torch_cpu`` is required; the other states
    are restored when present, CUDA ones only on as many devices as were captured)."""
    states = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
    torch.set_rng_state(states["torch_cpu"])
    if generator is not None:
        generator.set_state(states["generator"])
    cuda = sorted((int(key.split(".")[1]), value) for key, value in states.items() if key.startswith("torch_cuda."))
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([value for _, value in cuda])
    if "python.state" in states:
        version, *internal = (int(word) for word in states["python.state"].tolist())
        has_gauss, gauss = states["python.gauss"].tolist()
        random.setstate((version, tuple(internal), gauss if has_gauss else None))
    if "numpy.keys" in states:
        position, has_gauss = (int(v) for v in states["numpy.position"].tolist())
        np.random.set_state(("MT19937", states["numpy.keys"].numpy().astype(np.uint32), position, has_gauss,
                             float(states["numpy.gauss"].item())))

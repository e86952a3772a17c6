"""The one RNG-state capture/restore of every resumable stage, through a real safetensors file."""

from __future__ import annotations

import random

import numpy as np
import torch

from lthash.checkpointing import capture_rng, restore_rng
from lthash.io import load_safetensors, save_safetensors


def draws(generator: torch.Generator) -> list:
    return [torch.rand(3, generator=generator).tolist(), torch.rand(3).tolist(), random.random(), random.gauss(0, 1),
            np.random.rand(3).tolist(), np.random.standard_normal()]


def test_every_state_comes_back_bit_for_bit_from_a_checkpoint_file(tmp_path):
    generator = torch.Generator().manual_seed(7)
    random.seed(1)
    np.random.seed(2)
    draws(generator)
    random.gauss(0, 1)  # leaves python's cached Gaussian set
    np.random.standard_normal()  # and numpy's
    save_safetensors(tmp_path / "rng.safetensors", {"w": torch.ones(2), **capture_rng(generator, prefix="rng.")})
    expected = draws(generator)
    other = torch.Generator().manual_seed(99)
    random.seed(5)
    np.random.seed(6)
    torch.manual_seed(8)
    tensors, _ = load_safetensors(tmp_path / "rng.safetensors")
    restore_rng(tensors, other, prefix="rng.")
    assert draws(other) == expected


def test_a_record_without_python_and_numpy_states_restores_torch_only():
    generator = torch.Generator().manual_seed(3)
    states = {key: value for key, value in capture_rng(generator).items() if key in ("generator", "torch_cpu")}
    expected = torch.rand(4, generator=generator).tolist(), torch.rand(4).tolist()
    np.random.seed(4)
    numpy_next = np.random.rand()
    np.random.seed(4)
    torch.manual_seed(0)
    restore_rng(states, generator)
    assert (torch.rand(4, generator=generator).tolist(), torch.rand(4).tolist()) == expected
    assert np.random.rand() == numpy_next

"""The one checkpoint scheme of every resumable stage: RNG capture/restore through a real safetensors
file, and :class:`CheckpointFolder` (atomic ``ckpt-*`` folders, fingerprint, pruning, broken ones skipped)
resuming a real optimisation loop to bit-identical weights."""

from __future__ import annotations

import random

import numpy as np
import torch
import pytest

from lthash.checkpointing import CheckpointFolder, capture_rng, checkpoint_name, restore_rng
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


def _model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 1))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def _train(model, optimizer, generator, steps: range, folder: CheckpointFolder | None = None) -> list[float]:
    """A few steps whose batches, dropout-like noise and python/numpy draws all come from RNGs."""
    losses = []
    for step in steps:
        x = torch.randn(16, 4, generator=generator) + torch.randn(16, 4) * random.random() + float(np.random.rand())
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if folder is not None:
            folder.save([step + 1], {"model": model.state_dict()}, {"losses": losses},
                        {"adamw": optimizer.state_dict()}, generator)
    return losses


def _seed_all(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def test_a_run_resumed_from_its_folder_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
    model, optimizer = _model()
    reference = _train(model, optimizer, _seed_all(1), range(6))
    expected = {key: value.clone() for key, value in model.state_dict().items()}

    folder = CheckpointFolder(tmp_path / "run.partial", {"run": "a", "lr": 1e-2}, keep=2)
    folder.prepare()
    model, optimizer = _model()
    _train(model, optimizer, _seed_all(1), range(3), folder)
    assert [position for position, _ in folder.checkpoints()] == [(2,), (3,)], "only the newest two are kept"

    model, optimizer = _model()
    generator = _seed_all(99)  # a fresh process draws from other states until the restore
    again = CheckpointFolder(tmp_path / "run.partial", {"lr": 1e-2, "run": "a"}, keep=2)  # key order is irrelevant
    again.prepare()
    resume = again.latest()
    assert resume.position == (3,) and resume.path.name == "ckpt-000003"
    model.load_state_dict(resume.tensors["model"])
    optimizer.load_state_dict(resume.optimizers["adamw"])
    resume.restore_rng(generator)
    losses = resume.state["losses"] + _train(model, optimizer, generator, range(3, 6))
    assert losses == reference
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_a_truncated_newest_checkpoint_is_skipped_and_another_runs_folder_discarded(tmp_path):
    model, optimizer = _model()
    folder = CheckpointFolder(tmp_path / "p", "fingerprint-1", keep=3)
    folder.prepare()
    _train(model, optimizer, _seed_all(2), range(3), folder)
    newest = tmp_path / "p" / "ckpt-000003" / "tensors.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    (tmp_path / "p" / "ckpt-000009").mkdir()  # a kill before state.json: no valid checkpoint
    assert folder.latest().position == (2,)

    other = CheckpointFolder(tmp_path / "p", "fingerprint-2")
    other.prepare()
    assert other.latest() is None and other.checkpoints() == []
    assert (tmp_path / "p" / "fingerprint.json").read_text() == '"fingerprint-2"'


def test_a_failed_write_leaves_no_checkpoint_under_a_valid_name(tmp_path):
    folder = CheckpointFolder(tmp_path / "p", "f")
    folder.prepare()
    with pytest.raises(ValueError, match="group"):
        folder.save([1], {"bad/group": {"w": torch.ones(2)}}, {})
    with pytest.raises(TypeError):
        folder.save([2], {"model": {"w": torch.ones(2)}}, {"not json": object()})
    assert folder.checkpoints() == [] and folder.latest() is None
    assert not [path for path in (tmp_path / "p").iterdir() if path.name.startswith(".")], "no temporaries left"


def test_positions_name_folders_that_sort_as_the_run_advances():
    assert checkpoint_name([2, 40]) == "ckpt-000002-000040"
    assert sorted([checkpoint_name([1, 999]), checkpoint_name([2, 0]), checkpoint_name([10, 0])]) == [
        "ckpt-000001-000999", "ckpt-000002-000000", "ckpt-000010-000000"]
    with pytest.raises(ValueError):
        checkpoint_name([])

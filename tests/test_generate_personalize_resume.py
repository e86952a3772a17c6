"""Resume after SIGKILL: a killed `lthash personalize` rerun ends with the uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lthash.generate.models import build_tiny_components, save_components
from lthash.testing.faults import kill_when_exists

PARAMS = {"generate": {"personalize": {
    "schedule": "tiny", "checkpoint_every": 2, "sample_grid": {"images": 2, "steps": 2},
    "attndreambooth": {"stages": {"embedding": {"steps": 4, "batch_size": 4},
                                  "cross_attention": {"steps": 4, "batch_size": 4},
                                  "unet": {"steps": 12, "batch_size": 4}}},
}}}


def _command(base, split, out) -> list[str]:
    return [sys.executable, "-m", "lthash.cli", "personalize", "--base", str(base), "--split", str(split),
            "--class", "4", "--generator", "attndreambooth", "--out", str(out), "--device", "cpu",
            "--threads", "1", "--params", json.dumps(PARAMS)]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return save_components(build_tiny_components(["clothing", "footwear", "accessory"], 28, 1, seed=1),
                           tmp_path_factory.mktemp("base") / "base")


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_base, small_split, tmp_path, one_torch_thread):
    from lthash.config import validate_config
    from lthash.generate.personalize.runner import personalize

    reference = tmp_path / "reference"  # uninterrupted, in this process, with the subprocesses' one thread
    personalize(tiny_base, small_split, 4, "attndreambooth", reference,
                validate_config({"dataset": {}, **PARAMS})["generate"], device="cpu")

    killed = tmp_path / "killed"
    partial = tmp_path / "killed.partial"
    target = partial / "ckpt-000002-000004"  # mid stage 3
    returncode = kill_when_exists(_command(tiny_base, small_split, killed), target, env=_env())
    assert returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not killed.exists() and target.exists()
    # a checkpoint truncated by a kill is skipped on resume
    broken = partial / "ckpt-000002-000010"
    broken.mkdir()
    (broken / "state.json").write_text("{")

    subprocess.run(_command(tiny_base, small_split, killed), check=True, env=_env(), capture_output=True)
    assert not partial.exists()
    for name in ("token_embedding.safetensors", "unet/diffusion_pytorch_model.safetensors"):
        ref, got = load_file(reference / name), load_file(killed / name)
        assert ref.keys() == got.keys()
        for key in ref:
            assert torch.equal(ref[key], got[key]), f"{name}:{key}"
    record = json.loads((killed / "concept.json").read_text())
    assert record["stages"][-1]["resumed_from_step"] >= 4

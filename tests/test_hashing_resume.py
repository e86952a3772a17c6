"""Resume after a kill: a SIGKILLed ``lthash train`` rerun ends with the same weights as an
uninterrupted run (bit-identical on CPU), and unusable checkpoints are skipped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from lthash.io import load_safetensors

PARAMS = {"method": "orthohash", "bits": 16, "seed": 3, "cnn": {"width": 8},
          "train": {"epochs": 4, "batch_size": 32, "lr": 0.002, "augment": True,
                    "validation_fraction": 0.1, "select": "best"}}


def train_cmd(split: Path, out: Path, params: dict = PARAMS) -> list[str]:
    return [sys.executable, "-m", "lthash.cli", "train", "--split", str(split), "--group", "train_balanced",
            "--out", str(out), "--params", json.dumps(params), "--device", "cpu", "--threads", "1"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_safetensors(run / "model.safetensors")[0]


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"tensor {key} differs"


def test_resume_after_sigkill_matches_uninterrupted_run(small_split, tmp_path):
    reference = tmp_path / "reference"
    uninterrupted = subprocess.Popen(train_cmd(small_split, reference), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
    killed = tmp_path / "killed"
    first_checkpoint = Path(str(killed) + ".partial") / "ckpt-000001" / "state.json"
    proc = subprocess.Popen(train_cmd(small_split, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not first_checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed: give it more epochs"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not killed.exists(), "a killed run must leave no final output"
    assert first_checkpoint.exists()

    result = subprocess.run(train_cmd(small_split, killed), capture_output=True, text=True, timeout=300)
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stderr.read()
    assert result.returncode == 0, result.stderr
    run = json.loads((killed / "run.json").read_text())
    assert run["resumed_at_epochs"] and run["resumed_at_epochs"][0] >= 1
    assert not Path(str(killed) + ".partial").exists(), "checkpoints are removed once the run is in place"
    assert_identical(weights(reference), weights(killed))
    ref_history = (reference / "history.csv").read_text().splitlines()
    new_history = (killed / "history.csv").read_text().splitlines()
    assert [line.split(",")[:4] for line in ref_history] == [line.split(",")[:4] for line in new_history]


def test_truncated_and_foreign_checkpoints_are_skipped(small_split, tmp_path):
    from lthash.workflow import stage_config
    from lthash.hashing.train import run_training

    params = stage_config("train", json.dumps({**PARAMS, "train": {"epochs": 2, "batch_size": 32}}))["hashing"]
    out = tmp_path / "run"
    partial = Path(str(out) + ".partial")
    (partial / "ckpt-000001").mkdir(parents=True)
    (partial / "ckpt-000001" / "tensors.safetensors").write_bytes(b"truncated")
    (partial / "ckpt-000001" / "state.json").write_text('{"fingerprint": "someone else"}')
    (partial / "ckpt-000002").mkdir()
    (partial / "ckpt-000002" / "state.json").write_text("{not json")
    record = run_training(small_split, "train", [], "real", None, out, params, "cpu")
    assert record["resumed_at_epochs"] == []
    assert (out / "model.safetensors").exists() and not partial.exists()

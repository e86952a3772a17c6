"""Several processes through accelerate (torchrun, gloo on CPU): gradients are averaged across
processes, so every replica ends with the same weights, and the main process writes the concept. Slow (two interpreters start torch): run with ``pytest -m slow``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from lthash.generate.models import build_tiny_components, save_components

PARAMS = {"generate": {"personalize": {
    "schedule": "tiny", "checkpoint_every": 2, "sample_grid": {"images": 2, "steps": 2},
    "attndreambooth": {"stages": {name: {"steps": 3, "batch_size": 2}
                                  for name in ("embedding", "cross_attention", "unet")}},
}}}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_cpu_processes_train_one_concept(small_split, tmp_path):
    base = save_components(build_tiny_components(["clothing", "footwear", "accessory"], 28, 1, seed=2),
                           tmp_path / "base")
    out = tmp_path / "concept"
    command = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "lthash.cli", "personalize",
               "--base", str(base), "--split", str(small_split), "--class", "7", "--generator", "attndreambooth",
               "--out", str(out), "--device", "cpu", "--threads", "1", "--params", json.dumps(PARAMS)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "concept.json").read_text())
    assert record["processes"] == 2 and record["has_unet"]
    assert [s["trains"] for s in record["stages"]] == ["embedding", "cross_attention", "unet"]
    assert not (tmp_path / "concept.partial").exists()

"""benchmarks/gpu_check.sh, the first-GPU check, in its CPU dry mode: tiny shapes, every stage a row."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_true_shapes", REPO / "benchmarks" / "bench_true_shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_mode_prints_the_table_with_every_stage(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    bench = _bench()
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| stage |"))
    rows = {line.split(" | ")[0][2:]: line for line in lines[header + 2:] if line.startswith("| ")}
    assert list(rows) == [bench.LABELS[stage] for stage in bench.GPU_CHECK_STAGES]
    assert not [line for line in rows.values() if "FAILED" in line], done.stdout
    for stage in bench.STAGES[:-1]:  # every measured stage has a step time and a fits column
        assert " yes / " in rows[bench.LABELS[stage]] or " no / " in rows[bench.LABELS[stage]], rows[stage]
    assert "rerun resumed at step 1 of 3" in rows[bench.LABELS["resume"]]
    assert "images/s" in rows[bench.LABELS["synth_pipeline"]]
    assert "skipped" in rows[bench.LABELS["multi_gpu"]]

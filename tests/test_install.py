"""A non-editable install runs a stage from any folder: the schemas (and other YAML, such as the
personalisation presets) are package data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_installed_package_runs_split_outside_the_checkout(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    build = tmp_path / "build"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(build), str(ROOT)], check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(build), "HOME": str(tmp_path), "LTHASH_THREADS": "1"}
    code = ("import lthash.config as c, sys; assert str(c.SCHEMA_DIR).startswith(sys.argv[1]), c.SCHEMA_DIR; "
            "from lthash.cli import main; sys.exit(main(sys.argv[2:]))")
    params = json.dumps({"dataset": {"name": "digits"}, "split": {"query_per_class": 5, "train_per_class": 20,
                                                                  "longtail": {"imbalance_factor": 4}}})
    result = subprocess.run([str(python), "-c", code, str(build), "split", "--out", "split.h5", "--params", params],
                            cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads((work / "split.json").read_text())
    assert summary["totals"]["query"] == 50
    bad = subprocess.run([str(python), "-c", code, str(build), "split", "--out", "x.h5",
                          "--params", json.dumps({"split": {"query_per_clas": 5}})],
                         cwd=work, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "did you mean 'query_per_class'" in bad.stderr
    for base in ("fashion-mnist-class-names", "fashion-mnist-categories"):
        assert (build / "lthash" / "models" / base / "SHIPPED.json").exists()
    assert (build / "lthash" / "generate" / "personalize" / "presets.yaml").exists(), "the personalisation presets"
    assert (build / "lthash" / "generate" / "class_words.yaml").exists(), "the words of known folder layouts"

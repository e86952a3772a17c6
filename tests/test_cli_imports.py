"""Jobs pay only for what they run: stage commands that run no model never import torch,
diffusers or transformers, and loading a tiny model skips diffusers' autoencoder zoo.

Each check is a fresh interpreter that runs real commands and reports ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from lthash.evaluate.codes import CodeSet, pack_codes, write_codes
from lthash.io import read_image_set

ROOT = Path(__file__).resolve().parent.parent
MODEL_LIBRARIES = ("torch", "diffusers", "transformers")


def loaded_after(code: str, cwd: Path) -> list[str]:
    """Module names loaded after running ``code`` in a fresh interpreter (which must succeed)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_stages_that_run_no_model_import_no_model_library(small_split, tmp_path):
    rng = np.random.default_rng(0)
    sets = {}
    for group in ("database", "query"):
        members = read_image_set(small_split, group, load_images=False)
        sets[group] = CodeSet(codes=pack_codes(rng.random((len(members), 16)) < 0.5), labels=members.labels,
                              index=members.index, bits=16)
    write_codes(tmp_path / "codes.h5", sets)
    commands = [
        ["plan", "--split-summary", str(small_split), "--out", "plan.json",
         "--params", json.dumps({"generate": {"seed": 0, "synthesis": {"pretrain_per_class": 20, "shard_size": 10}}})],
        ["resample", "--split", str(small_split), "--plan", "plan.json", "--class", "4", "--purpose", "pretrain",
         "--shard", "1", "--out", "resampled.h5", "--params", json.dumps({"generate": {"seed": 0}})],
        ["score", "--codes", "codes.h5", "--split", str(small_split), "--out", "metrics.json",
         "--params", json.dumps({"evaluate": {"topk": ["all"]}})],
        ["split", "--help"], ["report", "--help"], ["synthesize", "--help"], ["train", "--help"],
    ]
    code = "from lthash.cli import main\nimport lthash.report.report\n" + "".join(
        f"try:\n    main({command!r})\nexcept SystemExit as exit:\n    assert exit.code == 0\n"
        for command in commands)
    loaded = loaded_after(code, tmp_path)
    assert (tmp_path / "resampled.h5").exists() and json.loads((tmp_path / "metrics.json").read_text())["bits"] == 16
    assert [name for name in loaded if name.split(".")[0] in MODEL_LIBRARIES] == []


def test_a_tiny_model_loads_without_the_autoencoders(tmp_path):
    from lthash.generate.models import build_tiny_components, save_components

    TINY = {"block_out_channels": [8, 16], "norm_num_groups": 4, "text_hidden_size": 16, "text_heads": 2}
    save_components(build_tiny_components(["clothing"], 28, 1, 0, TINY), tmp_path / "tiny")
    loaded = loaded_after("from lthash.generate.models import load_components\n"
                          f"assert load_components({str(tmp_path / 'tiny')!r}).vae is None", tmp_path)
    assert "diffusers.models.unets.unet_2d_condition" in loaded
    assert not any(name.startswith("diffusers.models.autoencoders") for name in loaded)

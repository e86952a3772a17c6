"""Sharded synthesis: per-shard seeds, determinism, never redoing a complete shard, kill-restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lthash.errors import LthashError
from lthash.workflow import stage_config
from lthash.generate.plan import make_plan
from lthash.generate.synthesize import BASE_GENERATOR, shard_seed, synthesize_shard
from lthash import io
from lthash.io import read_attrs, read_image_set, write_json

PARAMS = {"seed": 3, "synthesis": {"steps": 3, "batch_size": 16}}


@pytest.fixture(scope="module")
def setup(small_split, tmp_path_factory, tiny_clothing_base):
    root, base = tmp_path_factory.mktemp("synth"), tiny_clothing_base
    names = read_attrs(small_split)["class_names"]
    plan = make_plan([60, 30, 20, 15, 12, 10, 8, 7, 6, 6], names, pretrain_per_class=40, shard_size=16)
    write_json(root / "plan.json", plan)
    return root, base, plan


def draw(setup, small_split, out, cls=2, purpose="pretrain", shard=0, params=PARAMS):
    root, base, plan = setup
    return synthesize_shard(base, None, cls, purpose, shard, plan, small_split, out,
                            stage_config("synthesize", json.dumps(params))["generate"], progress=False)


def test_shard_seeds_are_distinct():
    seeds = {shard_seed(0, g, c, p, k) for g in ("attndreambooth", "dreambooth") for c in range(10)
             for p in ("pretrain", "mix") for k in range(20)}
    assert len(seeds) == 2 * 10 * 2 * 20
    assert shard_seed(0, "a", 1, "mix", 2) != shard_seed(1, "a", 1, "mix", 2)


def test_same_seed_same_shard_other_shards_differ(setup, small_split, tmp_path):
    draw(setup, small_split, tmp_path / "a.h5")
    draw(setup, small_split, tmp_path / "b.h5")
    draw(setup, small_split, tmp_path / "c.h5", shard=1)
    draw(setup, small_split, tmp_path / "d.h5", purpose="mix")
    a, b, c, d = (read_image_set(tmp_path / f"{n}.h5", "synthetic") for n in "abcd")
    assert a.images.shape == (16, 28, 28, 1) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images) and not np.array_equal(a.images, d.images[:16])
    assert a.attrs["generator"] == BASE_GENERATOR and a.attrs["class_name"] == "Pullover"
    assert a.attrs["seed"] != c.attrs["seed"]
    np.testing.assert_array_equal(a.labels, 2)
    np.testing.assert_array_equal(c.index, np.arange(16, 32))
    last = draw(setup, small_split, tmp_path / "last.h5", shard=2)
    assert last["images"] == 40 - 32


def test_complete_shard_is_never_redone_but_a_broken_one_is(setup, small_split, tmp_path):
    out = tmp_path / "s.h5"
    draw(setup, small_split, out)
    stamp = out.stat().st_mtime_ns
    assert draw(setup, small_split, out)["skipped"] is True
    assert out.stat().st_mtime_ns == stamp
    out.write_bytes(out.read_bytes()[:1000])
    assert draw(setup, small_split, out)["skipped"] is False
    assert read_image_set(out, "synthetic").images.shape[0] == 16


def test_killed_shard_restarts_cleanly(setup, small_split, tmp_path):
    root, base, plan = setup
    reference = tmp_path / "reference.h5"
    slow = {"seed": 3, "synthesis": {"steps": 20, "batch_size": 8}}
    draw(setup, small_split, reference, cls=9, purpose="mix", shard=1, params=slow)
    out = tmp_path / "killed.h5"
    cmd = [sys.executable, "-m", "lthash.cli", "synthesize", "--model", str(base), "--class", "9",
           "--purpose", "mix", "--shard", "1", "--plan", str(root / "plan.json"), "--split", str(small_split),
           "--out", str(out), "--params", json.dumps({"generate": slow}),
           "--threads", os.environ.get("LTHASH_THREADS", "2"), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(4)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() or read_image_set(out, "synthetic").images.shape[0] == 16
    out.unlink(missing_ok=True)
    stale = tmp_path / f".{out.name}.{io._HOST}-{proc.pid}.abc123.h5"
    stale.write_bytes(b"half a shard")
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert not stale.exists()
    np.testing.assert_array_equal(read_image_set(out, "synthetic").images,
                                  read_image_set(reference, "synthetic").images)


def test_bad_shard_requests_are_named(setup, small_split, tmp_path):
    with pytest.raises(LthashError, match="shard 9"):
        draw(setup, small_split, tmp_path / "x.h5", shard=9)
    with pytest.raises(LthashError, match="class 12"):
        draw(setup, small_split, tmp_path / "x.h5", cls=12)
    with pytest.raises(LthashError, match="model folder not found"):
        root, base, plan = setup
        synthesize_shard(tmp_path / "nothing", None, 0, "pretrain", 0, plan, small_split, tmp_path / "x.h5",
                         stage_config("synthesize", "{}")["generate"], progress=False)

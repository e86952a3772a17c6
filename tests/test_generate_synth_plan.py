"""Balancing plan arithmetic and the plan CLI."""

from __future__ import annotations

import json

import pytest

from lthash.cli import main
from lthash.errors import LthashError
from lthash.generate.plan import make_plan, shard_entry, shard_list

NAMES = [f"c{i}" for i in range(5)]


def test_shard_list_covers_every_image_once():
    shards = shard_list(1030, 250)
    assert [s["count"] for s in shards] == [250, 250, 250, 250, 30]
    assert [s["start"] for s in shards] == [0, 250, 500, 750, 1000]
    assert shard_list(0, 250) == []
    with pytest.raises(LthashError, match="shard_size"):
        shard_list(10, 0)


def test_mix_reaches_the_largest_class_by_default():
    counts = [500, 153, 72, 10, 0]
    plan = make_plan(counts, NAMES, pretrain_per_class=200, shard_size=100)
    assert plan["target"] == 500
    for entry, real in zip(plan["classes"], counts):
        assert entry["real"] + entry["mix"]["images"] == 500
        assert sum(s["count"] for s in entry["mix"]["shards"]) == entry["mix"]["images"]
        assert entry["pretrain"]["images"] == 200 and len(entry["pretrain"]["shards"]) == 2
    assert plan["totals"] == {"pretrain": 1000, "mix": 0 + 347 + 428 + 490 + 500, "real": 735}
    assert plan["classes"][0]["mix"]["shards"] == []


def test_configured_target_and_classes_above_it():
    plan = make_plan([500, 100, 20], NAMES[:3], pretrain_per_class=0, mix_target=300, shard_size=1000)
    assert [c["mix"]["images"] for c in plan["classes"]] == [0, 200, 280]
    assert plan["classes_above_target"] == ["c0"]
    assert all(c["pretrain"]["shards"] == [] for c in plan["classes"])


def test_shard_entry_names_what_is_missing():
    plan = make_plan([10, 5], NAMES[:2], pretrain_per_class=4, shard_size=3)
    assert shard_entry(plan, 1, "pretrain", 1) == {"shard": 1, "start": 3, "count": 1}
    with pytest.raises(LthashError, match="purpose"):
        shard_entry(plan, 1, "finetune", 0)
    with pytest.raises(LthashError, match="shard 2"):
        shard_entry(plan, 1, "pretrain", 2)


def test_plan_cli(tmp_path):
    summary = tmp_path / "split.json"
    summary.write_text(json.dumps({"class_names": NAMES, "counts": {"train": [50, 20, 9, 5, 3]}}))
    out = tmp_path / "plan.json"
    params = json.dumps({"generate": {"synthesis": {"pretrain_per_class": 30, "shard_size": 25}}})
    assert main(["plan", "--split-summary", str(summary), "--out", str(out), "--params", params]) == 0
    plan = json.loads(out.read_text())
    assert plan["target"] == 50 and plan["totals"]["mix"] == 30 + 41 + 45 + 47
    assert [len(c["pretrain"]["shards"]) for c in plan["classes"]] == [2] * 5
    bad = json.dumps({"generate": {"synthesis": {"shard_size": 0}}})
    assert main(["plan", "--split-summary", str(summary), "--out", str(out), "--params", bad]) == 2

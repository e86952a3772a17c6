"""The balancing plan: how many synthetic images every class needs, cut into shards.

Two purposes (the seed paper's pipeline):

- ``pretrain``: a balanced synthetic set, ``pretrain_per_class`` images of every class;
- ``mix``: the long-tail training set topped up with synthetic images so that every class
  reaches the same synthetic+real total ``target`` (the largest long-tail class by default):
  class c gets ``max(0, target - real_c)`` images.

Each purpose's images of a class are cut into shards of ``shard_size`` (the last one may be
smaller); a shard is the unit one ``lthash synthesize`` job draws. Pure Python, so the
Snakefile can read plans without importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from lthash.errors import LthashError

PURPOSES = ("pretrain", "mix")


def shard_list(total: int, shard_size: int) -> list[dict[str, int]]:
    """Shards covering ``total`` images: ``[{"shard": k, "start": k*size, "count": n_k}, ...]``."""
    if shard_size < 1:
        raise LthashError("config key 'generate.synthesis.shard_size' must be at least 1")
    return [{"shard": k, "start": start, "count": min(shard_size, total - start)}
            for k, start in enumerate(range(0, total, shard_size))]


def make_plan(real_counts: Sequence[int], class_names: Sequence[str], pretrain_per_class: int = 200,
              mix_target: int | None = None, shard_size: int = 500) -> dict[str, Any]:
    """The plan for long-tail counts ``real_counts`` (one per class, in class-index order)."""
    counts = [int(c) for c in real_counts]
    if len(counts) != len(class_names):
        raise LthashError(f"{len(counts)} class counts for {len(class_names)} class names")
    if not counts:
        raise LthashError("the split has no classes")
    if any(c < 0 for c in counts):
        raise LthashError(f"negative class count in {counts}")
    target = max(counts) if mix_target is None else int(mix_target)
    short = [name for name, c in zip(class_names, counts) if c > target]
    classes = []
    for index, (name, real) in enumerate(zip(class_names, counts)):
        mix = max(0, target - real)
        classes.append({
            "index": index,
            "name": str(name),
            "real": real,
            "pretrain": {"images": pretrain_per_class, "shards": shard_list(pretrain_per_class, shard_size)},
            "mix": {"images": mix, "shards": shard_list(mix, shard_size)},
        })
    return {
        "class_names": [str(n) for n in class_names],
        "target": target,
        "pretrain_per_class": pretrain_per_class,
        "shard_size": shard_size,
        "totals": {"pretrain": pretrain_per_class * len(counts),
                   "mix": sum(c["mix"]["images"] for c in classes),
                   "real": sum(counts)},
        "classes_above_target": short,
        "classes": classes,
    }


def plan_from_params(summary: Mapping[str, Any], synthesis: Mapping[str, Any]) -> dict[str, Any]:
    """Plan from a split summary (``split.json``) and the ``generate.synthesis`` settings."""
    try:
        names = summary["class_names"]
        counts = summary["counts"]["train"]
    except (KeyError, TypeError) as exc:
        raise LthashError(f"split summary lacks {exc}: expected class_names and counts.train") from exc
    return make_plan(counts, names, pretrain_per_class=synthesis["pretrain_per_class"],
                     mix_target=synthesis["mix_target"], shard_size=synthesis["shard_size"])


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    """``split.json``, or the split HDF5 file itself (class names and train counts from its attributes)."""
    from lthash.io import read_attrs, read_json

    path = Path(path)
    if path.suffix in (".h5", ".hdf5"):
        attrs = read_attrs(path)
        return {"class_names": attrs["class_names"], "counts": {"train": read_attrs(path, "train")["counts"]}}
    return read_json(path)


def shard_entry(plan: Mapping[str, Any], class_index: int, purpose: str, shard: int) -> dict[str, int]:
    """One shard of the plan, naming what is wrong when it does not exist."""
    if purpose not in PURPOSES:
        raise LthashError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    classes = {int(c["index"]): c for c in plan["classes"]}
    if class_index not in classes:
        raise LthashError(f"class {class_index} is not in the plan (classes 0..{len(classes) - 1})")
    shards = classes[class_index][purpose]["shards"]
    if not 0 <= shard < len(shards):
        raise LthashError(f"class {class_index} has {len(shards)} {purpose} shard(s) in the plan; "
                          f"shard {shard} does not exist")
    return dict(shards[shard])


def read_plan(path: str | os.PathLike) -> dict[str, Any]:
    """The balancing plan written by ``lthash plan`` (checked to be one)."""
    from lthash.io import read_json

    plan = read_json(path)
    if not isinstance(plan, dict) or "classes" not in plan or "class_names" not in plan:
        raise LthashError(f"{path} is not a balancing plan (written by lthash plan)")
    return plan

"""Resampled shards: copies of a class's real long-tail training images where the plan puts
synthetic ones (the ``resampled`` arm, the control the method must beat).

A resampled shard is one (class, purpose, shard) of the balancing plan, in exactly the
synthetic shard format (group ``synthetic``, written by :func:`lthash.io.write_image_sets`),
so every training rule takes it like a generated one. Its images are the class's images of
the split's ``train`` group, in a permutation seeded by the shard's seed
(:func:`lthash.generate.shards.shard_seed` with generator ``resampled``), cycled so each
is used ``count // n`` or one more times; ``source_index`` records each copy's dataset index.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lthash.generate.plan import read_plan, shard_entry
from lthash.generate.shards import class_train_images, init_choice, shard_is_complete, shard_seed
from lthash.io import ImageSet, canonical_json, write_image_sets

log = logging.getLogger("lthash.resample")

GENERATOR = "resampled"


def resample_shard(split_path: str | os.PathLike, plan: Mapping[str, Any], class_index: int, purpose: str,
                   shard: int, out: str | os.PathLike, params: Mapping[str, Any]) -> dict[str, Any]:
    """Write one resampled shard of the plan to ``out``; ``params`` is the ``generate`` section (its ``seed``)."""
    entry = shard_entry(plan, class_index, purpose, shard)
    class_names = list(plan["class_names"])
    seed = shard_seed(params["seed"], GENERATOR, class_index, purpose, shard)
    expected = {"generator": GENERATOR, "class_index": class_index, "shard": shard, "purpose": purpose,
                "seed": seed, "count": entry["count"], "sampler": "copy"}
    if shard_is_complete(out, expected):
        log.info("%s is complete already: not redrawn", out)
        return {"images": entry["count"], "skipped": True}
    train = class_train_images(split_path, class_index, "nothing to resample")
    picks = init_choice(train.index, entry["count"], seed)
    write_image_sets(out, {"synthetic": ImageSet(
        images=train.images[picks],
        labels=np.full(len(picks), class_index, dtype=np.int64),
        index=entry["start"] + np.arange(len(picks), dtype=np.int64),
        attrs=dict(expected, class_name=class_names[class_index], start=entry["start"]),
        extra={"source_index": train.index[picks].astype(np.int64)},
    )}, attrs={"generator": GENERATOR, "params": canonical_json(dict(params))})
    log.info("%s: %d copies of the %d training images of class %d", out, len(picks), len(train), class_index)
    return {"images": len(picks), "skipped": False}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lthash resample``."""
    from lthash.cli import add_common_arguments

    parser = subparsers.add_parser(
        "resample", help="one shard of copies of a class's real long-tail training images",
        description="Write one (class, purpose, shard) of the balancing plan in the synthetic shard format, "
                    "holding copies of the class's images of the split's train group (a permutation seeded "
                    "by the shard's seed, cycled): the resampled arm's stand-in for synthetic images.")
    parser.add_argument("--split", required=True, help="split file (HDF5)")
    parser.add_argument("--plan", required=True, help="plan JSON (lthash plan)")
    parser.add_argument("--class", dest="class_index", type=int, required=True, help="class index")
    parser.add_argument("--purpose", required=True, choices=("pretrain", "mix"))
    parser.add_argument("--shard", type=int, required=True, help="shard number within (class, purpose)")
    parser.add_argument("--out", required=True, help="shard file to write (HDF5)")
    add_common_arguments(parser)
    parser.set_defaults(func=resample_command)


def resample_command(args: argparse.Namespace) -> None:
    resample_shard(args.split, read_plan(args.plan), args.class_index, args.purpose, args.shard, Path(args.out),
                   args.config["generate"])

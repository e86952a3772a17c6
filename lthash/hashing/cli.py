"""Subcommands of the hashing stage: ``train`` and ``encode``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lthash train`` and ``lthash encode``."""
    from lthash.cli import add_common_arguments

    train = subparsers.add_parser("train", help="train (or fit) one hash model into a run folder",
                                  description="Train one hash model (hashing.method x backbone x bits) on the "
                                              "split's real images, synthetic shards or a class-balanced mix.")
    train.add_argument("--split", required=True, help="split file (HDF5)")
    train.add_argument("--group", default="train", choices=["train", "train_balanced"],
                       help="real training group of the split (default: train, the long-tail one)")
    train.add_argument("--synthetic", nargs="*", default=[], metavar="SHARD.h5", help="synthetic shards")
    train.add_argument("--mode", default="real", choices=["real", "synthetic", "mix"])
    train.add_argument("--init", nargs="?", default=None, const=None, metavar="RUN_DIR",
                       help="start from another run's weights (given without a folder: from scratch)")
    train.add_argument("--out", required=True, metavar="RUN_DIR")
    train.add_argument("--device", default="auto")
    train.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                       help="identity of the run written into run.json (repeatable: arm, generator, synthesis)")
    add_common_arguments(train)
    train.set_defaults(func=train_command)

    encode = subparsers.add_parser("encode", help="packed codes of the database and query sets")
    encode.add_argument("--model", required=True, metavar="RUN_DIR")
    encode.add_argument("--split", required=True)
    encode.add_argument("--out", required=True, metavar="codes.h5")
    encode.add_argument("--device", default="auto")
    encode.add_argument("--batch-size", type=int, default=None,
                        help="default: LTHASH_ENCODE_BATCH_SIZE, else hashing.encode.batch_size")
    encode.add_argument("--profile", action="store_true",
                        help="also write the search's nearest-neighbour profile of the database beside the codes "
                             "file (codes.neighbours.npz; lthash search makes it on first use otherwise)")
    add_common_arguments(encode)
    encode.set_defaults(func=encode_command)


def train_command(args: argparse.Namespace) -> None:
    from lthash.evaluate.score import parse_tags
    from lthash.hashing.train import run_training
    from lthash.runtime import select_device

    run_training(args.split, args.group, args.synthetic, args.mode, args.init, args.out, args.config["hashing"],
                 select_device(args.device), args.threads, tags=parse_tags(args.tag))


def encode_command(args: argparse.Namespace) -> None:
    from lthash.hashing.encode import encode_split
    from lthash.runtime import select_device
    from lthash.workflow import runtime_setting

    batch_size = args.batch_size or int(runtime_setting(args.config, "hashing.encode.batch_size"))
    encode_split(args.model, args.split, args.out, select_device(args.device), batch_size, profile=args.profile)

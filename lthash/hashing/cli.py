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
    train.add_argument("--init", default=None, metavar="RUN_DIR", help="start from another run's weights")
    train.add_argument("--out", required=True, metavar="RUN_DIR")
    train.add_argument("--device", default="auto")
    add_common_arguments(train)
    train.set_defaults(func=_train)

    encode = subparsers.add_parser("encode", help="packed codes of the database and query sets")
    encode.add_argument("--model", required=True, metavar="RUN_DIR")
    encode.add_argument("--split", required=True)
    encode.add_argument("--out", required=True, metavar="codes.h5")
    encode.add_argument("--device", default="auto")
    encode.add_argument("--batch-size", type=int, default=None, help="default: hashing.encode.batch_size")
    add_common_arguments(encode)
    encode.set_defaults(func=_encode)


def hashing_params(text: str | None) -> dict:
    """The hashing section from --params, validated with defaults filled."""
    from lthash.config import parse_params, validate_config

    return validate_config({"dataset": {}, "hashing": parse_params(text)})["hashing"]


def _train(args: argparse.Namespace) -> None:
    from lthash.hashing.train import run_training
    from lthash.runtime import select_device

    params = hashing_params(args.params)
    run_training(args.split, args.group, args.synthetic, args.mode, args.init, args.out, params,
                 select_device(args.device), args.threads)


def _encode(args: argparse.Namespace) -> None:
    from lthash.hashing.encode import encode_split
    from lthash.runtime import select_device

    params = hashing_params(args.params)
    encode_split(args.model, args.split, args.out, select_device(args.device),
                 args.batch_size or params["encode"]["batch_size"])

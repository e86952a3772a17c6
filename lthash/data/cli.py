"""Subcommands of the data stage group: ``lthash split`` and ``lthash export-imagefolder``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the ``lthash`` parser."""
    from lthash.cli import add_common_arguments

    parser = subparsers.add_parser(
        "split", help="read a dataset and write the query/database/train split",
        description="Read the dataset named in params.dataset and write the split file (HDF5 groups "
                    "train, train_balanced, database, query), its JSON summary and a class-distribution "
                    "figure. --params carries {\"dataset\": {...}, \"split\": {...}}; defaults fill the rest.")
    parser.add_argument("--out", required=True, help="split file to write (HDF5), e.g. results/data/split.h5")
    parser.add_argument("--summary", default=None,
                        help="JSON summary to write (default: --out with suffix .json)")
    parser.add_argument("--figure", default=None,
                        help="class-distribution PNG to write (default: none)")
    add_common_arguments(parser)
    parser.set_defaults(func=split_command)

    export = subparsers.add_parser(
        "export-imagefolder", help="write a dataset as an ImageFolder tree of PNG files",
        description="Write every image of a dataset (default: scikit-learn's digits; --params "
                    "'{\"dataset\": {\"name\": \"shapes\"}}' for the procedural shapes) to OUT/<class>/<n>.png, "
                    "resized to --size, so the imagefolder reader can use it like a user's own collection.")
    export.add_argument("--out", required=True, help="a new or empty folder")
    export.add_argument("--size", type=int, default=None, help="square side in pixels (default: as stored)")
    add_common_arguments(export)
    export.set_defaults(func=export_imagefolder_command)


def export_imagefolder_command(args: argparse.Namespace) -> None:
    """Write the ImageFolder tree of the validated dataset section (digits without --params)."""
    from lthash.data.export import counts_summary, export_imagefolder

    print(counts_summary(export_imagefolder(args.config["dataset"], args.out, args.size)))


def split_command(args: argparse.Namespace) -> None:
    """Run the split stage on the validated dataset and split sections."""
    from lthash.data.split import run_split

    config = args.config
    threads = args.threads or int(os.environ.get("LTHASH_THREADS", 0)) or os.cpu_count() or 1
    summary = args.summary or str(Path(args.out).with_suffix(".json"))
    run_split(config["dataset"], config["split"], args.out, summary, args.figure, threads=threads)

"""The ``lthash`` command: one subcommand per pipeline stage.

Each stage group registers its subcommands from ``lthash/<group>/cli.py`` through
``register(subparsers)``. A subcommand handler takes the parsed arguments and returns
nothing; a :class:`~lthash.errors.LthashError` becomes a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from lthash import __version__
from lthash.errors import LthashError

STAGE_MODULES = (
    "lthash.data.cli",
    "lthash.generate.cli",
    "lthash.hashing.cli",
    "lthash.evaluate.cli",
    "lthash.report.cli",
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every stage takes: its config section as JSON, threads, verbosity."""
    parser.add_argument("--params", default=None,
                        help="the stage's config as JSON, or @file.json / @file.yaml")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for this job (default: LTHASH_THREADS or all cores)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lthash", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lthash {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="STAGE")
    subparsers.required = True
    for module_name in STAGE_MODULES:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lthash.runtime import configure_threads, setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    if hasattr(args, "threads"):
        configure_threads(args.threads)
    try:
        args.func(args)
    except LthashError as exc:
        print(f"lthash {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lthash {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``lthash`` command: one subcommand per pipeline stage.

Each stage group registers its subcommands from ``lthash/<group>/cli.py`` through
``register(subparsers)``; the handler of ``lthash <command>`` is ``<command>_command``
(``train_command``), set with ``parser.set_defaults(func=...)``. :func:`main` reads
``--params`` once (:func:`lthash.workflow.stage_config`) and hands the stage's validated config
to the handler as ``args.config``; a handler never parses ``--params`` itself. A handler takes
the parsed arguments and returns nothing; a :class:`~lthash.errors.LthashError` becomes a
one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from lthash import __version__
from lthash.errors import LthashError

STAGE_MODULES = (
    "lthash.data.cli",
    "lthash.generate.cli",
    "lthash.generate.resample",
    "lthash.hashing.cli",
    "lthash.evaluate.cli",
    "lthash.report.cli",
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every stage takes: its config section as JSON (read by :func:`main` into
    ``args.config``), threads, verbosity."""
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
    if argv is None:  # the ``lthash`` command: hand it to the workflow's warm server when one answers
        from lthash.forkserver import run_in_server

        code = run_in_server(sys.argv[1:])
        if code is not None:
            return code
    from lthash.runtime import configure_allocator, configure_threads, setup_logging

    if argv is None:
        configure_allocator()
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    if hasattr(args, "threads"):  # a setting of the arithmetic: the log says it (README, SLURM)
        logging.getLogger("lthash").info("threads: %d", configure_threads(args.threads))
    try:
        if hasattr(args, "params"):
            from lthash.workflow import stage_config

            args.config = stage_config(args.command, args.params)
        args.func(args)
    except LthashError as exc:
        print(f"lthash {args.command}: error: {exc}", file=sys.stderr)
        return _exit_now_if_a_write_failed(2, argv)
    except KeyboardInterrupt:
        print(f"lthash {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def _exit_now_if_a_write_failed(code: int, argv: Sequence[str] | None) -> int:
    """Exit at once, skipping interpreter teardown, after a failed write on the command line.

    After an HDF5 write fails (full disk, file size limit) the HDF5 library keeps the dead
    file open with dirty caches and segfaults when Python shuts it down at exit (h5py 3.16,
    HDF5 2.0): the job would end with SIGSEGV instead of exit 2. Every output is atomic, so
    skipping teardown loses nothing. Only when run as the ``lthash`` command (argv from
    sys.argv): a caller of ``main([...])`` in-process gets the code back as usual.
    """
    import lthash.io

    if argv is None and lthash.io.WRITE_FAILED:
        import logging
        import os

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The ``report`` subcommand: tables and figures of every scored run."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``lthash`` parser."""
    from lthash.cli import add_common_arguments

    parser = subparsers.add_parser(
        "report", help="Markdown report (the papers' tables) and an all-runs CSV from metrics files",
        description="Gather metrics.json files laid out as runs/<arm>/<method>-<backbone>-<bits>/.")
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json of every run")
    parser.add_argument("--quality", nargs="*", default=[], help="quality.json of every generator")
    parser.add_argument("--split-summary", required=True, help="split.json of the data stage")
    parser.add_argument("--out", required=True, help="report.md")
    parser.add_argument("--table", required=True, help="CSV of every run's metrics")
    add_common_arguments(parser)
    parser.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> None:
    from lthash.config import parse_params
    from lthash.report.report import write_report

    write_report(args.metrics, args.out, args.table, args.split_summary, args.quality, parse_params(args.params))

"""The ``report`` subcommand: tables and figures of every scored run."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``report`` to the ``lthash`` parser."""
    from lthash.cli import add_common_arguments

    parser = subparsers.add_parser(
        "report", help="Markdown report, CSV + HTML tables and figures from the scored runs",
        description="Gather metrics.json files (run identity from their tags and model/run.json) into "
                    "report.md, an all-runs CSV, the question's tables and the retrieval pictures.")
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics.json of every run")
    parser.add_argument("--codes", nargs="*", default=[],
                        help="codes.h5 of the runs (each paired with the metrics.json in its folder)")
    parser.add_argument("--split", help="split.h5 (images of the retrieval pictures)")
    parser.add_argument("--quality", nargs="*", default=[], help="quality.json of every generator")
    parser.add_argument("--knowledge", nargs="*", default=[], help="knowledge.json of every generator")
    parser.add_argument("--split-summary", required=True, help="split.json of the data stage")
    parser.add_argument("--benchmarks", help="Snakemake's benchmark folder (time per stage)")
    parser.add_argument("--server-log", help="the warm job server's log (CPU time of the jobs it ran)")
    parser.add_argument("--out", required=True, help="report.md")
    parser.add_argument("--table", required=True, help="CSV of every run's metrics")
    parser.add_argument("--tables", help="folder for <table>.csv and <table>.html of every table")
    parser.add_argument("--figures", help="folder for the retrieval pictures and per-class AP charts")
    add_common_arguments(parser)
    parser.set_defaults(func=report_command)

    table = subparsers.add_parser(
        "readme-table", help="the README's results table from a run's tables/arms.csv",
        description="Render the arms table (mean ± sd over seeds, tail, gap closed, the paired interval "
                    "against the best control) as Markdown; with --readme, rewrite the file's results block.")
    table.add_argument("--arms", required=True, help="tables/arms.csv of a finished run")
    table.add_argument("--readme", help="Markdown file whose results block to rewrite (else print the table)")
    table.set_defaults(func=readme_table_command)


def report_command(args: argparse.Namespace) -> None:
    from lthash.report.report import write_report

    write_report(args.metrics, args.out, args.table, args.split_summary, args.quality, args.config,
                 codes=args.codes, split=args.split, tables=args.tables, figures=args.figures,
                 benchmarks=args.benchmarks, server_log=args.server_log, knowledge=args.knowledge)


def readme_table_command(args: argparse.Namespace) -> None:
    from lthash.report.readme import write_readme_table

    table = write_readme_table(args.arms, args.readme)
    if args.readme is None:
        print(table)

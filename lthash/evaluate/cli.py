"""Subcommands of the evaluation stage: ``score`` and ``search``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``score`` and ``search`` to the ``lthash`` parser."""
    from lthash.cli import add_common_arguments

    score = subparsers.add_parser(
        "score", help="exact mAP@R (index-order and tie-averaged), curves, head/medium/tail breakdown",
        description="Score a codes file: metrics JSON, CSV rows (one per R x tie policy) and PNG plots.")
    score.add_argument("--codes", required=True, help="codes file (HDF5, groups database and query)")
    counts = score.add_mutually_exclusive_group(required=True)
    counts.add_argument("--split", help="split file; its train group's 'counts' give head/medium/tail classes")
    counts.add_argument("--counts", help="training class counts as a comma-separated list (instead of --split)")
    score.add_argument("--out", required=True, help="metrics JSON")
    score.add_argument("--csv", default=None, help="CSV rows for the report stage")
    score.add_argument("--plots", default=None, help="folder for pr_radius.png and precision_at_k.png")
    score.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                       help="extra column of every CSV row (repeatable), e.g. method=csq")
    add_common_arguments(score)
    score.set_defaults(func=score_command)

    search = subparsers.add_parser(
        "search", help="top-k database items by Hamming distance, for query images or codes (exact scan, or faiss)",
        description="Print the nearest database items (class, source file or dataset index, Hamming distance) of "
                    "each query as a table; optionally write them as JSON and draw a contact sheet. The database "
                    "is a run folder of the workflow (its model encodes query images) or a codes file (lthash "
                    "encode) with its model folder; no split file is needed. Every answer says how far it is: "
                    "each result's 'closer' (the share of database items whose own nearest neighbour is closer), "
                    "and a query far from everything the database holds is flagged out of distribution.")
    database = search.add_mutually_exclusive_group(required=True)
    database.add_argument("--run", help="run folder, results/runs/<arm>/<method>-<backbone>-<bits> (or one of its "
                                        "seed folders): its model and codes.h5")
    database.add_argument("--codes", help="codes file holding the database (lthash encode)")
    search.add_argument("--seed", type=int, default=None,
                        help="with --run: which seed folder (default: the first; the output says which)")
    source = search.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", nargs="+", metavar="IMAGE",
                        help="image files (PNG, JPEG, any size, grey or colour), folders or glob patterns (quote "
                             "them), or one HDF5 image-set file (its --group); encoded by the run's model "
                             "(or --model)")
    source.add_argument("--query-index", help="comma-separated rows of the codes file's query set")
    source.add_argument("--query-codes", help="codes file (its --group set) or .npy of query codes")
    search.add_argument("--model", help="with --codes and --images: the trained model folder (a run's model/) "
                                        "that encoded the codes file")
    search.add_argument("--group", default="query", help="set to read from --query-codes / an HDF5 --images "
                                                         "(default query)")
    search.add_argument("--k", type=int, default=None, help="items per query (default: params search.k, 10)")
    search.add_argument("--backend", choices=("exact", "faiss"), default=None,
                        help="exact scan (default) or faiss IndexBinaryFlat")
    search.add_argument("--device", default="cpu", help="device for encoding images (cpu, cuda, auto)")
    search.add_argument("--json", "--out", dest="json", default=None, metavar="JSON", help="write the results as JSON")
    search.add_argument("--grid", default=None, metavar="PNG",
                        help="contact sheet: each query and its top-k, framed green / red (same class or not) when "
                             "the query's class is known (its folder names a class, or it is a codes-file row), "
                             "a query flagged out of distribution framed orange")
    add_common_arguments(search)
    search.set_defaults(func=search_command)


def score_command(args: argparse.Namespace) -> None:
    from lthash.errors import LthashError
    from lthash.evaluate.metrics import set_threads
    from lthash.evaluate.score import parse_tags, run_score

    set_threads(args.threads)
    counts = None
    if args.counts is not None:
        try:
            counts = [int(c) for c in args.counts.split(",") if c.strip()]
        except ValueError as exc:
            raise LthashError(f"--counts must be comma-separated integers, got {args.counts!r}") from exc
    run_score(args.codes, args.out, args.config["evaluate"], split=args.split, counts=counts, csv_path=args.csv,
              plots=args.plots, tags=parse_tags(args.tag), threads=args.threads)


def search_command(args: argparse.Namespace) -> None:
    from lthash.evaluate.metrics import set_threads
    from lthash.evaluate.search import run_search

    set_threads(args.threads)
    settings = args.config["evaluate"]["search"]
    device = args.device
    if args.images is not None and device == "auto":
        from lthash.runtime import select_device

        device = select_device("auto")
    run_search(args.codes, args.json, k=args.k or settings["k"], backend=args.backend or settings["backend"],
               query_index=args.query_index, query_codes=args.query_codes, model=args.model, images=args.images,
               group=args.group, device=device, threads=args.threads, grid=args.grid, run=args.run, seed=args.seed,
               quantile=settings["ood_quantile"])

"""Scale benchmark: mAP@all of 5,000 queries against a 10,000,000-item database at 64 bits.

The database is generated in chunks straight into packed uint64 words (80 MB at 64 bits)
and int32 labels (40 MB); the scorer never holds a query x database matrix: each thread
keeps a chunk of distances and the relevant items of its query block. Prints the scoring
time (wall and CPU) and the peak resident memory of the process.
Run: ``python benchmarks/bench_map_scale.py`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_map_common import flip_mask, load_average, peak_rss_mb, random_centres  # noqa: E402

from lthash.evaluate.metrics import score_codes, set_threads  # noqa: E402


def make_database(rng: np.random.Generator, centres: np.ndarray, size: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed uint8 codes (size x 8) and int32 labels, built ``chunk`` items at a time."""
    words = np.empty((size, centres.shape[1]), np.uint64)
    labels = np.empty(size, np.int32)
    for start in range(0, size, chunk):
        stop = min(size, start + chunk)
        part = rng.integers(0, centres.shape[0], stop - start).astype(np.int32)
        labels[start:stop] = part
        words[start:stop] = centres[part] ^ flip_mask(rng, (stop - start, centres.shape[1]), 2)
    return words.view(np.uint8).reshape(size, -1), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--bits", type=int, default=64, choices=(64, 128, 192, 256))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--topk", default="all,1000", help="cut-offs scored in the same pass")
    args = parser.parse_args()
    set_threads(args.threads)
    topk = [None if k == "all" else int(k) for k in args.topk.split(",")]
    rng = np.random.default_rng(args.seed)
    centres = random_centres(rng, args.classes, args.bits)
    print(f"threads {args.threads}, load average at start {load_average()}, peak RSS after imports "
          f"{peak_rss_mb():.0f} MB")
    start = time.perf_counter()
    db_codes, db_labels = make_database(rng, centres, args.database, 250_000)
    q_labels = rng.integers(0, args.classes, args.queries).astype(np.int32)
    q_codes = (centres[q_labels] ^ flip_mask(rng, (args.queries, centres.shape[1]), 2)).view(np.uint8).reshape(
        args.queries, -1)
    print(f"generated {args.database:,} x {args.bits}-bit database in {time.perf_counter() - start:.1f} s "
          f"({db_codes.nbytes / 2**20:.0f} MB codes + {db_labels.nbytes / 2**20:.0f} MB labels); "
          f"peak RSS {peak_rss_mb():.0f} MB")
    score_codes(q_codes[:2], db_codes[:100_000], q_labels[:2], db_labels[:100_000], topk, bits=args.bits)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    scores = score_codes(q_codes, db_codes, q_labels, db_labels, topk, bits=args.bits)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    for k in topk:
        name = "all" if k is None else k
        print(f"mAP@{name}: index-order {scores.map(k, 'index'):.6f}  tie-averaged {scores.map(k, 'average'):.6f}")
    print(f"scored {args.queries:,} queries x {args.database:,} items ({len(topk)} cut-offs, both tie policies) "
          f"in {wall:.1f} s wall, {cpu:.1f} s CPU")
    print(f"peak RSS {peak_rss_mb():.0f} MB; load average at end {load_average()}")


if __name__ == "__main__":
    main()

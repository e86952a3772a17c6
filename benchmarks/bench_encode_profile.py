"""What the search profile costs an encode job: CPU seconds of ``lthash encode`` (the workflow's
encode job, :func:`lthash.hashing.encode.encode_split`) without ``--profile``, with it as it runs
now (codes and activation statistics from one pass), and with the profile made by a second pass
over the database after encoding (how it ran before), best of ``--repeats``, in this process.

    python benchmarks/bench_encode_profile.py --run results/runs/longtail/orthohash-cnn-64/seed0 \\
        --split results/data/split.h5 [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from bench_timer import Timer


def main() -> None:
    from lthash.evaluate.codes import read_codes
    from lthash.evaluate.neighbours import database_profile
    from lthash.hashing.encode import encode_split
    from lthash.io import read_image_set
    from lthash.runtime import configure_allocator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder holding model/")
    parser.add_argument("--split", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    configure_allocator()
    torch.set_num_threads(args.threads)
    model = Path(args.run) / "model"
    database = read_image_set(args.split, "database").images

    def plain(out: Path) -> None:
        encode_split(model, args.split, out)

    def one_pass(out: Path) -> None:
        encode_split(model, args.split, out, profile=True)

    def two_passes(out: Path) -> None:
        encode_split(model, args.split, out)
        codes = read_codes(out, "database")
        database_profile(out, codes.codes, codes.bits, model=model, pictures=lambda rows: list(database[rows]))

    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        plain(Path(tmp) / "warm.h5")  # imports, numba compilation
        for repeat in range(args.repeats):
            for name, job in (("no profile", plain), ("profile, one pass", one_pass), ("profile, two passes", two_passes)):
                out = Path(tmp) / f"{repeat}-{name.replace(' ', '_').replace(',', '')}.h5"
                with Timer() as timer:
                    job(out)
                best[name] = min(best.get(name, float("inf")), timer.cpu)
    print(f"database {len(database)} images, {args.threads} thread(s), best of {args.repeats} (CPU s)")
    for name, seconds in best.items():
        print(f"{name:<22} {seconds:7.2f} s  {seconds / best['no profile']:.2f}x no profile")
    print(f"one pass / two passes: {best['profile, one pass'] / best['profile, two passes']:.2f}x")


if __name__ == "__main__":
    main()

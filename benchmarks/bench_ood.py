"""How often ``lthash search`` flags queries out of distribution, and how soon it answers.

On a finished run folder: the split's query images (in-domain), and three kinds of foreign
images (:mod:`lthash.testing.foreign`: scikit-learn's digits, inverted query images, uniform
noise), each searched as an HDF5 image set through :func:`lthash.evaluate.search.run_search`
(the path ``lthash search --run RUN --images FILE`` takes); per kind the share flagged, and by
which statistic. Then the latency of a user's search of one PNG, each a fresh ``lthash search``
process: once with no stored profile beside the codes file (``cold``: it is made) and
``--repeats`` times with it (``warm``), the first answer as the command reports it.

    python benchmarks/bench_ood.py --run results/runs/longtail/orthohash-cnn-64 [--seed 0] [--n 500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def flag_rates(run: str, seed: int | None, n: int, folder: Path) -> dict:
    from lthash.evaluate.run_folder import resolve_run
    from lthash.evaluate.search import Database, run_search
    from lthash.io import ImageSet, read_image_set, write_image_sets
    from lthash.testing.foreign import KINDS, foreign_images

    choice = resolve_run(run, seed)
    split = Database(choice.codes)._split_file()
    if split is None:
        raise SystemExit(f"the split file that {choice.codes} names is not at hand")
    query = read_image_set(split, "query").images
    shape = query.shape[1:]
    sets = {"in-domain (query images)": (str(split), "query")}
    for kind in KINDS:
        images = foreign_images(kind, shape, min(n, len(query)) if kind == "inverted" else n, in_domain=query)
        path = folder / f"{kind}.h5"
        write_image_sets(path, {"query": ImageSet(images=images, labels=np.full(len(images), -1, np.int64),
                                                  index=np.arange(len(images)))})
        sets[kind] = (str(path), "query")
    rows, test = {}, None
    for name, (path, group) in sets.items():
        result = run_search(run=run, seed=seed, images=path, group=group, k=1, echo=lambda _text: None)
        queries = result["queries"]
        test = result["out_of_distribution"]
        rows[name] = {"n": len(queries),
                      "flagged": sum(q["out_of_distribution"] for q in queries),
                      "by_hamming": sum(q["ood"]["hamming_beyond"] for q in queries),
                      "by_activations": sum(bool(q["ood"].get("activation_beyond")) for q in queries)}
    return {"run": str(choice.folder), "test": {k: v for k, v in test.items()}, "rows": rows}


def latency(run: str, seed: int | None, repeats: int, folder: Path) -> dict:
    from PIL import Image

    from lthash.evaluate.neighbours import profile_path
    from lthash.evaluate.run_folder import resolve_run
    from lthash.evaluate.search import Database
    from lthash.io import read_image_set

    choice = resolve_run(run, seed)
    image = read_image_set(Database(choice.codes)._split_file(), "query").images[0]
    png = folder / "query.png"
    Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(png)
    command = [sys.executable, "-c", "import sys; from lthash.cli import main; sys.exit(main())", "search",
               "--run", run, "--images", str(png), "--json", str(folder / "answer.json")]
    if seed is not None:
        command += ["--seed", str(seed)]
    profile_path(choice.codes).unlink(missing_ok=True)
    times = []
    for _ in range(repeats + 1):
        subprocess.run(command, check=True, capture_output=True)
        times.append(json.loads((folder / "answer.json").read_text())["seconds"])
    return {"cold": times[0], "warm_first_answer": [t["first_answer"] for t in times[1:]],
            "warm_setup": [t["setup"] for t in times[1:]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder (results/runs/<arm>/<method>-<backbone>-<bits>)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--n", type=int, default=500, help="foreign images of each kind")
    parser.add_argument("--repeats", type=int, default=3, help="warm latency runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        timing = latency(args.run, args.seed, args.repeats, Path(tmp))
        rates = flag_rates(args.run, args.seed, args.n, Path(tmp))
    print(f"run {rates['run']}")
    test = rates["test"]
    print(f"rule: {test['rule']}; Hamming threshold {test['hamming']['threshold']:g} "
          f"({test['hamming']['reference']})")
    if "threshold" in test.get("activations", {}):
        print(f"activation threshold {test['activations']['threshold']:.4f} ({test['activations']['reference']})")
    print(f"{'queries':<26} {'n':>5} {'flagged':>8} {'share':>7} {'by Hamming':>11} {'by activations':>15}")
    for name, row in rates["rows"].items():
        print(f"{name:<26} {row['n']:>5} {row['flagged']:>8} {row['flagged'] / row['n']:>7.1%} "
              f"{row['by_hamming'] / row['n']:>11.1%} {row['by_activations'] / row['n']:>15.1%}")
    cold = timing["cold"]
    print(f"first answer of one PNG, fresh process: cold (profile made) {cold['first_answer']:.2f} s "
          f"(profile {cold['profile']:.2f} s); warm {', '.join(f'{t:.2f}' for t in timing['warm_first_answer'])} s "
          f"(setup {', '.join(f'{t:.2f}' for t in timing['warm_setup'])} s)")


if __name__ == "__main__":
    main()

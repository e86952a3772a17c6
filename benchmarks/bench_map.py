"""mAP@all benchmark: the numba scorer against numpy argsort references.

Problem (issue 3): 128,503 database x 5,000 queries, 100 classes, codes = class centre XOR
random flips (each bit flipped with probability 1/4), at 32 / 64 / 128 bits. For each code
length it times, in this one process:

* the scorer: ``score_codes`` with R = all, giving index-order and tie-averaged AP together;
* the popcount floor: a bare XOR + popcount pass over every (query, item) pair;
* the public API as a user calls it: ``lthash.evaluate.mean_average_precision`` on unpacked
  {-1,+1} float32 codes (what ``torch.sign`` gives) with class-index labels, and with one-hot
  float32 label rows (the DeepHash-pytorch convention); packing and label conversion are
  inside the timed call. These three and the scorer are timed interleaved, best of
  ``--repeats``, so a busy machine slows them alike;
* reference A, the way the published references do it: {-1,+1} float codes, distance
  ``0.5 (bits - <q, b>)``, a stable ``np.argsort`` and the cumulative-precision AP;
* reference B, a tuned numpy version: ``np.bitwise_count`` on packed words and a stable
  (radix) argsort of uint8 distances;

each reference on a subset of queries (``--dot-queries``, ``--ref-queries``) with its time
scaled to all queries (said in the output). It checks that the index-order APs agree with
both references (max difference printed, relevant counts identical), checks the
tie-averaged AP against the mean over random database shuffles, and prints the ratios, wall
and CPU time (CPU time is what to compare on a machine shared with other jobs).
Run: ``python benchmarks/bench_map.py`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_map_common import load_average, make_codes, random_centres  # noqa: E402

from lthash.evaluate import _code_kernels, mean_average_precision  # noqa: E402
from lthash.evaluate.codes import as_words, unpack_codes  # noqa: E402
from lthash.evaluate.metrics import score_codes, set_threads  # noqa: E402


def ap_from_ranking(rel: np.ndarray) -> float:
    """Mean of P@k over the ranks k of relevant items (0 if none)."""
    ranks = np.flatnonzero(rel) + 1
    return float(np.mean(np.arange(1, ranks.size + 1) / ranks)) if ranks.size else 0.0


def reference_dot(q_signs: np.ndarray, db_signs: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The references' way: {-1,+1} float codes, distance 0.5 (bits - <q, b>), stable argsort."""
    bits = q_signs.shape[1]
    aps, hits = np.zeros(len(q_signs)), np.zeros(len(q_signs), np.int64)
    for i in range(len(q_signs)):
        dist = 0.5 * (bits - db_signs @ q_signs[i])
        rel = (db_labels == q_labels[i])[np.argsort(dist, kind="stable")]
        aps[i], hits[i] = ap_from_ranking(rel), rel.sum()
    return aps, hits


def reference_packed(q_words: np.ndarray, db_words: np.ndarray, q_labels: np.ndarray, db_labels: np.ndarray,
                     shuffle: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A tuned numpy reference: ``np.bitwise_count`` on uint64 words, uint8 distances (radix
    stable argsort). With ``shuffle`` the database is permuted first (random order inside ties)."""
    aps, hits = np.zeros(len(q_words)), np.zeros(len(q_words), np.int64)
    for i in range(len(q_words)):
        dist = np.bitwise_count(q_words[i] ^ db_words).sum(axis=1, dtype=np.uint8)
        rel = db_labels == q_labels[i]
        if shuffle is not None:
            perm = shuffle.permutation(len(dist))
            dist, rel = dist[perm], rel[perm]
        rel = rel[np.argsort(dist, kind="stable")]
        aps[i], hits[i] = ap_from_ranking(rel), rel.sum()
    return aps, hits


def cpu_and_wall(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall time and the process CPU time of that call (all threads)."""
    return interleaved({"fn": fn}, repeats)["fn"]


def interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, float, object]]:
    """Best (wall, CPU, result) of each function, the functions called in turn ``repeats`` times."""
    best = {name: (float("inf"), 0.0, None) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            cpu0, wall0 = time.process_time(), time.perf_counter()
            result = fn()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            if wall < best[name][0]:
                best[name] = (wall, cpu, result)
    return best


def run(bits: int, args: argparse.Namespace) -> dict[str, float]:
    rng = np.random.default_rng(args.seed + bits)
    centres = random_centres(rng, args.classes, bits)
    db_labels = rng.integers(0, args.classes, args.database)
    q_labels = rng.integers(0, args.classes, args.queries)
    db_codes = make_codes(rng, centres, db_labels, bits)
    q_codes = make_codes(rng, centres, q_labels, bits)

    q_words, db_words = as_words(q_codes), as_words(db_codes)
    q_signs, db_signs = unpack_codes(q_codes, bits), unpack_codes(db_codes, bits)
    eye = np.eye(args.classes, dtype=np.float32)
    q_onehot, db_onehot = eye[q_labels], eye[db_labels]
    calls = {
        "score": lambda: score_codes(q_codes, db_codes, q_labels, db_labels, [None], bits=bits),
        "floor": lambda: _code_kernels.popcount_floor_kernel(q_words, db_words),
        "api_index": lambda: mean_average_precision(q_signs, db_signs, q_labels, db_labels),
        "api_onehot": lambda: mean_average_precision(q_signs, db_signs, q_onehot, db_onehot),
    }
    score_codes(q_codes[:4], db_codes, q_labels[:4], db_labels, [None], bits=bits)
    _code_kernels.popcount_floor_kernel(q_words[:4], db_words)
    mean_average_precision(q_signs[:4], db_signs, q_onehot[:4], db_onehot)
    timed = interleaved(calls, args.repeats)
    t_score, cpu_score, scores = timed["score"]
    t_floor, cpu_floor, _ = timed["floor"]
    api = {name: timed[f"api_{name}"] for name in ("index", "onehot")}
    for name, (_, _, value) in api.items():
        if value != scores.map(None, "index"):
            raise SystemExit(f"MISMATCH at {bits} bits: the API with {name} labels gives {value!r}, "
                             f"the scorer {scores.map(None, 'index')!r}")

    refs = {}
    for name, n_ref in (("dot", args.dot_queries), ("packed", args.ref_queries)):
        n_ref = min(n_ref, args.queries)
        if name == "dot":
            signs_q, signs_db = unpack_codes(q_codes[:n_ref], bits), unpack_codes(db_codes, bits)
            call = lambda: reference_dot(signs_q, signs_db, q_labels[:n_ref], db_labels)  # noqa: E731
        else:
            call = lambda: reference_packed(q_words[:n_ref], db_words, q_labels[:n_ref], db_labels)  # noqa: E731
        wall, cpu, (ref_ap, ref_hits) = cpu_and_wall(call, 1)
        refs[name] = {"n": n_ref, "wall": wall * args.queries / n_ref, "cpu": cpu * args.queries / n_ref,
                      "diff": float(np.abs(scores.ap(None, "index")[:n_ref] - ref_ap).max()),
                      "same_hits": bool(np.array_equal(scores.hits[:n_ref, 0], ref_hits))}

    shuffle_rng = np.random.default_rng(args.seed)
    n_mc = min(args.mc_queries, args.queries)
    samples = np.stack([reference_packed(q_words[:n_mc], db_words, q_labels[:n_mc], db_labels, shuffle_rng)[0]
                        for _ in range(args.mc_shuffles)])
    mc_mean = samples.mean(axis=0).mean()
    mc_se = samples.mean(axis=1).std(ddof=1) / np.sqrt(args.mc_shuffles)
    tie_avg = scores.ap(None, "average")[:n_mc].mean()

    print(f"\n== {bits} bits: {args.database:,} database x {args.queries:,} queries, {args.classes} classes ==")
    print(f"mAP@all index-order {scores.map(None, 'index'):.6f}   tie-averaged {scores.map(None, 'average'):.6f}")
    print(f"scorer (index-order + tie-averaged, one pass) {t_score:8.3f} s wall {cpu_score:8.3f} s CPU")
    print(f"popcount floor (bare XOR+popcount pass)       {t_floor:8.3f} s wall {cpu_floor:8.3f} s CPU"
          f"   scorer / floor = {t_score / t_floor:.1f}x wall, {cpu_score / cpu_floor:.1f}x CPU")
    for name, form in (("index", "class indices"), ("onehot", "one-hot float32 rows")):
        wall, cpu, _ = api[name]
        print(f"API mean_average_precision, float32 {{-1,+1}} codes, {form:20s} {wall:8.3f} s wall "
              f"{cpu:8.3f} s CPU   API / scorer = {wall / t_score:.2f}x wall, {cpu / cpu_score:.2f}x CPU; "
              f"/ floor = {wall / t_floor:.1f}x")
    labels = {"dot": "reference A: {-1,+1} float dot product + stable argsort (as DeepHash-pytorch)",
              "packed": "reference B: packed np.bitwise_count + uint8 radix stable argsort"}
    for name, ref in refs.items():
        scaled = "" if ref["n"] == args.queries else f", measured on {ref['n']} queries and scaled"
        print(f"{labels[name]} (1 thread{scaled}):")
        print(f"    {ref['wall']:8.2f} s wall {ref['cpu']:8.2f} s CPU;  scorer is {ref['wall'] / t_score:.0f}x faster "
              f"(wall), {ref['cpu'] / cpu_score:.0f}x (CPU);  max |AP diff| {ref['diff']:.1e}, "
              f"relevant counts identical: {ref['same_hits']}")
    print(f"tie-averaged mAP on {n_mc} queries {tie_avg:.6f} vs mean of {args.mc_shuffles} random shuffles "
          f"{mc_mean:.6f} (+- {mc_se:.1e} s.e.)")
    for name, ref in refs.items():
        if ref["diff"] > 1e-12 or not ref["same_hits"]:
            raise SystemExit(f"MISMATCH at {bits} bits: scorer and reference {name} disagree")
    return {"bits": bits, "score": t_score, "cpu_score": cpu_score, "floor": t_floor, "cpu_floor": cpu_floor,
            "api_index": api["index"][0], "api_onehot": api["onehot"][0], "refs": refs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--database", type=int, default=128_503)
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--ref-queries", type=int, default=500,
                        help="queries reference B runs on (its time is scaled to all queries)")
    parser.add_argument("--dot-queries", type=int, default=200,
                        help="queries reference A runs on (its time is scaled to all queries)")
    parser.add_argument("--mc-queries", type=int, default=100)
    parser.add_argument("--mc-shuffles", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    set_threads(args.threads)
    print(f"threads {args.threads}, load average at start {load_average()}")
    results = [run(bits, args) for bits in args.bits]
    print("\nbits | scorer wall s | scorer CPU s | floor wall s | scorer/floor | API index s | API/scorer | "
          "API one-hot s | API/scorer | ref A wall s | A/scorer | ref B wall s | B/scorer")
    for r in results:
        a, b = r["refs"]["dot"], r["refs"]["packed"]
        print(f"{r['bits']:4d} | {r['score']:13.3f} | {r['cpu_score']:12.3f} | {r['floor']:12.3f} | "
              f"{r['score'] / r['floor']:11.1f}x | {r['api_index']:11.3f} | {r['api_index'] / r['score']:9.2f}x | "
              f"{r['api_onehot']:13.3f} | {r['api_onehot'] / r['score']:9.2f}x | "
              f"{a['wall']:12.1f} | {a['wall'] / r['score']:7.0f}x | {b['wall']:12.1f} | "
              f"{b['wall'] / r['score']:7.0f}x")
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()

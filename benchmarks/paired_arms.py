"""Paired differences of two arms of a run's map.csv (or validation.csv), by seed, with the 95 % t-interval.

    python benchmarks/paired_arms.py results/nc_final/tables/map.csv augmented-attndreambooth-noise augmented-base-noise
"""

from __future__ import annotations

import csv
import sys

from lthash.report.uncertainty import paired


def main() -> None:
    path, first, second = sys.argv[1:4]
    rows = [r for r in csv.DictReader(open(path)) if r["R"] == "all" and r["ties"] == "index"]
    for bits in sorted({r["bits"] for r in rows}, key=int):
        values = {label: {r["seed"]: 100 * float(r["map"]) for r in rows if r["bits"] == bits and r["arm_label"] == label}
                  for label in (first, second)}
        result = paired(values[first], values[second])
        diffs = list(result.diffs.values())
        print(f"{bits} bits: {first} - {second} = {sum(diffs) / len(diffs):+.2f} points "
              f"(95 % CI {result.low:+.2f} to {result.high:+.2f}, {len(diffs)} seeds)")


if __name__ == "__main__":
    main()

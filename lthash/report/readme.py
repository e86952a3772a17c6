"""The README's results table, rendered from a run's ``tables/arms.csv`` (never typed by hand).

One row per arm and one column group per code length: mAP as mean ± sd over the seeds,
tail mAP and the share of the balanced − long-tail gap as means, and for generated arms the
paired difference against the best control with its 95 % t-interval and verdict (the arms
table's own columns, :func:`lthash.report.analysis.arms_table`). ``lthash readme-table``
prints it, or rewrites the block between :data:`START` and :data:`END` of a Markdown file.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Mapping, Sequence

from lthash.errors import LthashError
from lthash.io import atomic_path
from lthash.report.tables import MISSING, markdown_grid, pct, share, signed_pct

START = "<!-- results-table:start (lthash readme-table writes this block) -->"
END = "<!-- results-table:end -->"
REQUIRED = ("method", "backbone", "bits", "arm_label", "kind", "n_seeds", "map", "map_sd", "map_tail",
            "gap_share_all", "control", "vs_control_all", "vs_control_all_low", "vs_control_all_high", "verdict")


def read_arms(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of an arms table CSV, refusing a file that lacks its columns."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise LthashError(f"{path}: cannot read the arms table ({error.strerror})") from None
    missing = [column for column in REQUIRED if not rows or column not in rows[0]]
    if missing:
        raise LthashError(f"{path}: not an arms table of lthash report (no rows, or no column "
                          f"{', '.join(missing)})")
    return rows


def _number(text: str) -> float | None:
    return None if text in ("", None) else float(text)


def _points(text: str, signed: bool = False) -> str:
    """A fraction from the CSV in percentage points, formatted as the report's tables do."""
    return (signed_pct if signed else pct)(_number(text))


def _mean_sd(row: Mapping[str, str]) -> str:
    sd = _number(row["map_sd"])
    return _points(row["map"]) + ("" if sd is None else f" ± {pct(sd)}")


def _share(text: str) -> str:
    return share(_number(text))


def _versus(row: Mapping[str, str]) -> str:
    if not row["control"]:
        return ""
    low, high = row["vs_control_all_low"], row["vs_control_all_high"]
    interval = "" if _number(low) is None else f" [{_points(low, True)}, {_points(high, True)}]"
    return f"{_points(row['vs_control_all'], True)}{interval} {row['verdict']}"


def render(rows: Sequence[Mapping[str, str]]) -> str:
    """Markdown: one table per method x backbone, arms as rows, code lengths as column groups."""
    settings = list(dict.fromkeys((row["method"], row["backbone"]) for row in rows))
    parts = []
    for method, backbone in settings:
        mine = [row for row in rows if (row["method"], row["backbone"]) == (method, backbone)]
        bits = sorted({int(row["bits"]) for row in mine})
        labels = list(dict.fromkeys(row["arm_label"] for row in mine))
        cell = {(row["arm_label"], int(row["bits"])): row for row in mine}
        header = ["arm", "seeds"] + [f"{b} bits: mAP (mean ± sd)" for b in bits] + [
            f"tail {' / '.join(map(str, bits))}", f"gap closed {' / '.join(map(str, bits))}"] + [
            f"Δ best control, {b} bits [95 % CI]" for b in bits]
        body = []
        for label in labels:
            found = [cell.get((label, b)) for b in bits]
            first = next(row for row in found if row)
            body.append([f"{label} ({first['kind']})", first["n_seeds"]]
                        + [_mean_sd(row) if row else MISSING for row in found]
                        + [" / ".join(_points(row["map_tail"]) if row else MISSING for row in found),
                           " / ".join(_share(row["gap_share_all"]) if row else MISSING for row in found)]
                        + [_versus(row) if row else MISSING for row in found])
        controls = [f"{b} bits: {next((r['control'] for r in mine if int(r['bits']) == b and r['control']), MISSING)}"
                    for b in bits]
        readings = [reading(mine, b) for b in bits]
        parts.append(f"**{method}, {backbone}** (best control: {', '.join(controls)})\n\n"
                     + markdown_grid(header, body) + "".join(f"\n\n- {text}" for text in readings if text))
    return "\n\n".join(parts)


def reading(rows: Sequence[Mapping[str, str]], bits: int) -> str:
    """The best generated arm at ``bits`` against the best control, read from the numbers."""
    generated = [row for row in rows if int(row["bits"]) == bits and row["control"] and _number(row["map"]) is not None]
    if not generated:
        return ""
    best = max(generated, key=lambda row: float(row["map"]))
    control = next((row for row in rows if int(row["bits"]) == bits and row["arm_label"] == best["control"]), None)
    verdict = {"beats": "beats", "trails": "trails", "indistinguishable": "is indistinguishable from"}.get(
        best["verdict"], f"({best['verdict']}) against")
    seeds = best.get("vs_control_seeds") or best["n_seeds"]
    low, high = best["vs_control_all_low"], best["vs_control_all_high"]
    interval = (f"95 % CI {_points(low, True)} to {_points(high, True)}, {seeds} seeds" if _number(low) is not None
                else "one seed, no spread measured")
    text = (f"{bits} bits: the best generated arm, {best['arm_label']}, {verdict} the best control, "
            f"{best['control']}: {_points(best['vs_control_all'], True)} points mAP ({interval}); "
            f"it closes {_share(best['gap_share_all'])} of the balanced − long-tail gap")
    if control is not None:
        text += f" ({best['control']}: {_share(control['gap_share_all'])})"
    return text + "."


def tried_settings_rows(path: str | os.PathLike) -> list[str]:
    """Markdown rows ``| `setting` | arm | Δ 32 | Δ 64 |`` from a table of settings tried against
    the default (columns setting, arm_label, bits, seed, map_default, map_setting): the paired
    difference setting − default, mean and 95 % interval over seeds, in points."""
    from lthash.report.uncertainty import interval_cell, paired

    maps: dict[tuple[str, str], dict[str, tuple[dict, dict]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            setting, default = maps.setdefault((row["setting"], row["arm_label"]), {}).setdefault(row["bits"], ({}, {}))
            setting[row["seed"]] = float(row["map_setting"])
            default[row["seed"]] = float(row["map_default"])
    return [f"| `{setting}` | {arm} | " + " | ".join(interval_cell(paired(*by_bits[bits])) for bits in sorted(by_bits, key=int)) + " |"
            for (setting, arm), by_bits in maps.items()]


def rewrite_block(markdown: str, table: str, name: str = "the file") -> str:
    """``markdown`` with the text between :data:`START` and :data:`END` replaced by ``table``."""
    if markdown.count(START) != 1 or markdown.count(END) != 1 or markdown.index(START) > markdown.index(END):
        raise LthashError(f"{name}: needs one '{START}' line followed by one '{END}' line")
    head, rest = markdown.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{table}\n{END}{tail}"


def write_readme_table(arms: str | os.PathLike, readme: str | os.PathLike | None = None) -> str:
    """Render ``arms`` (an arms.csv); with ``readme``, rewrite its block atomically. Returns the table."""
    table = render(read_arms(arms))
    if readme is not None:
        path = Path(readme)
        text = rewrite_block(path.read_text(), table, str(path))
        with atomic_path(path) as tmp:
            Path(tmp).write_text(text)
    return table

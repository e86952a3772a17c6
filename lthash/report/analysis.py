"""The tables that answer the question, and the sentences that read them, from the numbers.

Per method x backbone x bits ("setting"), every arm's mAP@R and head / medium / tail mAP, and
the share of the balanced - long-tail gap it closes, overall and per group:

    share(arm, g) = (mAP_g(arm) - mAP_g(longtail)) / (mAP_g(balanced) - mAP_g(longtail))

undefined (``–``) when either reference is missing or the gap is not positive (balanced at
most ``TIE`` above long-tail). Per-class AP is also given as a fraction of the balanced arm's
AP of the same class (undefined where that AP is 0 or missing): a class-level view that a
group mean, confounded by how hard each class is, cannot give.

Two numbers tie when they differ by less than ``TIE`` (0.005 percentage points, half the
0.01 points the tables print).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from lthash.report.runs import GROUPS, RunRecord, Setting
from lthash.report.tables import Section, Table, pct, share, signed_pct

TIE = 0.5e-4
KEYS = ("map",) + tuple(f"map_{g}" for g in GROUPS)
GROUP_NAMES = {"map": "all", "map_head": "head", "map_medium": "medium", "map_tail": "tail"}


def by_setting(runs: Sequence[RunRecord]) -> dict[Setting, dict[str, RunRecord]]:
    """Runs grouped by setting, each group keyed by arm label, in table order."""
    out: dict[Setting, dict[str, RunRecord]] = {}
    for run in runs:
        out.setdefault(run.setting, {})[run.label] = run
    return out


def gap_share(value: float | None, longtail: float | None, balanced: float | None) -> float | None:
    """(value - longtail) / (balanced - longtail); None if undefined (see module doc)."""
    if value is None or longtail is None or balanced is None or balanced - longtail < TIE:
        return None
    return (value - longtail) / (balanced - longtail)


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _points(value: float) -> str:
    return f"{100 * abs(value):.2f}"


def _names(labels: Sequence[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


@dataclass
class Reading:
    """What one setting says about the method against its control (input to the sentences)."""

    setting: Setting
    gap: float | None
    best: list[str]
    best_map: float | None
    best_share: float | None
    best_tail: float | None
    resampled_map: float | None
    resampled_share: float | None
    resampled_tail: float | None

    @property
    def verdict(self) -> str:
        """beats / ties / trails (best generated arm vs resampled), or why it cannot say."""
        if not self.best:
            return "no generated arm"
        if self.resampled_map is None:
            return "no resampled arm"
        diff = self.best_map - self.resampled_map
        return "ties" if abs(diff) < TIE else "beats" if diff > 0 else "trails"

    @property
    def diff(self) -> float | None:
        if not self.best or self.resampled_map is None:
            return None
        return self.best_map - self.resampled_map


def read_setting(setting: Setting, arms: Mapping[str, RunRecord], R: Any, ties: str) -> Reading:
    """The numbers behind the sentence of one setting."""
    def value(label: str | None, key: str = "map") -> float | None:
        run = arms.get(label) if label else None
        return None if run is None else run.value(R, ties, key)

    balanced, longtail = value("balanced"), value("longtail")
    gap = None if balanced is None or longtail is None else balanced - longtail
    generated = {label: value(label) for label, run in arms.items() if run.kind == "generated"}
    generated = {label: v for label, v in generated.items() if v is not None}
    best_map = max(generated.values()) if generated else None
    best = [label for label, v in generated.items() if best_map - v < TIE] if generated else []
    resampled = "resampled" if "resampled" in arms else None
    return Reading(
        setting=setting, gap=gap, best=best, best_map=best_map,
        best_share=gap_share(best_map, longtail, balanced),
        best_tail=value(best[0], "map_tail") if best else None,
        resampled_map=value(resampled), resampled_share=gap_share(value(resampled), longtail, balanced),
        resampled_tail=value(resampled, "map_tail"))


def _share_clause(subject_share: float | None, gap: float | None, subject: str = "it") -> str:
    if gap is None:
        return "the gap share is undefined without both the balanced and the long-tail arm"
    if subject_share is None:
        return f"no gap can be closed, as balanced is not above long-tail (gap {100 * gap:+.2f} points)"
    if subject_share < 0:
        return f"{subject} widens the balanced − long-tail gap (share {share(subject_share)}: below long-tail)"
    if subject_share > 1:
        return f"{subject} passes balanced (share {share(subject_share)} of the gap)"
    return f"{subject} closes {share(subject_share)} of the balanced − long-tail gap"


def sentence(reading: Reading) -> str:
    """One setting read in words: the best generated arm against resampled, gap, tail."""
    r = reading
    if not r.best:
        text = f"{r.setting.title}: no generated arm ran, so nothing here measures what the generator adds"
        if r.resampled_map is not None:
            text += (f"; resampled reaches {pct(r.resampled_map)} mAP and "
                     + _share_clause(r.resampled_share, r.gap, subject="it"))
        return text + "."
    who = (f"the best generated arm, {r.best[0]}," if len(r.best) == 1
           else f"the generated arms {_names(r.best)} tie for best and")
    head = f"{r.setting.title}: {who} reaches {pct(r.best_map)} mAP"
    verdict = r.verdict
    if verdict == "no resampled arm":
        text = (head + "; no resampled arm ran, so the generator's share is not separated from "
                "the schedule's; " + _share_clause(r.best_share, r.gap))
        return text + "."
    if verdict == "ties":
        compare = f"and ties with resampled ({pct(r.resampled_map)})"
    else:
        compare = f"and {verdict} resampled ({pct(r.resampled_map)}) by {_points(r.diff)} points"
    text = f"{head} {compare}; {_share_clause(r.best_share, r.gap)}"
    if r.resampled_share is not None:
        text += f" (resampled: {share(r.resampled_share)})"
    if r.best_tail is not None and r.resampled_tail is not None:
        tail_diff = r.best_tail - r.resampled_tail
        tail = ("the same" if abs(tail_diff) < TIE else
                f"{_points(tail_diff)} points {'above' if tail_diff > 0 else 'below'}")
        text += (f". On tail classes it reaches {pct(r.best_tail)}, {tail} "
                 f"resampled's {pct(r.resampled_tail)}")
    return text + "."


def summary(readings: Sequence[Reading]) -> str:
    """All settings in one sentence: where the best generated arm beats, ties or trails resampled."""
    groups: dict[str, list[Reading]] = {}
    for reading in readings:
        groups.setdefault(reading.verdict, []).append(reading)
    compared = [r for r in readings if r.verdict in ("beats", "ties", "trails")]
    parts = []
    for verdict in ("beats", "ties", "trails"):
        items = groups.get(verdict, [])
        if not items:
            continue
        where = "; ".join(f"{r.setting.title}" + ("" if verdict == "ties" else f" by {_points(r.diff)} points")
                          for r in items)
        parts.append(f"{verdict} it in {len(items)} ({where})")
    text = ""
    if compared:
        text = (f"Against resampled (same schedule, copies of real images), the best generated arm "
                f"{'; '.join(parts)}, of {len(compared)} setting{'s' if len(compared) != 1 else ''} compared.")
        text += " Each arm is one training run per setting, so no run-to-run spread is measured."
        if all(r.verdict == "beats" for r in compared):
            text += " The generator adds something the schedule alone does not, in every setting compared."
        elif not any(r.verdict == "beats" for r in compared):
            text += " In no setting compared does the generator add anything over copying real images."
    missing = [(r.setting.title, r.verdict) for r in readings if r.verdict not in ("beats", "ties", "trails")]
    if missing:
        why = "; ".join(f"{title}: {verdict}" for title, verdict in missing)
        text += (" " if text else "") + f"Not compared ({why})."
    return text


def arms_table(runs: Sequence[RunRecord], R: Any, ties: str) -> tuple[Table, list[Reading]]:
    """Every arm per setting: mAP, head / medium / tail, the gap share of each; and the readings."""
    table = Table(
        name="arms", title=f"Does the synthetic data earn its cost? mAP@{R} and the gap each arm closes",
        intro=(f"mAP@{R} (%), ties ranked by {'database index' if ties == 'index' else 'expectation'}; "
               "gap closed = (arm − long-tail) / (balanced − long-tail) of the same group of query "
               "classes (head / medium / tail by long-tail training count); – where undefined "
               "(a reference arm missing, or balanced not above long-tail)."),
        csv_columns=["method", "backbone", "bits", "arm_label", "arm", "kind", "generator", "synthesis", "R",
                     "ties", *KEYS, *(f"gap_share_{GROUP_NAMES[k]}" for k in KEYS), "n_query"])
    readings = []
    for setting, arms in by_setting(runs).items():
        references = {name: {key: arms[name].value(R, ties, key) if name in arms else None for key in KEYS}
                      for name in ("balanced", "longtail")}
        rows = []
        for label, run in arms.items():
            values = {key: run.value(R, ties, key) for key in KEYS}
            shares = {key: gap_share(values[key], references["longtail"][key], references["balanced"][key])
                      for key in KEYS}
            table.records.append({
                "method": run.method, "backbone": run.backbone, "bits": run.bits, "arm_label": label,
                "arm": run.arm, "kind": run.kind, "generator": run.generator, "synthesis": run.synthesis,
                "R": R, "ties": ties, **values, **{f"gap_share_{GROUP_NAMES[k]}": shares[k] for k in KEYS},
                "n_query": run.metrics.get("n_query")})
            rows.append([label, *(pct(values[k]) for k in KEYS), *(share(shares[k]) for k in KEYS)])
        gaps = []
        for key in KEYS:
            b, lt = references["balanced"][key], references["longtail"][key]
            gaps.append(f"{GROUP_NAMES[key]} {signed_pct(None if b is None or lt is None else b - lt)}")
        reading = read_setting(setting, arms, R, ties)
        readings.append(reading)
        table.sections.append(Section(
            heading=setting.title,
            header=["arm", "mAP", "head", "medium", "tail", "gap closed", "head gap", "medium gap", "tail gap"],
            rows=rows, note=sentence(reading) + f" Balanced − long-tail gap (points): {', '.join(gaps)}."))
    return table, readings


def generator_table(runs: Sequence[RunRecord], R: Any, ties: str) -> Table:
    """What the generator adds: each synthetic-data arm minus resampled (and minus long-tail)."""
    deltas = [f"delta_resampled_{GROUP_NAMES[k]}" for k in KEYS]
    table = Table(
        name="generator_adds", title="What the generator adds: synthetic-data arms minus resampled",
        intro=(f"Differences of mAP@{R} in percentage points. Resampled runs the method's schedule "
               "(same plan, shards, pretrain and mix steps) with copies of real training images "
               "where generated images would go, so arm − resampled is what the generated images "
               "add beyond the schedule; arm − long-tail is the whole effect."),
        csv_columns=["method", "backbone", "bits", "arm_label", "arm", "kind", "generator", "synthesis", "map",
                     *deltas, "delta_longtail_all", "delta_longtail_tail"],
        empty="_no synthetic-data arm in these runs_")
    for setting, arms in by_setting(runs).items():
        control = arms.get("resampled")
        longtail = arms.get("longtail")
        rows = []
        for label, run in arms.items():
            if run.kind not in ("generated", "ablation"):
                continue

            def minus(other: RunRecord | None, key: str) -> float | None:
                a, b = run.value(R, ties, key), None if other is None else other.value(R, ties, key)
                return None if a is None or b is None else a - b

            record = {"method": run.method, "backbone": run.backbone, "bits": run.bits, "arm_label": label,
                      "arm": run.arm, "kind": run.kind, "generator": run.generator, "synthesis": run.synthesis,
                      "map": run.value(R, ties),
                      **{name: minus(control, key) for name, key in zip(deltas, KEYS)},
                      "delta_longtail_all": minus(longtail, "map"), "delta_longtail_tail": minus(longtail, "map_tail")}
            table.records.append(record)
            rows.append([label, run.generator or "–", run.synthesis or "–", pct(record["map"]),
                         *(signed_pct(record[name]) for name in deltas),
                         signed_pct(record["delta_longtail_all"]), signed_pct(record["delta_longtail_tail"])])
        if rows:
            note = ("" if control is not None else
                    "No resampled arm ran in this setting: the differences against it are undefined.")
            table.sections.append(Section(
                heading=setting.title, note=note,
                header=["arm", "generator", "synthesis", "mAP", "Δ resampled", "Δ head", "Δ medium", "Δ tail",
                        "Δ long-tail", "Δ long-tail (tail)"], rows=rows))
    return table


def class_order(run: RunRecord) -> list[int]:
    """Classes from head to tail: by long-tail training count, descending, ties by class index."""
    per_class = run.metrics.get("per_class", [])
    return sorted(range(len(per_class)), key=lambda c: (-int(per_class[c].get("train_count", 0)), c))


def per_class_table(runs: Sequence[RunRecord], R: Any, ties: str) -> Table:
    """Per-class AP of every arm, and as a fraction of the balanced arm's AP of that class."""
    table = Table(
        name="per_class", title=f"Per-class AP@{R}, as a fraction of the balanced arm's AP",
        intro=("Classes from head to tail (long-tail training count). The balanced column is AP (%); "
               "every other column is AP(arm, class) / AP(balanced, class), so a class that is hard "
               "for every arm does not pull a group down; the last rows average those fractions "
               "over the classes of each group."),
        csv_columns=["method", "backbone", "bits", "class", "name", "group", "train_count", "arm_label", "ap",
                     "balanced_ap", "ap_over_balanced"])
    for setting, arms in by_setting(runs).items():
        first = next(iter(arms.values()))
        per_class = first.metrics.get("per_class", [])
        if not per_class:
            continue
        balanced = arms.get("balanced")
        reference = balanced.class_ap(R, ties) if balanced else [None] * len(per_class)
        others = [label for label in arms if label != "balanced"]
        ratios: dict[str, list[float | None]] = {}
        rows = []
        for label, run in arms.items():
            aps = run.class_ap(R, ties)
            ratios[label] = [ratio(aps[c], reference[c]) for c in range(len(per_class))]
            for c, entry in enumerate(per_class):
                table.records.append({
                    "method": setting.method, "backbone": setting.backbone, "bits": setting.bits, "class": c,
                    "name": entry.get("name", str(c)), "group": entry.get("group"),
                    "train_count": entry.get("train_count"), "arm_label": label, "ap": aps[c],
                    "balanced_ap": reference[c], "ap_over_balanced": ratios[label][c]})
        order = class_order(first)
        show = (lambda label, c: share(ratios[label][c])) if balanced else (
            lambda label, c: pct(arms[label].class_ap(R, ties)[c]))
        for c in order:
            entry = per_class[c]
            rows.append([entry.get("name", str(c)), entry.get("group", "–"), entry.get("train_count", "–"),
                         pct(reference[c]), *(show(label, c) for label in others)])
        if balanced:
            for group in GROUPS:
                members = [c for c in order if per_class[c].get("group") == group]
                if members:
                    rows.append([f"mean over {group} classes", group, "", "",
                                 *(share(_mean([ratios[label][c] for c in members])) for label in others)])
        note = "" if balanced else "No balanced arm ran in this setting: AP (%) shown, no fractions."
        table.sections.append(Section(heading=setting.title, note=note, rows=rows,
                                      header=["class", "group", "long-tail train images", "balanced AP",
                                              *others]))
    return table


def validation_entry(metrics: Mapping[str, Any], R: Any, ties: str) -> dict[str, Any] | None:
    """``metrics["validation"]`` (the score stage's model-selection section) as one row at cut-off
    ``R``, else its R = all, else its first cut-off; None when absent or holding no mAP.

    The score stage writes ``{"ties", "R": [...], "map": {R: x}, "map_head": {R: x}, ...}``
    (values keyed by R as text); a section of scalars (``{"map": x, ...}``) is read as it is.
    """
    validation = metrics.get("validation")
    if not isinstance(validation, Mapping):
        return None
    by_r = validation.get("map")
    cut = None
    if isinstance(by_r, Mapping):
        if not by_r:
            return None
        cut = next((key for key in (str(R), "all") if key in by_r), next(iter(by_r)))
    entry: dict[str, Any] = {}
    for key in KEYS:
        value = validation.get(key)
        value = value.get(cut) if isinstance(value, Mapping) else value
        if isinstance(value, (int, float)):
            entry[key] = float(value)
    if "map" not in entry:
        return None
    entry["R"] = cut if cut is not None else validation.get("R")
    entry["ties"] = validation.get("ties")
    entry["n_query"], entry["n_database"] = validation.get("n_query"), validation.get("n_database")
    return entry


def validation_table(runs: Sequence[RunRecord], R: Any, ties: str) -> Table:
    """Validation mAP (model selection on validation images against the database), its own table."""
    table = Table(
        name="validation", title="Validation mAP (for model selection, not a test result)",
        intro=("mAP of the validation images (a balanced group drawn apart from every other split "
               "group) against the database, recorded by the score stage for choosing settings; "
               "every test figure in the other tables is on the query set."),
        csv_columns=["method", "backbone", "bits", "arm_label", "R", "ties", *KEYS, "n_query", "n_database"],
        empty="_no run recorded a validation mAP_")
    for setting, arms in by_setting(runs).items():
        rows = []
        for label, run in arms.items():
            entry = validation_entry(run.metrics, R, ties)
            if entry is None:
                continue
            table.records.append({"method": run.method, "backbone": run.backbone, "bits": run.bits,
                                  "arm_label": label, **entry})
            rows.append([label, entry.get("R", "–"), entry.get("ties", "–"), *(pct(entry.get(k)) for k in KEYS),
                         entry.get("n_query") if entry.get("n_query") is not None else "–"])
        if rows:
            table.sections.append(Section(heading=setting.title, rows=rows,
                                          header=["arm", "R", "ties", "validation mAP", "head", "medium", "tail",
                                                  "validation queries"]))
    return table

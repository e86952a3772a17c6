"""The tables that answer the question, and the sentences that read them, from the numbers.

Every arm is trained once per hash-training seed; per method x backbone x bits ("setting"),
each arm's mAP@R and head / medium / tail mAP are given as means (mAP with its sample sd) over
its seeds, and the share of the balanced - long-tail gap it closes, per seed s and group g:

    share_s(arm, g) = (mAP_g,s(arm) - mAP_g,s(longtail)) / (mAP_g,s(balanced) - mAP_g,s(longtail))

undefined when either reference lacks seed s or the gap is not positive (balanced at most
``TIE`` above long-tail), and averaged over the seeds where it is defined. The question is
read against the best control (the ``control`` arm of highest mean mAP): every generated arm
minus it, paired by seed, with a 95 % t-interval (:mod:`lthash.report.uncertainty`). Per-class
AP is also given as a fraction of the balanced arm's AP of the same class (means over seeds;
undefined where that AP is 0 or missing): a class-level view that a group mean, confounded by
how hard each class is, cannot give."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from lthash.report.runs import GROUPS, ArmRuns, RunRecord, Setting, by_setting
from lthash.report.tables import MISSING, Section, Table, pct, share, signed_pct
from lthash.report.uncertainty import (VERDICTS, Paired, Seed, Spread, difference_text, interval_cell, paired,
                                       seeds_text, spread, spread_text)

#: balanced must be this far above long-tail (0.005 points, half the 0.01 the tables print) for a gap share
TIE = 0.5e-4
KEYS = ("map",) + tuple(f"map_{g}" for g in GROUPS)
GROUP_NAMES = {"map": "all", "map_head": "head", "map_medium": "medium", "map_tail": "tail"}


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


#: what a generated arm is compared on against the best control: the four mAP groups and the gap share
COMPARED = {**GROUP_NAMES, "gap_share": "gap"}


def seed_shares(arm: ArmRuns, arms: Mapping[str, ArmRuns], R: Any, ties: str,
                key: str = "map") -> dict[Seed, float | None]:
    """Per seed: (arm_s - longtail_s) / (balanced_s - longtail_s) of group ``key`` (None where undefined)."""
    def at(label: str) -> dict[Seed, float | None]:
        return arms[label].values(R, ties, key) if label in arms else {}

    longtail, balanced = at("longtail"), at("balanced")
    return {seed: gap_share(value, longtail.get(seed), balanced.get(seed))
            for seed, value in arm.values(R, ties, key).items()}


def arm_values(arm: ArmRuns, arms: Mapping[str, ArmRuns], R: Any, ties: str, key: str) -> dict[Seed, float | None]:
    """Seed -> the arm's number ``key``: a mAP group of :data:`KEYS`, or ``gap_share`` (overall)."""
    return seed_shares(arm, arms, R, ties) if key == "gap_share" else arm.values(R, ties, key)


def best_control(arms: Mapping[str, ArmRuns], R: Any, ties: str) -> str | None:
    """The arm of kind ``control`` with the highest mean mAP (first in table order on a tie), or None."""
    means = {label: arm.value(R, ties) for label, arm in arms.items() if arm.kind == "control"}
    means = {label: value for label, value in means.items() if value is not None}
    return max(means, key=lambda label: means[label]) if means else None


def compare(arm: ArmRuns, other: ArmRuns, arms: Mapping[str, ArmRuns], R: Any, ties: str) -> dict[str, Paired]:
    """arm - other paired by seed for every key of :data:`COMPARED`."""
    return {key: paired(arm_values(arm, arms, R, ties, key), arm_values(other, arms, R, ties, key))
            for key in COMPARED}


@dataclass
class Reading:
    """What one setting says about its best generated arm against its best control (input to the sentences)."""

    setting: Setting
    gap: float | None
    control: str | None
    control_map: float | None
    best: str | None
    best_map: Spread | None
    best_share: float | None
    versus: dict[str, Paired]

    @property
    def verdict(self) -> str:
        """One of :data:`lthash.report.uncertainty.VERDICTS` (mAP, best generated arm vs best control),
        or why there is none."""
        if self.best is None:
            return "no generated arm"
        if self.control is None:
            return "no control arm"
        return self.versus["map"].verdict

    @property
    def diff(self) -> Paired | None:
        return self.versus.get("map")


def read_setting(setting: Setting, arms: Mapping[str, ArmRuns], R: Any, ties: str) -> Reading:
    """The numbers behind the sentence of one setting."""
    balanced, longtail = (arms[label].value(R, ties) if label in arms else None for label in ("balanced", "longtail"))
    gap = None if balanced is None or longtail is None else balanced - longtail
    generated = {label: arm.value(R, ties) for label, arm in arms.items() if arm.kind == "generated"}
    generated = {label: value for label, value in generated.items() if value is not None}
    best = max(generated, key=lambda label: generated[label]) if generated else None
    control = best_control(arms, R, ties)
    versus = compare(arms[best], arms[control], arms, R, ties) if best and control else {}
    return Reading(setting=setting, gap=gap, control=control,
                   control_map=arms[control].value(R, ties) if control else None, best=best,
                   best_map=spread(arms[best].values(R, ties)) if best else None,
                   best_share=spread(seed_shares(arms[best], arms, R, ties)).mean if best else None,
                   versus=versus)


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


def versus_clause(p: Paired, control: str) -> str:
    """``beats the best control, X, by +3.05 points (95 % CI +1.80 to +4.30, 3 seeds)`` and the other verdicts."""
    verdict = p.verdict
    if verdict == "beats":
        return f"beats the best control, {control}, by {difference_text(p)}"
    if verdict == "trails":
        return f"trails the best control, {control}, by {difference_text(p)}"
    if verdict == "indistinguishable":
        return f"is indistinguishable from the best control, {control}: {difference_text(p)}"
    if verdict == "one seed":
        return f"differs from the best control, {control}, by {difference_text(p)}"
    return f"has no seed in common with the best control, {control} ({difference_text(p)})"


def sentence(reading: Reading) -> str:
    """One setting read in words: the best generated arm against the best control, with its interval."""
    r = reading
    if r.best is None:
        text = f"{r.setting.title}: no generated arm ran, so nothing here measures what the generator adds"
        if r.control is not None:
            text += f"; the best control, {r.control}, reaches {pct(r.control_map)} mAP"
        return text + "."
    head = (f"{r.setting.title}: the best generated arm, {r.best}, reaches {spread_text(r.best_map)} mAP "
            f"(mean{' ± sd' if r.best_map.sd is not None else ''} of {seeds_text(r.best_map.n)})")
    if r.control is None:
        return (head + "; no control arm ran, so nothing separates the generated data from what a long-tail "
                "user can do without it; " + _share_clause(r.best_share, r.gap) + ".")
    text = (f"{head} and {versus_clause(r.versus['map'], r.control)}, whose mean is {pct(r.control_map)}; "
            f"{_share_clause(r.best_share, r.gap)}")
    tail = r.versus["map_tail"]
    if tail.n:
        text += f". On tail classes the difference is {difference_text(tail)}"
    return text + "."


_SUMMARY_VERBS = {"beats": "beats it", "indistinguishable": "is indistinguishable from it", "trails": "trails it",
                  "one seed": "was run on one seed only (no spread measured, so no verdict)",
                  "no shared seed": "shares no seed with it"}


def summary(readings: Sequence[Reading]) -> str:
    """All settings in one sentence: where the best generated arm beats, is indistinguishable from or
    trails the best control, each with its mean difference, 95 % interval and number of seeds."""
    groups: dict[str, list[Reading]] = {}
    for reading in readings:
        groups.setdefault(reading.verdict, []).append(reading)
    compared = [r for r in readings if r.verdict in VERDICTS]
    parts = []
    for verdict in VERDICTS:
        items = groups.get(verdict, [])
        if items:
            where = "; ".join(f"{r.setting.title}: {r.best} against {r.control}, {difference_text(r.diff)}"
                              for r in items)
            parts.append(f"{_SUMMARY_VERBS[verdict]} in {len(items)} ({where})")
    text = ""
    if compared:
        text = ("Against the best control of each setting (the control arm of highest mean mAP, paired by "
                f"seed), the best generated arm {'; '.join(parts)}, of {len(compared)} "
                f"setting{'s' if len(compared) != 1 else ''} compared.")
        decided = [r for r in compared if r.verdict in ("beats", "indistinguishable", "trails")]
        if decided and all(r.verdict == "beats" for r in decided):
            text += (" The generated data beats the best control beyond its seed-to-seed spread in every "
                     f"setting with more than one seed{'' if len(decided) == len(compared) else ' in common'}.")
        elif decided and not any(r.verdict == "beats" for r in decided):
            text += " In no setting does the generated data beat the best control beyond its seed-to-seed spread."
    missing = [(r.setting.title, r.verdict) for r in readings if r.verdict not in VERDICTS]
    if missing:
        why = "; ".join(f"{title}: {verdict}" for title, verdict in missing)
        text += (" " if text else "") + f"Not compared ({why})."
    return text


def arms_table(runs: Sequence[RunRecord], R: Any, ties: str) -> tuple[Table, list[Reading]]:
    """Every arm per setting: mean ± sd of mAP over seeds, head / medium / tail and gap share means,
    and for generated arms the paired difference against the best control; and the readings."""
    versus_columns = [f"vs_control_{COMPARED[k]}{end}" for k in COMPARED for end in ("", "_low", "_high")]
    table = Table(
        name="arms", title=f"Does the synthetic data earn its cost? mAP@{R} and the gap each arm closes",
        intro=(f"mAP@{R} (%), ties ranked by {'database index' if ties == 'index' else 'expectation'}; "
               "mean ± sample sd over the hash-training seeds (seeds: how many); head / medium / tail "
               "and the gap shares are means over seeds; gap closed = (arm − long-tail) / (balanced − "
               "long-tail) of the same seed and group of query classes (head / medium / tail by long-tail "
               "training count), – where undefined. Δ best control: a generated arm minus the control arm "
               "of highest mean mAP, paired by seed, with the 95 % Student t-interval; the verdict is "
               "'beats' only when the interval lies above zero."),
        csv_columns=["method", "backbone", "bits", "arm_label", "arm", "kind", "generator", "synthesis", "R",
                     "ties", "seeds", "n_seeds", *KEYS, *(f"{k}_sd" for k in KEYS),
                     *(f"gap_share_{GROUP_NAMES[k]}" for k in KEYS), "control", *versus_columns,
                     "vs_control_seeds", "verdict", "n_query"])
    readings = []
    for setting, arms in by_setting(runs).items():
        reading = read_setting(setting, arms, R, ties)
        readings.append(reading)
        rows = []
        for label, arm in arms.items():
            values = {key: spread(arm.values(R, ties, key)) for key in KEYS}
            shares = {key: spread(seed_shares(arm, arms, R, ties, key)).mean for key in KEYS}
            versus = (compare(arm, arms[reading.control], arms, R, ties)
                      if arm.kind == "generated" and reading.control else {})
            record = {
                "method": setting.method, "backbone": setting.backbone, "bits": setting.bits, "arm_label": label,
                "arm": arm.arm, "kind": arm.kind, "generator": arm.generator, "synthesis": arm.synthesis,
                "R": R, "ties": ties, "seeds": " ".join("" if s is None else str(s) for s in arm.seeds),
                "n_seeds": len(arm.seeds), **{k: values[k].mean for k in KEYS},
                **{f"{k}_sd": values[k].sd for k in KEYS},
                **{f"gap_share_{GROUP_NAMES[k]}": shares[k] for k in KEYS},
                "control": reading.control if versus else None, "n_query": arm.metrics.get("n_query")}
            if versus:
                for key, name in COMPARED.items():
                    p = versus[key]
                    record.update({f"vs_control_{name}": p.mean, f"vs_control_{name}_low": p.low,
                                   f"vs_control_{name}_high": p.high})
                record["vs_control_seeds"], record["verdict"] = versus["map"].n, versus["map"].verdict
            table.records.append(record)
            rows.append([label, arm.kind, len(arm.seeds), spread_text(values["map"]),
                         *(pct(values[k].mean) for k in KEYS[1:]), share(shares["map"]),
                         share(shares["map_tail"]),
                         interval_cell(versus["map"]) if versus else "",
                         interval_cell(versus["map_tail"]) if versus else "",
                         versus["map"].verdict if versus else ""])
        gaps = []
        for key in KEYS:
            b, lt = (arms[name].value(R, ties, key) if name in arms else None for name in ("balanced", "longtail"))
            gaps.append(f"{GROUP_NAMES[key]} {signed_pct(None if b is None or lt is None else b - lt)}")
        table.sections.append(Section(
            heading=setting.title,
            header=["arm", "kind", "seeds", "mAP (mean ± sd)", "head", "medium", "tail", "gap closed", "tail gap",
                    "Δ best control (95 % CI)", "Δ tail (95 % CI)", "verdict"],
            rows=rows, note=sentence(reading) + f" Balanced − long-tail gap of the means (points): {', '.join(gaps)}."))
    return table, readings


def generator_table(runs: Sequence[RunRecord], R: Any, ties: str) -> Table:
    """What the generator adds: each synthetic-data arm minus resampled (and minus long-tail), paired by seed."""
    deltas = [f"delta_resampled_{GROUP_NAMES[k]}" for k in KEYS]
    table = Table(
        name="generator_adds", title="What the generator adds: synthetic-data arms minus resampled",
        intro=(f"Differences of mAP@{R} in percentage points, each the mean over seeds of the same-seed "
               "difference (seeds one arm lacks left out), with the 95 % t-interval of the overall one. "
               "Resampled runs the method's schedule (same plan, shards, pretrain and mix steps) with "
               "copies of real training images where generated images would go, so arm − resampled is "
               "what the generated images add beyond the schedule; arm − long-tail is the whole effect."),
        csv_columns=["method", "backbone", "bits", "arm_label", "arm", "kind", "generator", "synthesis", "map",
                     "n_seeds", *deltas, "delta_resampled_all_low", "delta_resampled_all_high", "seeds_resampled",
                     "delta_longtail_all", "delta_longtail_tail", "seeds_longtail"],
        empty="_no synthetic-data arm in these runs_")
    for setting, arms in by_setting(runs).items():
        control, longtail = arms.get("resampled"), arms.get("longtail")
        rows = []
        for label, arm in arms.items():
            if arm.kind not in ("generated", "ablation"):
                continue

            def minus(other: ArmRuns | None, key: str) -> Paired | None:
                return None if other is None else paired(arm.values(R, ties, key), other.values(R, ties, key))

            to_control = {key: minus(control, key) for key in KEYS}
            to_longtail = {key: minus(longtail, key) for key in ("map", "map_tail")}
            record = {"method": setting.method, "backbone": setting.backbone, "bits": setting.bits,
                      "arm_label": label, "arm": arm.arm, "kind": arm.kind, "generator": arm.generator,
                      "synthesis": arm.synthesis, "map": arm.value(R, ties), "n_seeds": len(arm.seeds),
                      **{name: p.mean if p else None for name, p in zip(deltas, to_control.values())},
                      "delta_resampled_all_low": to_control["map"].low if control else None,
                      "delta_resampled_all_high": to_control["map"].high if control else None,
                      "seeds_resampled": to_control["map"].n if control else None,
                      "delta_longtail_all": to_longtail["map"].mean if longtail else None,
                      "delta_longtail_tail": to_longtail["map_tail"].mean if longtail else None,
                      "seeds_longtail": to_longtail["map"].n if longtail else None}
            table.records.append(record)
            rows.append([label, arm.generator or "–", arm.synthesis or "–", pct(record["map"]),
                         interval_cell(to_control["map"]) if control else MISSING,
                         *(signed_pct(record[name]) for name in deltas[1:]),
                         signed_pct(record["delta_longtail_all"]), signed_pct(record["delta_longtail_tail"])])
        if rows:
            note = ("" if control is not None else
                    "No resampled arm ran in this setting: the differences against it are undefined.")
            table.sections.append(Section(
                heading=setting.title, note=note,
                header=["arm", "generator", "synthesis", "mAP", "Δ resampled (95 % CI)", "Δ head", "Δ medium",
                        "Δ tail", "Δ long-tail", "Δ long-tail (tail)"], rows=rows))
    return table

def class_order(run: RunRecord | ArmRuns) -> list[int]:
    """Classes from head to tail: by long-tail training count, descending, ties by class index."""
    per_class = run.metrics.get("per_class", [])
    return sorted(range(len(per_class)), key=lambda c: (-int(per_class[c].get("train_count", 0)), c))


def per_class_table(runs: Sequence[RunRecord], R: Any, ties: str) -> Table:
    """Per-class AP of every arm, and as a fraction of the balanced arm's AP of that class: means over
    seeds shown, every seed in the CSV."""
    table = Table(
        name="per_class", title=f"Per-class AP@{R}, as a fraction of the balanced arm's AP",
        intro=("Classes from head to tail (long-tail training count). AP is the mean over seeds (the CSV "
               "has every seed). The balanced column is AP (%); "
               "every other column is AP(arm, class) / AP(balanced, class), so a class that is hard "
               "for every arm does not pull a group down; the last rows average those fractions "
               "over the classes of each group."),
        csv_columns=["method", "backbone", "bits", "seed", "class", "name", "group", "train_count", "arm_label",
                     "ap", "balanced_ap", "ap_over_balanced"])
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
        for label, arm in arms.items():
            aps = arm.class_ap(R, ties)
            ratios[label] = [ratio(aps[c], reference[c]) for c in range(len(per_class))]
            for seed, run in arm.runs.items():
                seed_aps = run.class_ap(R, ties)
                seed_reference = (balanced.runs[seed].class_ap(R, ties) if balanced and seed in balanced.runs
                                  else [None] * len(per_class))
                for c, entry in enumerate(per_class):
                    table.records.append({
                        "method": setting.method, "backbone": setting.backbone, "bits": setting.bits, "seed": seed,
                        "class": c, "name": entry.get("name", str(c)), "group": entry.get("group"),
                        "train_count": entry.get("train_count"), "arm_label": label, "ap": seed_aps[c],
                        "balanced_ap": seed_reference[c], "ap_over_balanced": ratio(seed_aps[c], seed_reference[c])})
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
               "every test figure in the other tables is on the query set. Means over the seeds that "
               "recorded one (the CSV has every seed)."),
        csv_columns=["method", "backbone", "bits", "seed", "arm_label", "R", "ties", *KEYS, "n_query",
                     "n_database"],
        empty="_no run recorded a validation mAP_")
    for setting, arms in by_setting(runs).items():
        rows = []
        for label, arm in arms.items():
            entries = {seed: validation_entry(run.metrics, R, ties) for seed, run in arm.runs.items()}
            entries = {seed: entry for seed, entry in entries.items() if entry is not None}
            if not entries:
                continue
            for seed, entry in entries.items():
                table.records.append({"method": setting.method, "backbone": setting.backbone, "bits": setting.bits,
                                      "seed": seed, "arm_label": label, **entry})
            first = next(iter(entries.values()))
            means = {k: spread({seed: entry.get(k) for seed, entry in entries.items()}) for k in KEYS}
            rows.append([label, len(entries), first.get("R", "–"), first.get("ties", "–"), spread_text(means["map"]),
                         *(pct(means[k].mean) for k in KEYS[1:]),
                         first.get("n_query") if first.get("n_query") is not None else "–"])
        if rows:
            table.sections.append(Section(heading=setting.title, rows=rows,
                                          header=["arm", "seeds", "R", "ties", "validation mAP (mean ± sd)", "head",
                                                  "medium", "tail", "validation queries"]))
    return table

"""What each generator knows of the classes: held-out denoising accuracy and sample fidelity by group.

One row per generator and super-category group (and one for all classes): the group's chance
level 1/|group|, the held-out denoising accuracy within the group (``lthash knowledge``, before
any synthesis) and the quality judge's class fidelity of each synthesis mode's samples
(``lthash quality``). A one-class group scores 1 on both for free; the "multi-class groups"
row averages only the classes that share their group, where a generator must know the class.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from lthash.io import read_json
from lthash.report.tables import Section, Table


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _quality_by_generator(quality: Sequence[str | os.PathLike]) -> tuple[dict[str, dict[str, dict[str, Any]]],
                                                                         dict[str, Any] | None]:
    """(generator -> synthesis mode -> its quality.json entry, mode from the file's folder name;
    the transfer controls of the first file that measured them, or None)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    controls = None
    for path in quality:
        data = read_json(path)
        mode = Path(path).parent.name
        controls = controls or data.get("transfer")
        for generator, result in data.get("generators", {}).items():
            found.setdefault(generator, {})[mode] = result
    return found, controls


def _transfer(result: dict[str, Any], classes: Sequence[str] | None) -> float | None:
    """Synthetic-to-real accuracy of one quality entry: over all held-out images (``classes``
    None) or the mean of the per-class accuracies of ``classes``; None where not measured."""
    measured = result.get("synthetic_to_real")
    if not measured:
        return None
    if classes is None:
        return measured["accuracy"]
    values = [measured["per_class"][c] for c in classes if c in measured["per_class"]]
    return sum(values) / len(values) if values else None


def knowledge_table(knowledge: Sequence[str | os.PathLike], quality: Sequence[str | os.PathLike] = ()) -> Table:
    """The ``generator_knowledge`` table from knowledge.json files and the quality stage's files."""
    fidelity, controls = _quality_by_generator(quality)
    modes = sorted({mode for by_mode in fidelity.values() for mode in by_mode})
    transfer_modes = sorted({mode for by_mode in fidelity.values() for mode, r in by_mode.items()
                             if r.get("synthetic_to_real")})
    table = Table(
        name="generator_knowledge", title="What each generator knows of the classes, before synthesis",
        intro=("Held-out denoising accuracy: each validation image is classified by the class prompt under "
               "which the generator denoises it best (fixed noises and timesteps, the Diffusion Classifier); "
               "within group = among the classes of its super-category only, beside the chance level "
               "1/|group|. Class fidelity: share of a generator's samples the quality judge (trained on "
               "balanced real data; it measures, it never feeds the method) puts in their class. Percent."),
        csv_columns=["generator", "group", "classes", "chance", "heldout_accuracy_within_group",
                     "heldout_accuracy_all_classes", *[f"class_fidelity_{m}" for m in modes],
                     *[f"synthetic_to_real_{m}" for m in transfer_modes]],
        empty="_no generator was measured in this run_")
    for path in knowledge:
        data = read_json(path)
        generator = str(data["generator"])
        quality_of = fidelity.get(generator, {})
        rows: list[dict[str, Any]] = []
        for group, entry in data["groups"].items():
            rows.append({"generator": generator, "group": group, "classes": ", ".join(entry["classes"]),
                         "chance": entry["chance"], "heldout_accuracy_within_group": entry["within_group_accuracy"],
                         "heldout_accuracy_all_classes": None,
                         **{f"class_fidelity_{m}": quality_of[m].get("groups", {}).get(group, {}).get("class_fidelity")
                            for m in modes if m in quality_of},
                         **{f"synthetic_to_real_{m}": _transfer(quality_of[m], entry["classes"])
                            for m in transfer_modes if m in quality_of}})
        multi = data.get("multi_class_groups", {})
        if multi.get("chance") is not None:
            rows.append({"generator": generator, "group": "multi-class groups", "classes": "",
                         "chance": multi["chance"], "heldout_accuracy_within_group": multi["within_group_accuracy"],
                         "heldout_accuracy_all_classes": None,
                         **{f"class_fidelity_{m}": _multi_fidelity(quality_of[m]) for m in modes if m in quality_of},
                         **{f"synthetic_to_real_{m}": _transfer(quality_of[m], [
                             c for entry in data["groups"].values() if len(entry["classes"]) > 1 for c in entry["classes"]])
                            for m in transfer_modes if m in quality_of}})
        rows.append({"generator": generator, "group": "all classes", "classes": "",
                     "chance": data["within_group_chance"], "heldout_accuracy_within_group": data["within_group_accuracy"],
                     "heldout_accuracy_all_classes": data["accuracy"],
                     **{f"class_fidelity_{m}": quality_of[m].get("mean_class_fidelity") for m in modes if m in quality_of},
                     **{f"synthetic_to_real_{m}": _transfer(quality_of[m], None) for m in transfer_modes if m in quality_of}})
        table.records.extend(rows)
        note = (f"Held-out denoising accuracy within groups {_pct(data['within_group_accuracy'])} % against a "
                f"chance level of {_pct(data['within_group_chance'])} %; over all classes "
                f"{_pct(data['accuracy'])} % (chance {_pct(data['chance'])} %); "
                f"{data['images']} validation images, {len(data['timesteps'])} timesteps.")
        if transfer_modes and controls:
            note += (f" Synthetic-to-real: a CNN taught on the samples alone, its accuracy on the real "
                     f"{controls['evaluated_on']} images; the same CNN taught on the real long-tail set "
                     f"{_pct(controls['longtail_real'])} %, on the real balanced set {_pct(controls['balanced_real'])} %.")
        header = ["group", "classes", "chance", "held-out accuracy (within group)",
                  *[f"class fidelity, {m}" for m in modes], *[f"synthetic-to-real, {m}" for m in transfer_modes]]
        table.sections.append(Section(
            heading=generator, header=header, note=note,
            rows=[[r["group"], r["classes"] or "–", _pct(r["chance"]), _pct(r["heldout_accuracy_within_group"]),
                   *[_pct(r.get(f"class_fidelity_{m}")) for m in modes],
                   *[_pct(r.get(f"synthetic_to_real_{m}")) for m in transfer_modes]] for r in rows]))
    return table


def _multi_fidelity(result: dict[str, Any]) -> float | None:
    """Mean class fidelity over the classes whose group has two classes or more (each group's
    mean weighted by its number of classes)."""
    groups = [g for g in result.get("groups", {}).values() if g["chance"] < 1.0]
    classes = sum(len(g["classes"]) for g in groups)
    return sum(g["class_fidelity"] * len(g["classes"]) for g in groups) / classes if classes else None

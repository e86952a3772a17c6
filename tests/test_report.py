"""The report stage on real scored runs (scikit-learn digits, real codes, the real scorer).

Arms are stand-ins that differ in how much of the images their codes keep (PCA of the
database vs seeded random projections), scored by ``lthash.evaluate.score.run_score``; the
report's tables, sentences, pictures and timing are checked against numbers recomputed here.
"""

from __future__ import annotations

import csv
import html
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lthash.config import load_config
from lthash.workflow import stage_config
from lthash.errors import LthashError
from lthash.evaluate.codes import CodeSet, pack_codes, write_codes
from lthash.evaluate.score import run_score
from lthash.io import ImageSet, write_image_sets, write_json
from lthash.report.analysis import arms_table, best_control, gap_share, read_setting, sentence, summary
from lthash.report.figures import BORDER, PAD, RIGHT, TILE, WRONG, figure_path, pick_queries
from lthash.report.report import TABLE_NAMES, VERDICT, write_report
from lthash.report.runs import RunRecord, Setting, by_setting, load_runs, primary_cut
from lthash.report.uncertainty import difference_text, paired, spread
from lthash.report.timing import read_benchmarks

BITS = 16
#: the score stage's validated evaluate section
PARAMS = stage_config("score", json.dumps({"topk": ["all", 50], "pk_points": 5, "many_shot": 30,
                                           "few_shot": 8}))["evaluate"]
# arm label -> (tags, how the codes are made: random mixes of the class-mean directions of the
# database (supervised, far better), or a random projection of the pixels with this seed)
ARMS = {
    "balanced": ({"arm": "balanced"}, "supervised"),
    "longtail": ({"arm": "longtail"}, 11),
    "resampled": ({"arm": "resampled"}, 12),
    "augmented-attndreambooth-real": ({"arm": "augmented", "generator": "attndreambooth", "synthesis": "real"}, 13),
}


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * 255 / 16).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64)


def _score_arms(folder: Path, split: Path, images, labels, query_rows, db_rows, arms, seed=None, offset=0):
    """Codes of every arm of ``arms`` (label -> (tags, how)) scored by the real score stage, in folders
    whose names say nothing; ``seed`` (a tag when given) moves every random projection by 100 * seed."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    centred = flat - flat[db_rows].mean(0)
    means = np.stack([centred[db_rows][labels[db_rows] == c].mean(0) for c in range(10)])
    shift = 0 if seed is None else 100 * seed
    metrics, codes = [], []
    for i, (label, (tags, how)) in enumerate(arms.items()):
        if how == "supervised":
            projection = means.T @ np.random.default_rng(shift).standard_normal((10, BITS))
        else:
            projection = np.random.default_rng(how + shift).standard_normal((flat.shape[1], BITS))
        signs = centred @ projection
        run = folder / f"run{offset + i}" / "somewhere"
        run.mkdir(parents=True)
        sets = {name: CodeSet(pack_codes(signs[rows]), labels[rows], rows.astype(np.int64), BITS)
                for name, rows in (("query", query_rows), ("database", db_rows))}
        write_codes(run / "codes.h5", sets)
        run_score(run / "codes.h5", run / "metrics.json", PARAMS, split=split,
                  tags={**tags, "method": "m", "backbone": "raw", **({} if seed is None else {"seed": str(seed)})})
        metrics.append(run / "metrics.json")
        codes.append(run / "codes.h5")
    return metrics, codes


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A split (query 8 per class, the rest database, a long-tail train group) and four scored runs."""
    root = tmp_path_factory.mktemp("report")
    images, labels = _digits()
    rng = np.random.default_rng(0)
    query_rows = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:8] for c in range(10)])
    db_rows = np.setdiff1d(np.arange(len(labels)), query_rows)
    counts = [60, 40, 30, 20, 14, 10, 7, 5, 4, 3]
    train_rows = np.concatenate([db_rows[labels[db_rows] == c][:n] for c, n in enumerate(counts)])
    groups = {}
    for name, rows in (("query", query_rows), ("database", db_rows), ("train", train_rows),
                       ("train_balanced", train_rows)):
        attrs = {"counts": np.bincount(labels[rows], minlength=10).tolist()}
        groups[name] = ImageSet(images[rows], labels[rows], rows.astype(np.int64), attrs=attrs)
    split = root / "data" / "split.h5"
    names = [f"digit {c}" for c in range(10)]
    write_image_sets(split, groups, attrs={"class_names": names, "dataset": "digits", "seed": 0})
    write_json(root / "data" / "split.json", {"dataset": "digits", "seed": 0, "class_names": names,
                                              "counts": {k: v.attrs["counts"] for k, v in groups.items()}})
    metrics, codes = _score_arms(root / "runs", split, images, labels, query_rows, db_rows, ARMS)
    bench = root / "benchmarks"
    (bench / "train" / "a").mkdir(parents=True)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (bench / "split.tsv").write_text(header + "1.5\t0:00:01\t100\t0\t0\t0\t0\t0\t0\t1.0\n")
    (bench / "train" / "a" / "x.tsv").write_text(header + "10.0\t0:00:10\t300\t0\t0\t0\t0\t0\t0\t9.0\n")
    (bench / "train" / "y.tsv").write_text(header + "4.0\t0:00:04\t200\t0\t0\t0\t0\t0\t0\t3.0\n")
    return root, metrics, codes, split, query_rows, db_rows, labels


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_cli_writes_every_table_figure_and_reads_identity_from_tags(scored):
    root, metrics, codes, split, *_ = scored
    out = root / "out"
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from lthash.cli import main; sys.exit(main())", "report", "--metrics", *map(str, metrics), "--codes", *map(str, codes),
         "--split", str(split), "--split-summary", str(root / "data" / "split.json"),
         "--benchmarks", str(root / "benchmarks"), "--out", str(out / "report.md"),
         "--table", str(out / "tables" / "map.csv"), "--tables", str(out / "tables"),
         "--figures", str(out / "figures")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in TABLE_NAMES:
        assert (out / "tables" / f"{name}.csv").exists()
        # validation: no run of the fixture has one; generator_knowledge: no knowledge.json given
        assert "<table>" in (out / "tables" / f"{name}.html").read_text() or name in ("validation",
                                                                                       "generator_knowledge")
    setting = Setting("m", "raw", BITS)
    for kind in ("retrieval", "per_class_ap"):
        assert figure_path(out / "figures", kind, setting).stat().st_size > 5000
    rows = _csv(out / "tables" / "arms.csv")
    assert [r["arm_label"] for r in rows] == list(ARMS)
    assert {r["arm"] for r in rows} == {"balanced", "longtail", "resampled", "augmented"}
    by = {r["arm_label"]: r for r in rows}
    assert by["augmented-attndreambooth-real"]["synthesis"] == "real"
    assert by["balanced"]["generator"] == ""
    b, lt = float(by["balanced"]["map"]), float(by["longtail"]["map"])
    assert b - lt > 0.05  # class-mean directions beat a random projection
    assert float(by["balanced"]["gap_share_all"]) == pytest.approx(1.0)
    assert float(by["longtail"]["gap_share_all"]) == pytest.approx(0.0)
    resampled = float(by["resampled"]["map"])
    assert float(by["resampled"]["gap_share_all"]) == pytest.approx((resampled - lt) / (b - lt))
    text = (out / "report.md").read_text()
    generated = float(by["augmented-attndreambooth-real"]["map"])
    control = "resampled" if resampled > lt else "longtail"  # the controls of these runs
    best = max(resampled, lt)
    assert by["augmented-attndreambooth-real"]["control"] == control
    assert float(by["augmented-attndreambooth-real"]["vs_control_all"]) == pytest.approx(generated - best)
    assert by["augmented-attndreambooth-real"]["verdict"] == "one seed" and by["balanced"]["seeds"] == ""
    assert (f"augmented-attndreambooth-real, reaches {100 * generated:.2f} mAP (mean of one seed) and differs "
            f"from the best control, {control}, by {100 * (generated - best):+.2f} points (one seed, no spread "
            "measured)") in text
    assert text.split("\n\n")[1].startswith("**Verdict.** Against the best control")
    verdict_page = (out / "tables" / VERDICT).read_text()
    assert "was run on one seed only" in verdict_page and "<li>" in verdict_page
    assert figure_path(out / "figures", "seeds", setting).stat().st_size > 5000
    assert "Table 1" in text and "Head / medium / tail" in text and "![retrieval" in text
    assert "_no run recorded a validation mAP_" in text
    timing = {r["stage"]: r for r in _csv(out / "tables" / "timing.csv")}
    assert float(timing["train"]["wall_s"]) == pytest.approx(14.0) and timing["train"]["jobs"] == "2"
    assert list(timing)[:2] == ["train", "split"] and list(timing)[2] == "all stages"
    assert float(timing["all stages"]["wall_s"]) == pytest.approx(15.5)
    classes = _csv(out / "tables" / "classes.csv")  # the default config: super-category captions
    assert [(r["class"], r["train_images"], r["words"], r["category"], r["prompt"]) for r in classes[:2]] == [
        ("digit 0", "60", "zero", "digit", "a photo of a digit"),
        ("digit 1", "40", "one", "digit", "a photo of a digit")]
    assert "| digit 9 | 3 | nine | digit | a photo of a digit |" in text


def test_the_report_names_each_class_its_words_and_its_prompt(scored, tmp_path):
    """The classes table follows generate.class_words and the base's captions; classes whose
    prompts would coincide are said in it instead of failing the report."""
    root, metrics, codes, *_ = scored
    params = {"generate": {"class_words": {"digit 9": "Nine", "digit 8": "octo"}, "base": {"captions": "class_name"}}}
    write_report(metrics, tmp_path / "report.md", tmp_path / "map.csv", root / "data" / "split.json",
                 config=stage_config("report", json.dumps(params)), tables=tmp_path / "tables")
    rows = {r["class"]: r for r in _csv(tmp_path / "tables" / "classes.csv")}
    assert rows["digit 8"]["words"] == "octo" and rows["digit 8"]["prompt"] == "a photo of a octo"
    assert rows["digit 9"]["prompt"] == "a photo of a nine" and rows["digit 2"]["prompt"] == "a photo of a two"
    params["generate"]["class_words"] = {"digit 9": "octo", "digit 8": "octo"}
    write_report(metrics, tmp_path / "report.md", tmp_path / "map.csv", root / "data" / "split.json",
                 config=stage_config("report", json.dumps(params)))
    assert "'digit 8' and 'digit 9' would be 'octo'" in (tmp_path / "report.md").read_text()


def test_retrieval_picture_marks_each_result_by_its_class(scored):
    """Border colours in the picture against a brute-force Hamming ranking done here."""
    from PIL import Image

    from lthash.evaluate.codes import read_codes, unpack_codes
    from lthash.report.figures import retrieval_figure

    root, metrics, codes, split, _, _, _ = scored
    runs = load_runs(metrics, codes)
    path = root / "pic.png"
    shown = retrieval_figure(path, runs[0].setting, runs, split, head=2, tail=2, top=10)
    picks = pick_queries(runs[0].metrics["per_class"], read_codes(codes[0], "query").labels, 2, 2)
    assert [p.train_count for p in picks] == [60, 40, 4, 3]
    assert len(shown) == 4 * len(runs)
    picture = np.asarray(Image.open(path).convert("RGB"))
    # the canvas is drawn 1:1 at 100 dpi: locate tile borders from the layout constants
    cell = TILE + 2 * BORDER + PAD
    left, gap, header = 250, 18, 30
    for b, pick in enumerate(picks):
        for a, run in enumerate(runs):
            query, database = read_codes(run.codes_path, "query"), read_codes(run.codes_path, "database")
            q = unpack_codes(query.codes[pick.row:pick.row + 1], BITS)
            db = unpack_codes(database.codes, BITS)
            distance = (BITS - db @ q[0]) / 2
            order = np.lexsort((np.arange(len(db)), distance))[:10]
            right = database.labels[order] == query.labels[pick.row]
            entry = shown[b * len(runs) + a]
            assert (entry["class"], entry["arm"], entry["right"]) == (pick.name, run.label, int(right.sum()))
            y = b * (header + len(runs) * cell) + header + a * cell + 1
            for k, ok in enumerate(right):
                x = left + cell + gap + k * cell + 1
                assert tuple(picture[y, x]) == (RIGHT if ok else WRONG)


def _run(label: str, values: dict[str, float | None], tail: float | None = None, seed: int | None = None,
         **ident) -> RunRecord:
    row = {"R": "all", "ties": "index", "map": values.get("map"), "map_head": values.get("map"),
           "map_medium": values.get("map"), "map_tail": tail if tail is not None else values.get("map")}
    metrics = {"results": [row], "ties": ["index"], "per_class": []}
    arm = ident.pop("arm", label)
    return RunRecord(arm=arm, generator=ident.get("generator"), synthesis=ident.get("synthesis"), method="m",
                     backbone="b", bits=32, metrics=metrics, metrics_path=Path(f"/nowhere/{label}/{seed}/metrics.json"),
                     seed=seed)


def _seeds(label: str, maps: dict[int, float], **ident) -> list[RunRecord]:
    """One run per seed of an arm whose every group's mAP is ``maps[seed]``."""
    return [_run(label, {"map": value}, seed=seed, **dict(ident)) for seed, value in maps.items()]


def _reading(*runs: RunRecord | list[RunRecord]):
    flat = [run for item in runs for run in (item if isinstance(item, list) else [item])]
    return read_setting(Setting("m", "b", 32), by_setting(flat)[Setting("m", "b", 32)], "all", "index")


def _t_interval(diffs: list[float]) -> tuple[float, float]:
    """The 95 % t-interval of a mean, from scipy's t distribution (the reference of the test)."""
    from scipy import stats

    d = np.asarray(diffs)
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return d.mean() - half, d.mean() + half


def test_paired_interval_and_verdicts_on_known_differences():
    base = {0: 0.60, 1: 0.61, 2: 0.62}
    win = paired({0: 0.630, 1: 0.640, 2: 0.6515}, base)
    assert win.mean == pytest.approx(0.0305) and (win.low, win.high) == pytest.approx(_t_interval([0.03, 0.03, 0.0315]))
    assert win.verdict == "beats" and win.low > 0
    assert difference_text(win) == f"+3.05 points (95 % CI {100 * win.low:+.2f} to {100 * win.high:+.2f}, 3 seeds)"
    straddle = paired({0: 0.61, 1: 0.60, 2: 0.625}, base)
    assert straddle.low < 0 < straddle.high and straddle.verdict == "indistinguishable"
    loss = paired({0: 0.55, 1: 0.57, 2: 0.56}, base)
    assert loss.high < 0 and loss.verdict == "trails"
    one = paired({0: 0.70}, base)
    assert one.n == 1 and one.low is None and one.verdict == "one seed"
    assert "one seed, no spread measured" in difference_text(one) and "left out" in difference_text(one)
    missing = paired({0: 0.63, 1: 0.64, 2: 0.65}, {0: 0.60, 1: 0.61})
    assert missing.n == 2 and missing.left_out == (2,) and missing.mean == pytest.approx(0.03)
    assert "2 seeds; seed 2 left out, run by only one of the two arms" in difference_text(missing)
    assert paired({0: 0.6}, {1: 0.6}).verdict == "no shared seed"
    sd = spread({0: 0.60, 1: 0.61, 2: 0.62, 3: None})
    assert sd.n == 3 and sd.mean == pytest.approx(0.61) and sd.sd == pytest.approx(0.01)
    assert spread({0: 0.5}).sd is None


def test_best_control_is_the_highest_mean_control_and_the_sentence_reads_its_interval():
    longtail = _seeds("longtail", {0: 0.50, 1: 0.51, 2: 0.52})
    class_balanced = _seeds("class_balanced", {0: 0.60, 1: 0.61, 2: 0.62})
    logit = _seeds("logit_adjusted", {0: 0.62, 1: 0.58, 2: 0.59})  # best seed 0, lower mean
    resampled = _seeds("resampled", {0: 0.58, 1: 0.59, 2: 0.60})
    balanced = _seeds("balanced", {0: 0.70, 1: 0.71, 2: 0.72})
    ours = _seeds("a", {0: 0.630, 1: 0.640, 2: 0.6515}, arm="augmented", generator="g", synthesis="real")
    reading = _reading(balanced, longtail, class_balanced, logit, resampled, ours)
    arms = by_setting([*longtail, *class_balanced, *logit, *resampled])[Setting("m", "b", 32)]
    assert best_control(arms, "all", "index") == "class_balanced"
    assert reading.control == "class_balanced" and reading.verdict == "beats"
    low, high = _t_interval([0.03, 0.03, 0.0315])
    text = sentence(reading)
    assert (f"the best generated arm, augmented-g-real, reaches 64.05 ± 1.08 mAP (mean ± sd of 3 seeds) and beats "
            f"the best control, class_balanced, by +3.05 points (95 % CI {100 * low:+.2f} to {100 * high:+.2f}, "
            "3 seeds)") in text
    # gap share per seed: (ours - longtail) / (balanced - longtail) = 0.65, 0.65, 0.6575
    assert "closes 65 % of the balanced − long-tail gap" in text
    overall = summary([reading])
    assert overall.startswith("Against the best control of each setting") and "beats it in 1" in overall
    assert "beats the best control beyond its seed-to-seed spread in every setting" in overall
    table, _ = arms_table([*balanced, *longtail, *class_balanced, *logit, *resampled, *ours], "all", "index")
    row = next(r for r in table.records if r["arm_label"] == "augmented-g-real")
    assert row["control"] == "class_balanced" and row["verdict"] == "beats" and row["n_seeds"] == 3
    assert (row["vs_control_all_low"], row["vs_control_all_high"]) == pytest.approx((low, high))
    assert row["vs_control_gap"] == pytest.approx(np.mean([0.65 - 0.5, 0.65 - 0.5, 0.6575 - 0.5]))
    assert row["map_sd"] == pytest.approx(np.std([0.630, 0.640, 0.6515], ddof=1))


def test_sentences_of_one_seed_ties_missing_seeds_and_missing_arms():
    balanced, longtail = _seeds("balanced", {0: 0.70, 1: 0.70}), _seeds("longtail", {0: 0.50, 1: 0.50})
    control = _seeds("class_balanced", {0: 0.58, 1: 0.60, 2: 0.62})
    tied = _reading(balanced, longtail, control, _seeds("a", {0: 0.60, 1: 0.59}, arm="augmented", generator="g"))
    assert tied.verdict == "indistinguishable"
    assert ("is indistinguishable from the best control, class_balanced: +0.50 points (95 % CI" in sentence(tied)
            and "2 seeds; seed 2 left out" in sentence(tied))
    single = _reading(_run("balanced", {"map": 0.7}), _run("longtail", {"map": 0.5}),
                      _run("resampled", {"map": 0.62}), _run("a", {"map": 0.66}, arm="augmented", generator="g"))
    assert single.verdict == "one seed" and "beats" not in sentence(single)
    assert "differs from the best control, resampled, by +4.00 points (one seed, no spread measured)" in sentence(single)
    below = _reading(balanced, longtail, control, _seeds("a", {0: 0.45, 1: 0.47}, arm="augmented", generator="g"))
    assert below.verdict == "trails" and "widens the balanced − long-tail gap (share -20 %" in sentence(below)
    no_control = _reading(balanced, _seeds("a", {0: 0.6}, arm="augmented", generator="g"))
    assert no_control.verdict == "no control arm" and "no control arm ran" in sentence(no_control)
    nothing = _reading(balanced, longtail, control)
    assert nothing.verdict == "no generated arm" and "no generated arm ran" in sentence(nothing)
    overall = summary([tied, single, below, nothing])
    assert "is indistinguishable from it in 1" in overall and "trails it in 1" in overall
    assert "was run on one seed only (no spread measured, so no verdict) in 1" in overall
    assert "In no setting does the generated data beat the best control" in overall and "no generated arm" in overall


def test_gap_share_per_group_and_undefined_cases():
    assert gap_share(0.6, 0.5, 0.7) == pytest.approx(0.5)
    assert gap_share(0.8, 0.5, 0.7) == pytest.approx(1.5)
    assert gap_share(0.6, 0.5, 0.5) is None and gap_share(0.6, 0.5, 0.4) is None
    assert gap_share(None, 0.5, 0.7) is None
    runs = [_run("balanced", {"map": 0.7}, tail=0.6), _run("longtail", {"map": 0.5}, tail=0.2),
            _run("resampled", {"map": 0.55}, tail=0.5)]
    table, _ = arms_table(runs, "all", "index")
    resampled = next(r for r in table.records if r["arm_label"] == "resampled")
    assert resampled["gap_share_all"] == pytest.approx(0.25)
    assert resampled["gap_share_tail"] == pytest.approx(0.75)


def test_validation_table_when_present(scored, tmp_path):
    """Two runs' codes gain a validation set (scored by the real score stage), two do not."""
    from lthash.evaluate.codes import read_codes
    from lthash.io import read_json

    root, metrics, codes, split, *_ = scored
    edited = []
    for i, (path, code_path) in enumerate(zip(metrics, codes)):
        data = read_json(path)
        target = tmp_path / f"r{i}" / "metrics.json"
        if i < 2:
            query, database = read_codes(code_path, "query"), read_codes(code_path, "database")
            held = CodeSet(database.codes[::7], database.labels[::7], database.index[::7], BITS)
            write_codes(tmp_path / f"r{i}" / "codes.h5", {"query": query, "database": database, "validation": held})
            data = run_score(tmp_path / f"r{i}" / "codes.h5", target, PARAMS, split=split, tags=data["tags"])
        write_json(target, data)
        edited.append(target)
    write_report(edited, tmp_path / "report.md", tmp_path / "map.csv", root / "data" / "split.json",
                 tables=tmp_path / "tables")
    rows = _csv(tmp_path / "tables" / "validation.csv")
    expected = [(read_json(p)["tags"]["arm"], read_json(p)["validation"]["map"]["all"]) for p in edited[:2]]
    assert [(r["arm_label"], float(r["map"])) for r in rows] == pytest.approx(expected)
    assert expected[0][1] > 0 and rows[0]["R"] == "all" and rows[0]["n_query"] == str(len(held))
    assert "Validation mAP (for model selection" in (tmp_path / "tables" / "validation.html").read_text()
    assert "Validation mAP" in (tmp_path / "report.md").read_text()


def test_bad_runs_are_refused_naming_the_file(scored, tmp_path):
    from lthash.io import read_json

    _, metrics, *_ = scored
    with pytest.raises(LthashError, match="same run"):
        load_runs([metrics[0], metrics[0]])
    data = read_json(metrics[0])
    data["tags"].pop("arm")
    bad = tmp_path / "metrics.json"
    write_json(bad, data)
    with pytest.raises(LthashError, match=r"metrics\.json.*lacks \['arm'\]"):
        load_runs([bad])


TWO_SEEDS = {
    "balanced": ({"arm": "balanced"}, "supervised"),
    "longtail": ({"arm": "longtail"}, 11),
    "class_balanced": ({"arm": "class_balanced"}, 14),
    "augmented-g-real": ({"arm": "augmented", "generator": "g", "synthesis": "real"}, 13),
}


@pytest.fixture(scope="module")
def two_seeds(scored):
    """The arms of TWO_SEEDS scored for seeds 0 and 1 (each seed its own projections)."""
    root, _, _, split, query_rows, db_rows, labels = scored
    images, _ = _digits()
    metrics = []
    for seed in (0, 1):
        found, _ = _score_arms(root / "seeds", split, images, labels, query_rows, db_rows, TWO_SEEDS, seed=seed,
                               offset=10 * seed)
        metrics += found
    return root, metrics


def test_the_report_home_page_reads_like_an_abstract(two_seeds, tmp_path):
    """The page snakemake --report opens on, rendered as Snakemake renders it (Jinja, then docutils
    with every warning an error): the question, the matrix in words, the verdict with its numbers."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    from lthash.report.home import HOME, home_page

    root, metrics = two_seeds
    write_report(metrics, tmp_path / "report.md", tmp_path / "map.csv", root / "data" / "split.json",
                 tables=tmp_path / "tables")
    text = (tmp_path / "tables" / HOME).read_text()
    links = "\n.. _verdict.html: javascript:app.showResultInfo('verdict')\n"
    rendered = Environment(trim_blocks=True, lstrip_blocks=True).from_string(text + links).render(files=[])
    page = publish_parts(rendered, writer="html",
                         settings_overrides={"halt_level": 2, "report_level": 2})["html_body"]
    runs = load_runs(metrics)
    verdict = summary(arms_table(runs, *primary_cut(runs))[1])
    assert "<h1" in page and "does synthetic data make the tail classes" in page
    assert "Does synthetic data from a diffusion model personalised to each class" in page
    for words in ("<strong>Controls</strong>: longtail — Long-tail data; class_balanced",
                  "<strong>Seeds</strong>: every arm trained once per seed (0 and 1)",
                  "<strong>Synthesis</strong>: image-to-image"):
        assert words in page, words
    assert "{'" not in page and "[" not in page.split("Verdict")[0]  # no Python dict or list
    assert html.escape(verdict) in page and "95 % CI" in page
    assert 'href="javascript:app.showResultInfo' in page
    assert home_page(tmp_path) == str((tmp_path / "tables" / HOME).resolve())
    assert home_page(tmp_path / "nowhere", "/project") == "/project/workflow/report/workflow.rst"


def test_two_seeds_pair_by_seed_in_the_report(two_seeds, tmp_path):
    """The report pairs seed s of the generated arm with seed s of the best control: relabelling the
    generated arm's seeds (0 <-> 1) keeps every mean and changes the paired interval."""
    from lthash.io import read_json

    root, metrics = two_seeds
    maps = {(read_json(p)["tags"]["arm"], int(read_json(p)["tags"]["seed"])): read_json(p)["results"][0]["map"]
            for p in metrics}
    control = max(("longtail", "class_balanced"), key=lambda arm: maps[arm, 0] + maps[arm, 1])

    def report(paths, folder):
        write_report(paths, folder / "report.md", folder / "map.csv", root / "data" / "split.json",
                     tables=folder / "tables")
        rows = {r["arm_label"]: r for r in _csv(folder / "tables" / "arms.csv")}
        return rows, folder

    rows, folder = report(metrics, tmp_path / "a")
    ours = rows["augmented-g-real"]
    assert ours["seeds"] == "0 1" and ours["n_seeds"] == "2" and ours["control"] == control
    diffs = [maps["augmented", s] - maps[control, s] for s in (0, 1)]
    assert float(ours["vs_control_all"]) == pytest.approx(np.mean(diffs))
    assert (float(ours["vs_control_all_low"]), float(ours["vs_control_all_high"])) == pytest.approx(_t_interval(diffs))
    assert float(ours["map"]) == pytest.approx((maps["augmented", 0] + maps["augmented", 1]) / 2)
    seeds = [r["seed"] for r in _csv(folder / "map.csv") if r["arm"] == "augmented"]
    assert set(seeds) == {"0", "1"} and seeds.count("0") == seeds.count("1")
    assert {r["seed"] for r in _csv(folder / "tables" / "per_class.csv")} == {"0", "1"}
    assert "Verdict.** Against the best control" in (folder / "report.md").read_text()

    swapped = []
    for path in metrics:
        data = read_json(path)
        if data["tags"]["arm"] == "augmented":
            data["tags"]["seed"] = str(1 - int(data["tags"]["seed"]))
        target = tmp_path / "swapped" / path.parent.parent.name / "metrics.json"
        write_json(target, data)
        swapped.append(target)
    rows, _ = report(swapped, tmp_path / "b")
    moved = rows["augmented-g-real"]
    crossed = [maps["augmented", 1 - s] - maps[control, s] for s in (0, 1)]
    assert float(moved["map"]) == pytest.approx(float(ours["map"]))
    assert float(moved["vs_control_all"]) == pytest.approx(float(ours["vs_control_all"]))
    assert (float(moved["vs_control_all_low"]), float(moved["vs_control_all_high"])) == pytest.approx(
        _t_interval(crossed))
    assert float(moved["vs_control_all_low"]) != pytest.approx(float(ours["vs_control_all_low"]))
    with pytest.raises(LthashError, match="same run .*seed 0"):
        load_runs([metrics[0], metrics[0]])
    assert len(load_runs([metrics[0], metrics[len(TWO_SEEDS)]])) == 2  # the same arm, seeds 0 and 1


def test_arm_kinds_come_from_the_workflow_registry(scored, tmp_path):
    from lthash.io import read_json
    from lthash.workflow import ARMS as REGISTRY

    _, metrics, *_ = scored
    runs = load_runs(metrics)
    assert {run.arm: run.kind for run in runs} == {run.arm: REGISTRY[run.arm].kind for run in runs}
    assert runs[0].title == REGISTRY["balanced"].title and runs[0].seed is None
    data = read_json(metrics[1])
    data["tags"]["arm"] = "copied"
    write_json(tmp_path / "metrics.json", data)
    with pytest.raises(LthashError, match="arm 'copied' is not an arm of the workflow"):
        load_runs([tmp_path / "metrics.json"])


def test_benchmarks_sum_per_stage(scored):
    root, *_ = scored
    stages = read_benchmarks(root / "benchmarks")
    assert stages["train"]["jobs"] == 2 and stages["train"]["longest_s"] == pytest.approx(10.0)
    assert stages["train"]["max_rss_mb"] == pytest.approx(300) and stages["split"]["cpu_s"] == pytest.approx(1.0)
    assert read_benchmarks(root / "nothing here") == {}


def test_timing_gives_the_elapsed_time_and_the_critical_path_bound(tmp_path):
    """Jobs end when their benchmark file is written: split ran 0-2 s, two trainings 2-12 s
    and 3-8 s side by side, encode 12-15 s; elapsed 15 s, critical path split + longest train + encode."""
    import os

    from lthash.report.timing import timing_table

    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    jobs = {"split.tsv": (2.0, 2.0), "train/a/x.tsv": (10.0, 12.0), "train/a/y.tsv": (5.0, 8.0),
            "encode/a/x.tsv": (3.0, 15.0)}
    for name, (seconds, end) in jobs.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + f"{seconds}\t0\t1\t0\t0\t0\t0\t0\t0\t{seconds}\n")
        os.utime(path, (1000.0 + end, 1000.0 + end))
    records = {r["stage"]: r for r in timing_table(tmp_path).records}
    assert records["elapsed (first job start to last job end)"]["wall_s"] == pytest.approx(15.0)
    log = tmp_path / "forkserver.log"
    log.write_text("lthash forkserver: serving on /tmp/s.sock (pid 9)\n"
                   "lthash forkserver: job 11 (lthash train --out runs/a/model) exit 0, 7.50 s CPU, 900 MB peak\n"
                   "lthash forkserver: job 12 (lthash encode --out runs/a/codes.h5) exit 2, 0.25 s CPU, 80 MB peak\n")
    warm = {r["stage"]: r for r in timing_table(tmp_path, log).records}
    assert warm["train"]["cpu_s"] == pytest.approx(records["train"]["cpu_s"] + 7.5)
    assert warm["train"]["max_rss_mb"] == pytest.approx(900) and warm["encode"]["cpu_s"] == pytest.approx(3.25)
    assert records["critical path bound (split > train > encode)"]["wall_s"] == pytest.approx(15.0)
    assert records["all stages"]["wall_s"] == pytest.approx(20.0) and records["train"]["jobs"] == 2


def test_readme_table_is_rendered_from_the_arms_table(two_seeds, tmp_path):
    """``lthash readme-table`` renders a real arms.csv (mean ± sd, the paired interval against
    the best control) and rewrites only the block between its markers."""
    from lthash.cli import main
    from lthash.report.readme import END, START, render, read_arms

    root, metrics = two_seeds
    write_report(metrics, tmp_path / "report.md", tmp_path / "map.csv", root / "data" / "split.json",
                 tables=tmp_path / "tables")
    arms = tmp_path / "tables" / "arms.csv"
    rows = {r["arm_label"]: r for r in read_arms(arms)}
    table = render(list(rows.values()))
    ours = rows["augmented-g-real"]
    mean_sd = f"{100 * float(ours['map']):.2f} ± {100 * float(ours['map_sd']):.2f}"
    low, high = (f"{100 * float(ours[k]):+.2f}" for k in ("vs_control_all_low", "vs_control_all_high"))
    line = next(line for line in table.splitlines() if line.startswith("| augmented-g-real"))
    assert mean_sd in line and f"[{low}, {high}] {ours['verdict']}" in line
    assert f"best control: {ours['bits']} bits: {ours['control']}" in table
    best = max((r for r in rows.values() if r["control"]), key=lambda r: float(r["map"]))
    assert (f"{best['bits']} bits: the best generated arm, {best['arm_label']}, " in table
            and f"the best control, {best['control']}: {100 * float(best['vs_control_all']):+.2f} points" in table)
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{START}\nold table\n{END}\nafter\n")
    assert main(["readme-table", "--arms", str(arms), "--readme", str(readme)]) == 0
    assert readme.read_text() == f"# title\n\nbefore\n{START}\n{table}\n{END}\nafter\n"
    readme.write_text("no markers\n")
    assert main(["readme-table", "--arms", str(arms), "--readme", str(readme)]) == 2
    assert readme.read_text() == "no markers\n"
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert main(["readme-table", "--arms", str(tmp_path / "bad.csv")]) == 2


def test_the_readme_results_table_is_the_render_of_the_committed_default_tables():
    """README.md's results block is exactly what ``lthash readme-table`` renders from the
    default run's arms table committed beside it (docs/results/default/arms.csv)."""
    from lthash.report.readme import END, START, read_arms, render

    root = Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    block = text.split(START)[1].split(END)[0].strip()
    rows = read_arms(root / "docs" / "results" / "default" / "arms.csv")
    assert block == render(rows).strip()
    experiment = load_config(root / "config.yaml")["experiment"]
    assert {row["arm"] for row in rows} == set(experiment["arms"])
    assert {row["seeds"] for row in rows} == {" ".join(str(seed) for seed in experiment["seeds"])}


@pytest.mark.parametrize("results, configfile", [("known_class", "fashion_mnist_known_class.yaml"),
                                                  ("novel_concept", "fashion_mnist_novel_concept.yaml"),
                                                  ("digits", "digits_imagefolder.yaml"),
                                                  ("shapes", "shapes_imagefolder.yaml")])
def test_the_readme_tables_of_shipped_configs_are_the_render_of_their_committed_tables(results, configfile):
    """Each README section on a shipped config's run shows what ``lthash readme-table`` renders
    from that run's arms table (docs/results/<run>), and the config asks for the arms,
    generators and seeds that table holds."""
    import yaml

    from lthash.report.readme import read_arms, render

    root = Path(__file__).resolve().parents[1]
    rows = read_arms(root / "docs" / "results" / results / "arms.csv")
    assert render(rows).strip() in (root / "README.md").read_text()
    experiment = yaml.safe_load((root / "workflow" / "configs" / configfile).read_text())["experiment"]
    assert {row["arm"] for row in rows} == set(experiment["arms"])
    assert {row["generator"] for row in rows if row["generator"]} == set(experiment["generators"])
    assert {row["seeds"] for row in rows} == {" ".join(str(seed) for seed in experiment["seeds"])}


def test_the_readme_knob_table_is_computed_from_the_committed_validation_runs():
    """Every setting tried against the default (docs/results/default/knobs.csv: validation mAP per
    seed, default and setting) has its paired difference in README.md's table of the tried settings."""
    from lthash.report.readme import tried_settings_rows

    root = Path(__file__).resolve().parents[1]
    rows = tried_settings_rows(root / "docs" / "results" / "default" / "knobs.csv")
    readme = (root / "README.md").read_text()
    assert len(rows) == 25
    for row in rows:
        assert row in readme

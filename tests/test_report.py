"""The report stage on real scored runs (scikit-learn digits, real codes, the real scorer).

Arms are stand-ins that differ in how much of the images their codes keep (PCA of the
database vs seeded random projections), scored by ``lthash.evaluate.score.run_score``; the
report's tables, sentences, pictures and timing are checked against numbers recomputed here.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lthash.errors import LthashError
from lthash.evaluate.codes import CodeSet, pack_codes, write_codes
from lthash.evaluate.score import run_score
from lthash.io import ImageSet, write_image_sets, write_json
from lthash.report.analysis import TIE, arms_table, gap_share, read_setting, sentence, summary
from lthash.report.figures import BORDER, PAD, RIGHT, TILE, WRONG, figure_path, pick_queries
from lthash.report.report import TABLE_NAMES, write_report
from lthash.report.runs import RunRecord, Setting, load_runs
from lthash.report.timing import read_benchmarks

BITS = 16
PARAMS = {"topk": ["all", 50], "pk_points": 5, "many_shot": 30, "few_shot": 8}
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
    flat = images.reshape(len(images), -1).astype(np.float64)
    centred = flat - flat[db_rows].mean(0)
    means = np.stack([centred[db_rows][labels[db_rows] == c].mean(0) for c in range(10)])
    metrics, codes = [], []
    for i, (label, (tags, how)) in enumerate(ARMS.items()):
        if how == "supervised":
            projection = means.T @ np.random.default_rng(0).standard_normal((10, BITS))
        else:
            projection = np.random.default_rng(how).standard_normal((flat.shape[1], BITS))
        signs = centred @ projection
        # a folder name that says nothing: identity must come from the tags
        run = root / "runs" / f"run{i}" / "somewhere"
        run.mkdir(parents=True)
        sets = {name: CodeSet(pack_codes(signs[rows]), labels[rows], rows.astype(np.int64), BITS)
                for name, rows in (("query", query_rows), ("database", db_rows))}
        write_codes(run / "codes.h5", sets)
        run_score(run / "codes.h5", run / "metrics.json", PARAMS, split=split,
                  tags={**tags, "method": "m", "backbone": "raw"})
        metrics.append(run / "metrics.json")
        codes.append(run / "codes.h5")
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
        assert "<table>" in (out / "tables" / f"{name}.html").read_text() or name == "validation"
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
    verdict = "ties with" if abs(generated - resampled) < TIE else "beats" if generated > resampled else "trails"
    assert f"augmented-attndreambooth-real, reaches {100 * generated:.2f} mAP and {verdict} resampled" in text
    assert "Table 1" in text and "Head / medium / tail" in text and "![retrieval" in text
    assert "_no run recorded a validation mAP_" in text
    timing = {r["stage"]: r for r in _csv(out / "tables" / "timing.csv")}
    assert float(timing["train"]["wall_s"]) == pytest.approx(14.0) and timing["train"]["jobs"] == "2"
    assert list(timing) == ["train", "split"]


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


def _run(label: str, values: dict[str, float | None], tail: float | None = None, **ident) -> RunRecord:
    row = {"R": "all", "ties": "index", "map": values.get("map"), "map_head": values.get("map"),
           "map_medium": values.get("map"), "map_tail": tail if tail is not None else values.get("map")}
    metrics = {"results": [row], "ties": ["index"], "per_class": []}
    arm = ident.pop("arm", label)
    return RunRecord(arm=arm, generator=ident.get("generator"), synthesis=ident.get("synthesis"), method="m",
                     backbone="b", bits=32, metrics=metrics, metrics_path=Path(f"/nowhere/{label}/metrics.json"))


def _reading(*runs: RunRecord):
    arms = {run.label: run for run in runs}
    return read_setting(Setting("m", "b", 32), arms, "all", "index")


def test_sentence_reads_ties_missing_arms_and_negative_gaps():
    balanced, longtail = _run("balanced", {"map": 0.70}), _run("longtail", {"map": 0.50})
    gen_a = _run("a", {"map": 0.58}, arm="augmented", generator="g1", synthesis="real")
    gen_b = _run("b", {"map": 0.58 + TIE / 2}, arm="augmented", generator="g2", synthesis="noise")
    resampled = _run("resampled", {"map": 0.62})
    reading = _reading(balanced, longtail, gen_a, gen_b, resampled)
    text = sentence(reading)
    assert reading.verdict == "trails" and reading.best == ["augmented-g1-real", "augmented-g2-noise"]
    assert "tie for best" in text and "trails resampled (62.00) by 4.00 points" in text
    assert "closes 40 % of the balanced − long-tail gap" in text and "(resampled: 60 %)" in text
    tied = _reading(balanced, longtail, gen_a, _run("resampled", {"map": 0.58 + TIE / 3}))
    assert tied.verdict == "ties" and "ties with resampled" in sentence(tied)
    below = _reading(balanced, longtail, _run("a", {"map": 0.45}, arm="augmented", generator="g"), resampled)
    assert "widens the balanced − long-tail gap (share -25 %" in sentence(below)
    no_control = _reading(balanced, longtail, gen_a)
    assert no_control.verdict == "no resampled arm" and "no resampled arm ran" in sentence(no_control)
    nothing = _reading(balanced, longtail, resampled)
    assert nothing.verdict == "no generated arm" and "no generated arm ran" in sentence(nothing)
    inverted = _reading(_run("balanced", {"map": 0.49}), longtail, gen_a, resampled)
    assert inverted.best_share is None and "balanced is not above long-tail (gap -1.00 points)" in sentence(inverted)
    one_sided = _reading(longtail, gen_a, resampled)
    assert "undefined without both" in sentence(one_sided)
    overall = summary([reading, tied, nothing])
    assert "trails it in 1" in overall and "ties it in 1" in overall and "no generated arm" in overall
    assert "In no setting compared does the generator add anything" in overall


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


def test_benchmarks_sum_per_stage(scored):
    root, *_ = scored
    stages = read_benchmarks(root / "benchmarks")
    assert stages["train"]["jobs"] == 2 and stages["train"]["longest_s"] == pytest.approx(10.0)
    assert stages["train"]["max_rss_mb"] == pytest.approx(300) and stages["split"]["cpu_s"] == pytest.approx(1.0)
    assert read_benchmarks(root / "nothing here") == {}

"""The score and search commands end to end on a codes file made from the real split fixture."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from lthash.cli import main
from lthash.evaluate.codes import CodeSet, pack_codes, read_codes, write_codes
from lthash.evaluate.metrics import score_codes
from lthash.io import read_attrs, read_image_set

BITS = 20


@pytest.fixture(scope="module")
def codes_file(small_split, tmp_path_factory):
    """Codes near per-class centres with 25% flipped bits, labels and index from the split."""
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2, (10, BITS)).astype(bool)
    sets = {}
    for group in ("database", "query"):
        image_set = read_image_set(small_split, group, load_images=False)
        flips = rng.random((len(image_set), BITS)) < 0.25
        sets[group] = CodeSet(codes=pack_codes(centres[image_set.labels] ^ flips), labels=image_set.labels,
                              index=image_set.index, bits=BITS)
    path = tmp_path_factory.mktemp("codes") / "codes.h5"
    write_codes(path, sets)
    return path


def test_score_end_to_end(codes_file, small_split, tmp_path):
    out, table, plots = tmp_path / "metrics.json", tmp_path / "metrics.csv", tmp_path / "plots"
    params = json.dumps({"topk": ["all", 50], "many_shot": 30, "few_shot": 10, "seed": 3})
    assert main(["score", "--codes", str(codes_file), "--split", str(small_split), "--out", str(out),
                 "--csv", str(table), "--plots", str(plots), "--params", params,
                 "--tag", "method=centres", "--tag", "run=a"]) == 0
    metrics = json.loads(out.read_text())
    query, database = read_codes(codes_file, "query"), read_codes(codes_file, "database")
    scores = score_codes(query.codes, database.codes, query.labels, database.labels, [None, 50], bits=BITS)
    assert metrics["bits"] == BITS and metrics["n_query"] == 200 and metrics["n_database"] == 2000
    assert metrics["evaluate_seed"] == 3 and metrics["topk"] == ["all", 50] and metrics["ties"] == ["index", "average"]
    by_key = {(row["R"], row["ties"]): row for row in metrics["results"]}
    assert by_key[("all", "index")]["map"] == pytest.approx(scores.map(None, "index"), abs=1e-15)
    assert by_key[(50, "average")]["map"] == pytest.approx(scores.map(50, "average"), abs=1e-15)
    counts = read_attrs(small_split, "train")["counts"]
    groups = ["head" if c > 30 else "tail" if c < 10 else "medium" for c in counts]
    ap = scores.ap(None, "index")
    for name in ("head", "medium", "tail"):
        members = np.isin(query.labels, [c for c, g in enumerate(groups) if g == name])
        assert by_key[("all", "index")][f"map_{name}"] == pytest.approx(ap[members].mean(), abs=1e-12)
        assert metrics["group_classes"][name] == [c for c, g in enumerate(groups) if g == name]
    first = metrics["per_class"][0]
    assert first["name"] == "T-shirt/top" and first["train_count"] == counts[0] and first["n_query"] == 20
    assert first["ap"]["all/index"] == pytest.approx(ap[query.labels == 0].mean(), abs=1e-12)
    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and rows[0]["method"] == "centres" and rows[0]["run"] == "a"
    assert {(r["R"], r["ties"]) for r in rows} == {("all", "index"), ("all", "average"), ("50", "index"),
                                                   ("50", "average")}
    for name in ("pr_radius.png", "precision_at_k.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))


def test_score_counts_list_and_single_policy(codes_file, tmp_path):
    out = tmp_path / "m.json"
    assert main(["score", "--codes", str(codes_file), "--counts", ",".join(["50"] * 10), "--out", str(out),
                 "--params", '{"evaluate": {"topk": [10], "ties": "average"}}']) == 0
    metrics = json.loads(out.read_text())
    assert [(r["R"], r["ties"]) for r in metrics["results"]] == [(10, "average")]
    assert metrics["group_classes"]["medium"] == list(range(10))


def test_score_bad_inputs(codes_file, small_split, tmp_path, capsys):
    out = tmp_path / "m.json"
    query, database = read_codes(codes_file, "query"), read_codes(codes_file, "database")
    only_db = tmp_path / "only_db.h5"
    write_codes(only_db, {"database": database})
    assert main(["score", "--codes", str(only_db), "--split", str(small_split), "--out", str(out)]) == 2
    assert "has no code set 'query'" in capsys.readouterr().err
    short = tmp_path / "short_labels.h5"
    write_codes(short, {"database": database, "query": CodeSet(query.codes, query.labels[:-1], query.index, BITS)})
    assert main(["score", "--codes", str(short), "--split", str(small_split), "--out", str(out)]) == 2
    assert "query_labels has 199 rows but there are 200 codes" in capsys.readouterr().err
    assert main(["score", "--codes", str(codes_file), "--counts", "5,5", "--out", str(out)]) == 2
    assert "reach class 9" in capsys.readouterr().err
    assert main(["score", "--codes", str(codes_file), "--counts", "5,5", "--out", str(out),
                 "--params", '{"topk": ["al"]}']) == 2
    assert "evaluate.topk.0" in capsys.readouterr().err
    assert main(["score", "--codes", str(tmp_path / "none.h5"), "--counts", "5", "--out", str(out)]) == 2
    assert "missing file" in capsys.readouterr().err
    assert not out.exists()


def reference_topk(query_packed: np.ndarray, db_packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    dist = np.unpackbits(query_packed[:, None, :] ^ db_packed[None, :, :], axis=2).sum(axis=2)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, 1)


def test_search_query_index_and_codes(codes_file, tmp_path):
    query, database = read_codes(codes_file, "query"), read_codes(codes_file, "database")
    out = tmp_path / "search.json"
    assert main(["search", "--codes", str(codes_file), "--query-index", "0,7,199", "--k", "25",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows, dist = reference_topk(query.codes[[0, 7, 199]], database.codes, 25)
    assert result["k"] == 25 and result["backend"] == "exact"
    for q, entry in enumerate(result["queries"]):
        assert [r["row"] for r in entry["results"]] == rows[q].tolist()
        assert [r["distance"] for r in entry["results"]] == dist[q].tolist()
        assert [r["index"] for r in entry["results"]] == database.index[rows[q]].tolist()
        assert entry["label"] == int(query.labels[[0, 7, 199][q]])
    signs = np.where(np.unpackbits(query.codes[:4], axis=1, count=BITS) > 0, 1.0, -1.0)
    np.save(tmp_path / "q.npy", signs)
    out2 = tmp_path / "search2.json"
    assert main(["search", "--codes", str(codes_file), "--query-codes", str(tmp_path / "q.npy"), "--k", "5000",
                 "--out", str(out2)]) == 0
    result2 = json.loads(out2.read_text())
    rows, dist = reference_topk(query.codes[:4], database.codes, 2000)
    assert result2["k"] == 2000
    assert [r["row"] for r in result2["queries"][3]["results"]] == rows[3].tolist()


def test_search_faiss_backend_distances(codes_file, tmp_path):
    pytest.importorskip("faiss")
    query, database = read_codes(codes_file, "query"), read_codes(codes_file, "database")
    out = tmp_path / "faiss.json"
    assert main(["search", "--codes", str(codes_file), "--query-index", "1,2", "--k", "10", "--backend", "faiss",
                 "--out", str(out)]) == 0
    _, dist = reference_topk(query.codes[[1, 2]], database.codes, 10)
    result = json.loads(out.read_text())
    assert [[r["distance"] for r in q["results"]] for q in result["queries"]] == dist.tolist()


def test_search_with_a_trained_model_matches_its_codes(small_split, tmp_path):
    """A real (LSH) model from the hashing stage: encoding the split's query images and
    searching gives the same results as searching with the codes it wrote."""
    from lthash.workflow import stage_config
    from lthash.hashing.encode import encode_split
    from lthash.hashing.train import run_training

    run = tmp_path / "run"
    run_training(small_split, "train", [], "real", None, run,
                 stage_config("train", json.dumps({"method": "lsh", "bits": 24, "seed": 0}))["hashing"], "cpu")
    codes = tmp_path / "codes.h5"
    encode_split(run, small_split, codes, device="cpu")
    by_model, by_rows = tmp_path / "model.json", tmp_path / "rows.json"
    assert main(["search", "--codes", str(codes), "--model", str(run), "--images", str(small_split),
                 "--k", "7", "--out", str(by_model)]) == 0
    assert main(["search", "--codes", str(codes), "--query-index", "0,1,2,199", "--k", "7",
                 "--out", str(by_rows)]) == 0
    model_queries = json.loads(by_model.read_text())["queries"]
    row_queries = json.loads(by_rows.read_text())["queries"]
    assert len(model_queries) == 200
    for entry, row in zip(row_queries, (0, 1, 2, 199)):
        assert model_queries[row]["results"] == entry["results"]
        assert model_queries[row]["index"] == entry["index"] and model_queries[row]["label"] == entry["label"]


def test_search_bad_inputs(codes_file, small_split, tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["search", "--codes", str(codes_file), "--query-index", "0,200", "--out", str(out)]) == 2
    assert "outside the query set" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.ones((2, BITS + 1)))
    assert main(["search", "--codes", str(codes_file), "--query-codes", str(tmp_path / "bad.npy"),
                 "--out", str(out)]) == 2
    assert "match neither 20 bits" in capsys.readouterr().err
    other = tmp_path / "other.h5"
    query = read_codes(codes_file, "query")
    write_codes(other, {"query": CodeSet(np.zeros((3, 4), np.uint8), query.labels[:3], query.index[:3], 32)})
    assert main(["search", "--codes", str(codes_file), "--query-codes", str(other), "--out", str(out)]) == 2
    assert "32-bit codes but the database has 20" in capsys.readouterr().err
    assert main(["search", "--codes", str(codes_file), "--model", str(tmp_path / "no_model"),
                 "--images", str(small_split), "--out", str(out)]) == 2
    assert "model folder not found" in capsys.readouterr().err
    assert not out.exists()

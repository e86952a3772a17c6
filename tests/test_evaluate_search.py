"""lthash search by image files end to end, and the codes file and validation scores behind it.

A real ImageFolder of scikit-learn digits (PNG files at 24 x 24, read at 16 x 16), split with a
validation group, a real LSH model fitted on it, and the codes file lthash encode writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lthash.cli import main
from lthash.evaluate.codes import code_set_names, read_codes
from lthash.evaluate.grid import grid_size
from lthash.io import read_attrs

BITS = 32
CLASSES = [f"digit_{d}" for d in range(10)]


def train(split: Path, out: Path, bits: int = BITS, seed: int = 0) -> Path:
    from lthash.config import validate_config
    from lthash.hashing.train import run_training

    params = validate_config({"dataset": {}, "hashing": {"method": "lsh", "bits": bits, "seed": seed}})["hashing"]
    run_training(split, "train", [], "real", None, out, params, "cpu")
    return out


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(dataset root, split file, model folder, codes file) of a digits ImageFolder."""
    from sklearn.datasets import load_digits

    from lthash.config import validate_config
    from lthash.data.split import run_split
    from lthash.hashing.encode import encode_split

    base = tmp_path_factory.mktemp("digits")
    bunch = load_digits()
    root = base / "root"
    for d in range(10):
        (root / CLASSES[d]).mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(bunch.target == d)[:45]):
            pixels = np.rint(bunch.images[index] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels).resize((24, 24), Image.Resampling.NEAREST).save(root / CLASSES[d] / f"{i:03d}.png")
    config = validate_config({"dataset": {"name": "imagefolder", "root": str(root), "image_size": 16},
                              "split": {"query_per_class": 5, "database_per_class": 30, "train_per_class": 20,
                                        "validation_per_class": 5, "longtail": {"imbalance_factor": 4}}})
    split = base / "split.h5"
    run_split(config["dataset"], config["split"], split, base / "split.json")
    model = train(split, base / "run")
    codes = base / "codes.h5"
    encode_split(model, split, codes)
    return root, split, model, codes


def test_codes_file_names_classes_sources_and_model(digits):
    root, split, model, codes = digits
    from lthash.hashing.encode import model_checksum

    attrs = read_attrs(codes)
    assert attrs["class_names"] == CLASSES and attrs["dataset"] == "imagefolder"
    assert attrs["root"] == str(root.resolve()) and attrs["input_shape"] == [16, 16, 1]
    assert attrs["model_sha256"] == model_checksum(model) and attrs["bits"] == BITS
    assert code_set_names(codes) == ["database", "query", "validation"]
    for group, size in (("database", 300), ("query", 50), ("validation", 50)):
        code_set = read_codes(codes, group)
        assert len(code_set) == size and len(code_set.sources) == size
        for source, label in zip(code_set.sources, code_set.labels):
            assert source.split("/")[0] == CLASSES[label] and (root / source).is_file()
    assert not set(read_codes(codes, "validation").sources) & set(read_codes(codes, "database").sources)


@pytest.fixture(scope="module")
def query_folder(digits, tmp_path_factory):
    """Queries: a database file copied as is, a colour PNG at 40 x 40 and a grey JPEG at
    13 x 21 in folders named by class, and one PNG in a folder that names no class."""
    root, _, _, codes = digits
    folder = tmp_path_factory.mktemp("queries")
    database = read_codes(codes, "database")
    first = database.sources[0]
    (folder / first.split("/")[0]).mkdir()
    shutil.copy(root / first, folder / first)
    seven = np.asarray(Image.open(root / "digit_7" / "040.png"))
    (folder / "digit_7").mkdir()
    Image.fromarray(np.stack([seven] * 3, axis=2)).resize((40, 40)).save(folder / "digit_7" / "colour.png")
    (folder / "Digit-3").mkdir()
    Image.open(root / "digit_3" / "041.png").resize((13, 21)).save(folder / "Digit-3" / "small.jpg", quality=95)
    (folder / "mine").mkdir()
    Image.open(root / "digit_5" / "042.png").save(folder / "mine" / "unknown.png")
    return folder, first


def test_search_a_folder_of_images(digits, query_folder, tmp_path, capsys):
    root, _, model, codes = digits
    folder, first = query_folder
    out, sheet = tmp_path / "found.json", tmp_path / "grid.png"
    assert main(["search", "--codes", str(codes), "--model", str(model), "--images", str(folder), "--k", "6",
                 "--json", str(out), "--grid", str(sheet)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    by_name = {Path(q["source"]).name: q for q in result["queries"]}
    assert sorted(by_name) == sorted([Path(first).name, "colour.png", "small.jpg", "unknown.png"])
    copy = by_name[Path(first).name]
    assert copy["class"] == first.split("/")[0] and copy["results"][0]["distance"] == 0
    assert str(root.resolve() / first) in [r["source"] for r in copy["results"] if r["distance"] == 0]
    assert by_name["small.jpg"]["class"] == "digit_3" and by_name["colour.png"]["class"] == "digit_7"
    unknown = by_name["unknown.png"]
    assert unknown["label"] is None and all("correct" not in r for r in unknown["results"])
    for query in result["queries"]:
        assert len(query["results"]) == 6
        for r in query["results"]:
            assert r["class"] == CLASSES[r["label"]] and Path(r["source"]).is_file()
            assert Path(r["source"]).parent.name == r["class"]
            if query["label"] is not None:
                assert r["correct"] == (r["label"] == query["label"])
    assert result["seconds"]["first_answer"] > 0 and result["seconds"]["per_query"] > 0
    assert "query 1/4" in printed and "first answer after" in printed and "digit_" in printed
    with Image.open(sheet) as picture:
        assert picture.size == grid_size(4, 6) == tuple(result["grid"]["size"])
        pixels = np.asarray(picture.convert("RGB"))
    assert ((pixels == (0, 160, 60)).all(axis=2)).any() or ((pixels == (215, 25, 28)).all(axis=2)).any()


def test_search_a_glob_and_rows_of_the_codes_file(digits, query_folder, tmp_path, capsys):
    root, _, model, codes = digits
    folder, _ = query_folder
    out = tmp_path / "glob.json"
    assert main(["search", "--codes", str(codes), "--model", str(model), "--images", str(folder / "*" / "*.jpg"),
                 "--k", "3", "--json", str(out)]) == 0
    queries = json.loads(out.read_text())["queries"]
    assert [Path(q["source"]).name for q in queries] == ["small.jpg"]
    rows = tmp_path / "rows.json"
    assert main(["search", "--codes", str(codes), "--query-index", "0,49", "--k", "3", "--json", str(rows),
                 "--grid", str(tmp_path / "rows.png")]) == 0
    query = read_codes(codes, "query")
    entries = json.loads(rows.read_text())["queries"]
    assert entries[1]["source"] == str(root.resolve() / query.sources[49])
    assert entries[1]["class"] == CLASSES[query.labels[49]]
    with Image.open(tmp_path / "rows.png") as picture:
        assert picture.size == grid_size(2, 3)
    capsys.readouterr()


def test_search_bad_inputs_name_the_file(digits, query_folder, small_split, tmp_path, capsys):
    _, split, model, codes = digits
    out = tmp_path / "s.json"

    def fails(*images: str, codes_file: Path = codes, model_dir: Path = model) -> str:
        assert main(["search", "--codes", str(codes_file), "--model", str(model_dir), "--images", *images,
                     "--json", str(out)]) == 2
        return capsys.readouterr().err

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert f"{broken}: cannot read the image" in fails(str(broken))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    assert f"folder {tmp_path / 'empty'} holds no image files" in fails(str(tmp_path / "empty"))
    assert f"no image files match {tmp_path}/*.jpeg" in fails(str(tmp_path / "*.jpeg"))
    assert f"query image not found: {tmp_path / 'nope.png'}" in fails(str(tmp_path / "nope.png"))
    image = str(query_folder[0] / "mine" / "unknown.png")
    other_bits = train(split, tmp_path / "run16", bits=16)
    message = fails(image, model_dir=other_bits)
    assert f"{codes} holds 32-bit codes but the model in {other_bits} gives 16 bits" in message
    other_seed = train(split, tmp_path / "run_seed", seed=1)
    assert f"{codes} was encoded with other weights than {other_seed}" in fails(image, model_dir=other_seed)
    from lthash.hashing.encode import encode_split

    fashion_codes = tmp_path / "fashion_codes.h5"
    encode_split(train(small_split, tmp_path / "fashion_run"), small_split, fashion_codes)
    message = fails(image, codes_file=fashion_codes)
    assert f"{fashion_codes} was encoded from fashion-mnist images of shape [28, 28, 1]" in message
    assert "another dataset" in message
    assert not out.exists()


def test_score_reports_validation_apart_from_the_queries(digits, tmp_path):
    from lthash.evaluate.codes import write_codes
    from lthash.evaluate.metrics import class_groups, score_codes

    _, split, _, codes = digits
    out = tmp_path / "metrics.json"
    params = json.dumps({"topk": [20], "many_shot": 15, "few_shot": 8})
    assert main(["score", "--codes", str(codes), "--split", str(split), "--out", str(out), "--params", params]) == 0
    metrics = json.loads(out.read_text())
    validation, database = read_codes(codes, "validation"), read_codes(codes, "database")
    scores = score_codes(validation.codes, database.codes, validation.labels, database.labels, [None, 20], bits=BITS)
    section = metrics["validation"]
    assert section["R"] == ["all", 20] and section["ties"] == "index"
    assert section["n_query"] == 50 and section["n_database"] == 300
    assert section["R_effective"] == {"all": 300, "20": 20}
    assert section["map"] == {"all": pytest.approx(scores.map(None)), "20": pytest.approx(scores.map(20))}
    counts = read_attrs(split, "train")["counts"]
    groups = class_groups(counts, 15, 8)
    for name in ("head", "medium", "tail"):
        members = np.isin(validation.labels, [c for c, g in enumerate(groups) if g == name])
        expected = scores.ap(None)[members].mean() if members.any() else None
        assert section[f"map_{name}"]["all"] == (pytest.approx(expected) if expected is not None else None)
    without = tmp_path / "no_validation.h5"
    attrs = {k: v for k, v in read_attrs(codes).items() if k not in ("bits", "complete")}
    write_codes(without, {name: read_codes(codes, name) for name in ("database", "query")}, attrs)
    out2 = tmp_path / "metrics2.json"
    assert main(["score", "--codes", str(without), "--split", str(split), "--out", str(out2), "--params", params]) == 0
    metrics2 = json.loads(out2.read_text())
    assert metrics2["validation"] is None
    assert metrics2["results"] == metrics["results"] and metrics2["per_class"] == metrics["per_class"]


def test_small_search_in_numpy_equals_the_kernel(monkeypatch):
    """Searches of few (query, item) pairs run in numpy, larger ones in the numba kernel: same
    rows and distances, ties by row (6-bit codes: ties everywhere)."""
    from lthash.evaluate import search
    from lthash.evaluate.codes import pack_codes

    rng = np.random.default_rng(0)
    for bits in (6, 64, 70):
        db = pack_codes(rng.choice([-1, 1], (500, bits)))
        queries = pack_codes(rng.choice([-1, 1], (9, bits)))
        by_numpy = search.search_codes(queries, db, bits, 40)
        with monkeypatch.context() as patch:
            patch.setattr(search, "NUMPY_PAIRS", 0)
            by_kernel = search.search_codes(queries, db, bits, 40)
        np.testing.assert_array_equal(by_numpy[0], by_kernel[0])
        np.testing.assert_array_equal(by_numpy[1], by_kernel[1])
        dist = np.unpackbits(queries[:, None] ^ db[None], axis=2)[:, :, :bits].sum(axis=2)
        np.testing.assert_array_equal(by_kernel[0], np.argsort(dist, axis=1, kind="stable")[:, :40])


def test_query_images_take_the_model_input_shape(tmp_path):
    """Grey or colour, any size, into the model's channels and size: a square input through the
    split stage's reader (shorter side, centre crop), a non-square one scaled to cover it."""
    from lthash.data.images import decode_image
    from lthash.evaluate.query_images import class_from_folder, load_query_image

    rng = np.random.default_rng(0)
    colour = tmp_path / "colour.png"
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(colour)
    grey = tmp_path / "grey.jpg"
    Image.fromarray(rng.integers(0, 256, (41, 17), dtype=np.uint8)).save(grey)
    np.testing.assert_array_equal(load_query_image(colour, (16, 16, 1)), decode_image(colour, 1, 16))
    assert load_query_image(grey, (16, 16, 3)).shape == (16, 16, 3)
    wide = load_query_image(colour, (8, 24, 3))
    assert wide.shape == (8, 24, 3) and wide.dtype == np.uint8
    stripes = tmp_path / "stripes.png"
    Image.fromarray(np.repeat(np.arange(0, 250, 10, dtype=np.uint8)[None, :], 10, axis=0)).save(stripes)
    assert load_query_image(stripes, (10, 25, 1))[..., 0].tolist() == [list(range(0, 250, 10))] * 10
    assert class_from_folder(tmp_path / "t-shirt_top" / "a.png", ["T-shirt/top", "Trouser"]) == 0
    assert class_from_folder(tmp_path / "Trouser" / "a.png", ["T-shirt/top", "Trouser"]) == 1
    assert class_from_folder(tmp_path / "misc" / "a.png", ["T-shirt/top", "Trouser"]) is None

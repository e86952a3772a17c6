"""lthash search says how far an answer is: the database's nearest-neighbour profile, the
out-of-distribution flag on real foreign images, and search by run folder.

A real OrthoHash CNN trained for a few epochs on the small Fashion-MNIST split (balanced
training group), its codes file as lthash encode writes it, and query images: the split's
own query images, inverted ones, uniform noise (lthash.testing.foreign).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lthash.cli import main
from lthash.evaluate.codes import read_codes, unpack_codes
from lthash.evaluate.neighbours import Reference, database_profile, hamming_leave_one_out, profile_path
from lthash.io import ImageSet, read_image_set, write_image_sets
from lthash.testing.foreign import foreign_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fashion_run(small_split, tmp_path_factory):
    """(model folder, codes file) of a small trained OrthoHash CNN on the small split."""
    from lthash.hashing.encode import encode_split
    from lthash.hashing.train import run_training
    from lthash.workflow import stage_config

    base = tmp_path_factory.mktemp("fashion")
    spec = {"method": "orthohash", "bits": 16, "seed": 0, "cnn": {"width": 8},
            "train": {"epochs": 3, "batch_size": 32, "lr": 0.003, "augment": False}}
    model = base / "model"
    run_training(small_split, "train_balanced", [], "real", None, model,
                 stage_config("train", json.dumps(spec))["hashing"], "cpu")
    codes = base / "codes.h5"
    encode_split(model, small_split, codes)
    return model, codes


def image_file(path: Path, images: np.ndarray) -> Path:
    write_image_sets(path, {"query": ImageSet(images=images, labels=np.full(len(images), -1, np.int64),
                                              index=np.arange(len(images)))})
    return path


def test_threshold_is_the_quantile_of_the_reference():
    reference = Reference(np.array([0] * 90 + [1] * 8 + [3, 5]), quantile=0.99)
    assert reference.threshold == 3  # 99 of 100 at or below 3
    assert reference.closer(np.array([0, 1, 3, 4, 6])).tolist() == [0.0, 0.9, 0.98, 0.99, 1.0]
    assert reference.beyond(np.array([3, 4])).tolist() == [False, True]
    assert Reference(np.arange(100), quantile=0.5).threshold == 49


def test_hamming_profile_is_each_items_nearest_other_item(fashion_run, tmp_path):
    _, codes = fashion_run
    copy = tmp_path / "codes.h5"
    shutil.copy(codes, copy)
    database = read_codes(copy, "database")
    profile = database_profile(copy, database.codes, database.bits)
    bits = unpack_codes(database.codes, database.bits)
    distance = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    np.fill_diagonal(distance, database.bits + 1)
    np.testing.assert_array_equal(profile.hamming.values, np.sort(distance.min(axis=1)))
    assert profile.made and profile.activations is None and "no model" in profile.activations_missing
    # a large database: a sample of its items, each still against all the others
    sampled = hamming_leave_one_out(database.codes, database.bits, most=50)
    rows = np.unique(np.linspace(0, len(database.codes) - 1, 50).round().astype(int))
    np.testing.assert_array_equal(sampled, distance.min(axis=1)[rows])


def test_foreign_images_are_flagged_and_in_domain_ones_are_not(fashion_run, small_split, tmp_path, capsys):
    model, codes = fashion_run
    query = read_image_set(small_split, "query").images
    kinds = {"inverted": foreign_images("inverted", query.shape[1:], 200, in_domain=query),
             "noise": foreign_images("noise", query.shape[1:], 200)}
    shares = {}
    for name, path in [("in-domain", small_split)] + [(k, image_file(tmp_path / f"{k}.h5", v))
                                                      for k, v in kinds.items()]:
        out = tmp_path / f"{name}.json"
        assert main(["search", "--codes", str(codes), "--model", str(model), "--images", str(path), "--k", "3",
                     "--json", str(out)]) == 0
        result = json.loads(out.read_text())
        shares[name] = np.mean([q["out_of_distribution"] for q in result["queries"]])
        printed = capsys.readouterr().out
        assert printed.count("OUT OF DISTRIBUTION") == sum(q["out_of_distribution"] for q in result["queries"])
    assert shares["in-domain"] <= 0.05 and shares["inverted"] >= 0.9 and shares["noise"] >= 0.9, shares
    test = result["out_of_distribution"]
    assert test["quantile"] == 0.99 and "threshold" in test["hamming"] and "threshold" in test["activations"]
    # every answer says where its distance falls among the database's own nearest-neighbour distances
    stored = np.load(profile_path(codes))
    loo = stored["hamming"]
    for q in result["queries"]:
        assert q["ood"]["nearest_distance"] == q["results"][0]["distance"]
        for r in q["results"]:
            assert r["closer"] == pytest.approx(np.mean(loo < r["distance"]), abs=1e-4)
        flagged = q["ood"]["hamming_beyond"] or q["ood"]["activation_beyond"]
        assert q["out_of_distribution"] == flagged
        assert q["ood"]["hamming_beyond"] == (q["ood"]["nearest_distance"] > test["hamming"]["threshold"])


def test_the_contact_sheet_marks_the_flagged_query(fashion_run, small_split, tmp_path):
    from lthash.evaluate.grid import CAPTION, FLAGGED, PAD, TILE

    model, codes = fashion_run
    folder = tmp_path / "queries"
    folder.mkdir()
    query = read_image_set(small_split, "query").images
    Image.fromarray(query[0, ..., 0]).save(folder / "a_clothing.png")
    Image.fromarray(foreign_images("noise", query.shape[1:], 1)[0, ..., 0]).save(folder / "b_noise.png")
    out, sheet = tmp_path / "found.json", tmp_path / "sheet.png"
    assert main(["search", "--codes", str(codes), "--model", str(model), "--images", str(folder), "--k", "2",
                 "--json", str(out), "--grid", str(sheet)]) == 0
    flags = {Path(q["source"]).name: q["out_of_distribution"] for q in json.loads(out.read_text())["queries"]}
    assert flags == {"a_clothing.png": False, "b_noise.png": True}
    pixels = np.asarray(Image.open(sheet).convert("RGB"))
    tops = [PAD + r * (TILE + CAPTION + PAD) for r in range(2)]
    query_tiles = [pixels[top: top + TILE, PAD: PAD + TILE] for top in tops]
    orange = [bool((tile == FLAGGED).all(axis=2).any()) for tile in query_tiles]
    assert orange == [False, True]


def test_the_profile_is_made_once_per_codes_file(fashion_run, small_split, tmp_path):
    from lthash.evaluate.codes import write_codes
    from lthash.io import read_attrs

    model, codes = fashion_run
    copy = tmp_path / "codes.h5"
    shutil.copy(codes, copy)
    database = read_codes(copy, "database")

    def pictures(rows):
        return list(read_image_set(small_split, "database").images[rows])

    made = database_profile(copy, database.codes, database.bits, model=model, pictures=pictures)
    stored = profile_path(copy)
    assert made.made and made.activations is not None and stored.exists()
    mtime = stored.stat().st_mtime_ns
    again = database_profile(copy, database.codes, database.bits, model=model, pictures=pictures, quantile=0.9)
    assert not again.made and stored.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.hamming.values, made.hamming.values)
    assert again.hamming.quantile == 0.9 and again.activations.threshold <= made.activations.threshold
    # another codes file under the same name (another database): a new profile
    attrs = {k: v for k, v in read_attrs(copy).items() if k not in ("bits", "complete")}
    half = read_codes(copy, "database")
    half.codes, half.labels, half.index = half.codes[::2], half.labels[::2], half.index[::2]
    write_codes(copy, {"database": half, "query": read_codes(codes, "query")}, attrs)
    remade = database_profile(copy, half.codes, half.bits, model=model, pictures=pictures)
    assert remade.made and len(remade.hamming.values) == len(half.codes)
    stored.write_bytes(b"not a profile")
    assert database_profile(copy, half.codes, half.bits).made


def test_encode_writes_the_profile_the_search_then_reads(fashion_run, small_split, tmp_path):
    """The workflow's encode job makes the profile (lthash encode --profile), at the path the
    encode rule declares, so a run's first search does not."""
    from lthash.workflow import RUN_CODES, RUN_PROFILE

    model, _ = fashion_run
    codes = tmp_path / RUN_CODES
    assert main(["encode", "--model", str(model), "--split", str(small_split), "--out", str(codes), "--profile",
                 "--device", "cpu"]) == 0
    assert profile_path(codes) == tmp_path / RUN_PROFILE and profile_path(codes).exists()
    database = read_codes(codes, "database")
    read = database_profile(codes, database.codes, database.bits, model=model)
    assert not read.made and read.activations is not None and len(read.activation_reference) == len(database)


def test_encoding_with_the_profile_is_one_pass_and_gives_the_two_pass_profile(fashion_run, small_split, tmp_path):
    """encode --profile takes the activation statistics from the encoding forward pass: the codes
    and the stored profile equal those of encoding, then a separate pass over the database."""
    from lthash.hashing.encode import activation_statistics, encode_array, encode_with_statistics

    model, _ = fashion_run
    images = read_image_set(small_split, "database").images
    codes, statistics = encode_with_statistics(model, images, batch_size=64)
    np.testing.assert_array_equal(codes, encode_array(model, images, batch_size=64))
    np.testing.assert_array_equal(statistics, activation_statistics(model, images, batch_size=64))
    assert statistics.shape[0] == len(images) and statistics.shape[1] > 0
    one_pass = tmp_path / "one" / "codes.h5"
    one_pass.parent.mkdir()
    assert main(["encode", "--model", str(model), "--split", str(small_split), "--out", str(one_pass), "--profile",
                 "--device", "cpu"]) == 0
    two_pass = tmp_path / "two" / "codes.h5"
    two_pass.parent.mkdir()
    shutil.copy(one_pass, two_pass)
    database = read_codes(two_pass, "database")
    database_profile(two_pass, database.codes, database.bits, model=model,
                     pictures=lambda rows: list(images[rows]))
    first, second = np.load(profile_path(one_pass)), np.load(profile_path(two_pass))
    assert set(first.files) == set(second.files)
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_search_by_run_folder_picks_and_names_the_seed(fashion_run, small_split, tmp_path, capsys):
    model, codes = fashion_run
    run = tmp_path / "results" / "runs" / "longtail" / "orthohash-cnn-16"
    for seed in (0, 2):
        (run / f"seed{seed}").mkdir(parents=True)
        shutil.copytree(model, run / f"seed{seed}" / "model")
        shutil.copy(codes, run / f"seed{seed}" / "codes.h5")
    (run / "seed3").mkdir()  # a seed still training: no codes yet
    image = tmp_path / "query.png"
    Image.fromarray(read_image_set(small_split, "query").images[0, ..., 0]).save(image)
    out = tmp_path / "answer.json"
    assert main(["search", "--run", str(run), "--images", str(image), "--k", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"run {run}: seed 0 ({run / 'seed0'}; seeds 0, 2, 3 here, --seed N picks another)" in printed
    assert json.loads(out.read_text())["run"] == {"folder": str(run), "seed": 0, "seeds": [0, 2, 3]}
    assert main(["search", "--run", str(run), "--seed", "2", "--images", str(image), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["database"] == str(run / "seed2" / "codes.h5")
    capsys.readouterr()

    def fails(*args: str) -> str:
        assert main(["search", *args]) == 2
        return capsys.readouterr().err

    assert f"{run} has no seed 1: its seeds are 0, 2, 3" in fails("--run", str(run), "--seed", "1",
                                                                  "--images", str(image))
    message = fails("--run", str(run), "--seed", "3", "--images", str(image))
    assert f"{run / 'seed3'} is not a finished run: model and codes.h5 missing" in message
    wrong = run.parent / "orthohash-cnn-64"
    message = fails("--run", str(wrong), "--images", str(image))
    assert f"run folder not found: {wrong}; {run.parent} holds: orthohash-cnn-16/" in message
    # the path of the codes file before runs had seeds: the error names the seeds and the --run to use
    message = fails("--codes", str(run / "codes.h5"), "--model", str(run / "model"), "--images", str(image))
    assert f"missing file: {run / 'codes.h5'}; {run} holds: seed0/, seed2/, seed3/" in message
    assert f"(a run folder: lthash search --run {run} reads" in message
    assert f"{run.parent} is not a run folder" in fails("--run", str(run.parent), "--images", str(image))
    assert "--run brings its own model" in fails("--run", str(run), "--model", str(model), "--images", str(image))

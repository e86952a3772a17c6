"""Bad data inputs the stage groups' own tests do not cover yet (see the table in issue 7's
closing note for the ones they do): a one-class dataset and an empty list through the CLI, a
skipped corrupt image counted in the summary, labels out of range in a shard and a codes file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lthash.cli import main
from lthash.evaluate.codes import CodeSet, write_codes
from lthash.io import ImageSet, write_image_sets


def _imagefolder(root: Path, classes: dict[str, int]) -> None:
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("L", (8, 8), 20 * c + i).save(root / name / f"img{i:02d}.png")


def _split(tmp_path: Path, dataset: dict, split: dict | None = None) -> tuple[int, Path]:
    out = tmp_path / "out" / "split.h5"
    params = json.dumps({"dataset": dataset, "split": split or {"query_per_class": 2, "train_per_class": 3,
                                                                "longtail": {"imbalance_factor": 2}}})
    return main(["split", "--out", str(out), "--params", params, "--threads", "1"]), out


def _nothing_in(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


def test_one_class_dataset_exits_2_naming_the_class(tmp_path, capsys):
    _imagefolder(tmp_path / "data", {"lonely": 8})
    code, out = _split(tmp_path, {"name": "imagefolder", "root": str(tmp_path / "data")})
    err = capsys.readouterr().err
    assert code == 2 and "single class ('lonely')" in err and err.count("\n") == 1
    assert _nothing_in(out.parent)


def test_empty_list_file_exits_2_naming_it(tmp_path, capsys):
    root = tmp_path / "data"
    _imagefolder(root / "img", {"a": 3, "b": 3})
    (root / "database.txt").write_text("img/a/img00.png 0\nimg/b/img00.png 1\n")
    (root / "test.txt").write_text("\n\n")
    (root / "train.txt").write_text("img/a/img00.png 0\n")
    code, out = _split(tmp_path, {"name": "list", "root": str(root)}, {"protocol": "lists"})
    err = capsys.readouterr().err
    assert code == 2 and f"list file {root / 'test.txt'} lists no images" in err
    assert _nothing_in(out.parent)


def test_skipped_corrupt_images_are_counted_in_the_summary(tmp_path):
    _imagefolder(tmp_path / "data", {"a": 8, "b": 8})
    (tmp_path / "data" / "b" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, out = _split(tmp_path, {"name": "imagefolder", "root": str(tmp_path / "data"), "on_corrupt": "skip"})
    assert code == 0
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["skipped"] == ["b/zz_broken.png"]
    assert sum(summary["counts"]["query"]) + sum(summary["counts"]["database"]) == 16


@pytest.mark.parametrize("label", [10, -1])
def test_shard_labels_out_of_range_are_refused_by_train(small_split, tmp_path, capsys, label):
    shard = tmp_path / "shard.h5"
    images = np.zeros((4, 28, 28, 1), np.uint8)
    write_image_sets(shard, {"synthetic": ImageSet(images=images, labels=np.full(4, label), index=np.arange(4))})
    out = tmp_path / "run"
    code = main(["train", "--split", str(small_split), "--synthetic", str(shard), "--mode", "synthetic",
                 "--out", str(out), "--device", "cpu", "--params", '{"method": "orthohash", "bits": 16}'])
    assert code == 2
    assert f"synthetic shard {shard}: labels outside 0..9" in capsys.readouterr().err
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize(("label", "message"), [(12, "labels reach class 12 but the training counts list 10"),
                                               (-1, "class indices must be non-negative")])
def test_codes_labels_out_of_range_are_refused_by_score(tmp_path, capsys, label, message):
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 10
    labels[5] = label
    codes = np.packbits(rng.integers(0, 2, (40, 16)), axis=1)
    path = tmp_path / "codes.h5"
    write_codes(path, {name: CodeSet(codes=codes, labels=labels, index=np.arange(40), bits=16)
                       for name in ("database", "query")})
    out = tmp_path / "metrics.json"
    code = main(["score", "--codes", str(path), "--counts", ",".join(["5"] * 10), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()

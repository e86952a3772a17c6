"""Dataset readers on real files (Fashion-MNIST, scikit-learn digits) and small generated ones
(CIFAR python/binary archives and folders, an ImageFolder tree, HashNet-style list files)."""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import FASHION_CLASSES, read_idx_gz
from lthash.cli import main
from lthash.data.lazy import SplitImages
from lthash.data.readers import load_dataset
from lthash.data.safe_pickle import safe_loads
from lthash.errors import LthashError
from lthash.io import read_attrs, read_image_set


# --- generated inputs --------------------------------------------------------------------------

def _cifar_arrays(num_classes: int, per_class: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    labels = [c for c in range(num_classes) for _ in range(per_class)]
    return rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8), labels


def write_cifar(root: Path, name: str, version: str, archive: bool) -> tuple[np.ndarray, np.ndarray]:
    """A tiny CIFAR-10/100 in the official layout; returns the expected pooled HWC images and labels."""
    classes = 10 if name == "cifar10" else 100
    folder = {("cifar10", "python"): "cifar-10-batches-py", ("cifar10", "binary"): "cifar-10-batches-bin",
              ("cifar100", "python"): "cifar-100-python", ("cifar100", "binary"): "cifar-100-binary"}[(name, version)]
    names = [f"thing{c}" for c in range(classes)]
    if name == "cifar10":
        batches = [(f"data_batch_{i}", i) for i in range(1, 6)] + [("test_batch", 9)]
    else:
        batches = [("train", 1), ("test", 9)]
    files: dict[str, bytes] = {}
    all_data, all_labels = [], []
    for member, seed in batches:
        data, labels = _cifar_arrays(classes, 1, seed)
        all_data.append(data)
        all_labels += labels
        if version == "python":
            key = "labels" if name == "cifar10" else "fine_labels"
            batch = {b"data": data, key.encode(): labels, b"batch_label": member.encode()}
            files[member] = pickle.dumps(batch, protocol=2)
        else:
            label_bytes = np.array(labels, dtype=np.uint8)[:, None]
            prefix = label_bytes if name == "cifar10" else np.hstack([label_bytes // 5, label_bytes])
            files[member + ".bin"] = np.hstack([prefix, data]).tobytes()
    if version == "python":
        meta_key, meta_name = ("label_names", "batches.meta") if name == "cifar10" else ("fine_label_names", "meta")
        files[meta_name] = pickle.dumps({meta_key.encode(): [n.encode() for n in names]}, protocol=2)
    else:
        meta_name = "batches.meta.txt" if name == "cifar10" else "fine_label_names.txt"
        files[meta_name] = ("\n".join(names) + "\n").encode()
    root.mkdir(parents=True, exist_ok=True)
    if archive:
        with tarfile.open(root / f"{name}.tar.gz", "w:gz") as tar:
            for member, content in files.items():
                info = tarfile.TarInfo(f"{folder}/{member}")
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    else:
        (root / folder).mkdir()
        for member, content in files.items():
            (root / folder / member).write_bytes(content)
    images = np.concatenate(all_data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.array(all_labels)


def write_png(path: Path, value: int, size: tuple[int, int] = (12, 10), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=(value, 255 - value, 7) if mode == "RGB" else value).save(path)


def write_imagefolder(root: Path, classes: dict[str, int]) -> None:
    for c, (name, count) in enumerate(classes.items()):
        for i in range(count):
            write_png(root / name / f"img{i:02d}.png", 20 * c + i)


def write_lists(root: Path, entries: dict[str, list[tuple[str, str]]]) -> None:
    for split, rows in entries.items():
        (root / f"{split}.txt").write_text("".join(f"{path} {label}\n" for path, label in rows))


def onehot(index: int, width: int) -> str:
    return " ".join("1" if i == index else "0" for i in range(width))


def run_split_cli(tmp_path: Path, params: str) -> tuple[int, Path]:
    out = tmp_path / "out" / "split.h5"
    code = main(["split", "--out", str(out), "--summary", str(out.with_suffix(".json")),
                 "--figure", str(out.parent / "fig.png"), "--params", params, "--threads", "1"])
    return code, out


def assert_no_output(out: Path) -> None:
    folder = out.parent
    assert not folder.exists() or not any(folder.iterdir()), sorted(os.listdir(folder))


# --- Fashion-MNIST, digits --------------------------------------------------------------------

def test_fashion_mnist_pools_train_and_test(fashion_mnist_root):
    data = load_dataset({"name": "fashion-mnist", "root": fashion_mnist_root})
    assert data.images.shape == (70000, 28, 28, 1) and data.images.dtype == np.uint8
    assert data.class_names == FASHION_CLASSES
    test_images = read_idx_gz(os.path.join(fashion_mnist_root, "t10k-images-idx3-ubyte.gz"))
    test_labels = read_idx_gz(os.path.join(fashion_mnist_root, "t10k-labels-idx1-ubyte.gz"))
    assert np.array_equal(data.official["test"], np.arange(60000, 70000))
    assert np.array_equal(data.images[60000:, ..., 0], test_images)
    assert np.array_equal(data.labels[60000:], test_labels)


def test_fashion_mnist_missing_or_corrupt_file_is_named(tmp_path):
    with pytest.raises(LthashError, match="train-images-idx3-ubyte"):
        load_dataset({"name": "fashion-mnist", "root": str(tmp_path)})
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(LthashError, match="train-images-idx3-ubyte.gz"):
        load_dataset({"name": "fashion-mnist", "root": str(tmp_path)})


def test_digits_scaled_to_uint8_and_resized():
    data = load_dataset({"name": "digits"})
    assert data.images.shape == (1797, 8, 8, 1) and data.images.max() == 255
    assert data.class_names == [str(d) for d in range(10)] and data.official is None
    resized = load_dataset({"name": "digits", "image_size": 16})
    assert resized.images.shape == (1797, 16, 16, 1)


# --- CIFAR ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("version", ["python", "binary"])
@pytest.mark.parametrize("archive", [True, False])
def test_cifar_versions_and_layouts(tmp_path, name, version, archive):
    images, labels = write_cifar(tmp_path, name, version, archive)
    root = tmp_path / f"{name}.tar.gz" if archive else tmp_path
    data = load_dataset({"name": name, "root": str(root)})
    assert data.images.shape == images.shape and data.images.shape[1:] == (32, 32, 3)
    assert np.array_equal(data.images, images)
    assert np.array_equal(data.labels, labels)
    assert len(data.class_names) == (10 if name == "cifar10" else 100) and data.class_names[3] == "thing3"
    classes = len(data.class_names)
    assert np.array_equal(data.official["test"], np.arange(len(labels) - classes, len(labels)))


def test_cifar_pickle_with_a_global_is_refused(tmp_path):
    write_cifar(tmp_path, "cifar10", "python", archive=False)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(LthashError, match=r"data_batch_3.*refused global (posix|os)\.system"):
        load_dataset({"name": "cifar10", "root": str(tmp_path)})


def test_safe_unpickler_reads_numpy_arrays_of_every_protocol():
    arrays = {"u8": np.arange(12, dtype=np.uint8).reshape(3, 4), "be": np.arange(3, dtype=">i4"),
              "f": np.asfortranarray(np.arange(6.0).reshape(2, 3))}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        loaded = safe_loads(pickle.dumps(arrays, protocol=protocol), "x")
        for key, value in arrays.items():
            assert np.array_equal(loaded[key], value)
    with pytest.raises(LthashError, match="only numeric"):
        safe_loads(pickle.dumps(np.array(["a"], dtype="U1")), "strings")
    with pytest.raises(LthashError, match="refused global"):
        safe_loads(pickle.dumps(Path("/etc")), "path")


def test_safe_unpickler_reads_a_python2_cifar_style_pickle():
    # The official CIFAR batches were written by Python 2's cPickle: str opcodes, not bytes.
    data = bytes(range(6))
    python2 = (b"\x80\x02}q\x00(U\x04data"
               b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87R"
               b"(K\x01K\x02K\x03\x86cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R"
               b"(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
               b"\x89U\x06" + data + b"tb"
               b"U\x06labels](K\x01K\x02eu.")
    loaded = safe_loads(python2, "py2")
    assert loaded["labels"] == [1, 2]
    assert loaded["data"].dtype == np.uint8 and loaded["data"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_cifar_truncated_binary_batch_is_named(tmp_path):
    write_cifar(tmp_path, "cifar10", "binary", archive=False)
    batch = tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin"
    batch.write_bytes(batch.read_bytes()[:-5])
    with pytest.raises(LthashError, match="data_batch_2.bin"):
        load_dataset({"name": "cifar10", "root": str(tmp_path)})


def test_cifar_needs_root_and_data(tmp_path):
    with pytest.raises(LthashError, match="dataset.root"):
        load_dataset({"name": "cifar10", "root": None})
    with pytest.raises(LthashError, match="no cifar100 data"):
        load_dataset({"name": "cifar100", "root": str(tmp_path)})


# --- ImageFolder -----------------------------------------------------------------------------

def test_imagefolder_reads_sorted_classes(tmp_path):
    write_imagefolder(tmp_path, {"b_silk": 3, "a_silk": 2})
    (tmp_path / "a_silk" / "notes.txt").write_text("not an image")
    data = load_dataset({"name": "imagefolder", "root": str(tmp_path), "on_corrupt": "fail"})
    assert data.class_names == ["a_silk", "b_silk"]
    assert data.images.shape == (5, 10, 12, 3)
    assert data.labels.tolist() == [0, 0, 1, 1, 1]
    assert data.images[2, 0, 0].tolist() == [0, 255, 7]  # b_silk/img00: first written class


def test_imagefolder_grey_stays_one_channel_and_resizes(tmp_path):
    for c in ("x", "y"):
        for i in range(2):
            write_png(tmp_path / c / f"{i}.png", 100 + i, size=(30, 20), mode="L")
    data = load_dataset({"name": "imagefolder", "root": str(tmp_path), "image_size": 16})
    assert data.images.shape == (4, 16, 16, 1)
    assert int(data.images[1, 8, 8, 0]) == 101


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    write_imagefolder(tmp_path, {"a": 2, "b": 2})
    write_png(tmp_path / "b" / "big.png", 3, size=(40, 40))
    with pytest.raises(LthashError, match=r"big.png is 40x40.*dataset.image_size"):
        load_dataset({"name": "imagefolder", "root": str(tmp_path)})


def test_imagefolder_corrupt_image_fails_or_is_skipped(tmp_path):
    write_imagefolder(tmp_path, {"a": 2, "b": 3})
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(LthashError, match=r"1 unreadable image\(s\): .*b/broken.png"):
        load_dataset({"name": "imagefolder", "root": str(tmp_path), "on_corrupt": "fail"})
    data = load_dataset({"name": "imagefolder", "root": str(tmp_path), "on_corrupt": "skip"})
    assert len(data) == 5 and data.skipped == ["b/broken.png"]


def test_imagefolder_truncated_image_is_caught_when_decoding(tmp_path):
    write_imagefolder(tmp_path, {"a": 2, "b": 2})
    noise = np.random.default_rng(0).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG")
    (tmp_path / "b" / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(LthashError, match="cut.jpg"):
        load_dataset({"name": "imagefolder", "root": str(tmp_path), "image_size": 8, "on_corrupt": "fail"})


def test_imagefolder_empty_class_is_named(tmp_path):
    write_imagefolder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "empty_one").mkdir()
    with pytest.raises(LthashError, match="class 'empty_one' is empty"):
        load_dataset({"name": "imagefolder", "root": str(tmp_path)})


def test_imagefolder_class_empty_after_skipping_is_named(tmp_path):
    write_imagefolder(tmp_path, {"a": 2})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.png").write_bytes(b"nope")
    with pytest.raises(LthashError, match="class 'b' is empty"):
        load_dataset({"name": "imagefolder", "root": str(tmp_path), "on_corrupt": "skip"})


def test_single_class_is_an_error(tmp_path):
    write_imagefolder(tmp_path, {"only": 3})
    with pytest.raises(LthashError, match="single class \\('only'\\)"):
        load_dataset({"name": "imagefolder", "root": str(tmp_path)})


# --- list files ------------------------------------------------------------------------------

def _list_dataset(root: Path, width: int = 3) -> None:
    for c in range(width):
        for i in range(4):
            write_png(root / "img" / f"c{c}_{i}.png", 30 * c + i)
    database = [(f"img/c{c}_{i}.png", onehot(c, width)) for c in range(width) for i in range(3)]
    test = [(f"img/c{c}_3.png", onehot(c, width)) for c in range(width)]
    train = [(f"./img/c{c}_{i}.png", onehot(c, width)) for c in range(width) for i in range(2)]
    write_lists(root, {"database": database, "test": test, "train": train})


def test_list_reader_pools_lists(tmp_path):
    _list_dataset(tmp_path)
    data = load_dataset({"name": "list", "root": str(tmp_path), "list_files": {}})
    assert len(data) == 12 and data.class_names == ["class_000", "class_001", "class_002"]
    assert data.lists["database"].tolist() == list(range(9))
    assert data.lists["test"].tolist() == [9, 10, 11]
    assert set(data.lists["train"]) <= set(data.lists["database"])
    assert data.images.shape == (12, 10, 12, 3)
    named = load_dataset({"name": "list", "root": str(tmp_path), "class_names": ["x", "y", "z"]})
    assert named.class_names == ["x", "y", "z"]


def test_list_class_index_labels(tmp_path):
    _list_dataset(tmp_path, width=2)
    for split in ("database", "test", "train"):
        text = (tmp_path / f"{split}.txt").read_text().replace(" 1 0\n", " 0\n").replace(" 0 1\n", " 1\n")
        (tmp_path / f"{split}.txt").write_text(text)
    data = load_dataset({"name": "list", "root": str(tmp_path)})
    assert data.class_names == ["class_000", "class_001"] and sorted(set(data.labels.tolist())) == [0, 1]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("img/nothere.png 1 0 0", r"test.txt:4: .*img/nothere.png"),
        ("../x.png 1 0 0", r"test.txt:4: image path '../x.png' escapes the dataset root"),
        ("img/c0_0.png 0 2 0", r"test.txt:4: label value 2 out of range"),
        ("img/c0_0.png 1 0", r"test.txt:4: label vector has 2 values, expected 3"),
        ("img/c0_0.png 0 0 0", r"test.txt:4: label vector has no class set"),
        ("img/c0_0.png 1 1 0", r"test.txt:4: .*multi-label"),
        ("img/c0_0.png", r"test.txt:4: no label"),
    ],
)
def test_list_bad_lines_are_named(tmp_path, bad_line, message):
    _list_dataset(tmp_path)
    write_png(tmp_path.parent / "x.png", 1)  # exists, but outside the root
    with open(tmp_path / "test.txt", "a") as handle:
        handle.write(bad_line + "\n")
    with pytest.raises(LthashError, match=message):
        load_dataset({"name": "list", "root": str(tmp_path)})


def test_list_class_index_out_of_range_of_class_names(tmp_path):
    _list_dataset(tmp_path, width=2)
    (tmp_path / "train.txt").write_text("img/c0_0.png 5\n")
    with pytest.raises(LthashError, match=r"train.txt:1: class index 5 out of range \(0..1\)"):
        load_dataset({"name": "list", "root": str(tmp_path), "class_names": ["a", "b"]})


def test_list_missing_list_file_is_named(tmp_path):
    _list_dataset(tmp_path)
    (tmp_path / "database.txt").unlink()
    with pytest.raises(LthashError, match="database.txt"):
        load_dataset({"name": "list", "root": str(tmp_path)})


# --- store paths and the lazy reader ----------------------------------------------------------

def test_store_paths_split_reads_lazily_like_pixels(tmp_path):
    _list_dataset(tmp_path / "data")
    split = {"protocol": "lists", "longtail": {"profile": "zipf", "imbalance_factor": 2}}
    params = '{"dataset": {"name": "list", "root": "%s", "image_size": 8, "store": "%s"}, "split": %s}'
    code_paths, out_paths = run_split_cli(tmp_path / "p", params % (tmp_path / "data", "paths", json.dumps(split)))
    code_pixels, out_pixels = run_split_cli(tmp_path / "q", params % (tmp_path / "data", "pixels", json.dumps(split)))
    assert code_paths == 0 and code_pixels == 0
    assert read_attrs(out_paths)["root"] == str((tmp_path / "data").resolve())
    for group in ("train", "train_balanced", "database", "query"):
        lazy = read_image_set(out_paths, group, load_images=True)
        assert lazy.images is None and all(p.startswith("img/") for p in lazy.paths)
        pixels = read_image_set(out_pixels, group)
        assert np.array_equal(SplitImages(out_paths, group)[:], pixels.images)
        assert np.array_equal(SplitImages(out_pixels, group)[:], pixels.images)
    assert read_image_set(out_paths, "query").labels.tolist() == [0, 1, 2]


def test_store_paths_needs_image_size_and_a_file_dataset():
    with pytest.raises(LthashError, match="dataset.image_size"):
        load_dataset({"name": "imagefolder", "root": "/", "store": "paths", "image_size": None})
    with pytest.raises(LthashError, match="dataset.store"):
        load_dataset({"name": "digits", "store": "paths", "image_size": 8})


# --- bad inputs through the CLI: exit code 2, the culprit named, no output left -----------------

def test_cli_empty_class_exits_2_without_output(tmp_path, capsys):
    write_imagefolder(tmp_path / "data", {"a": 4, "b": 4})
    (tmp_path / "data" / "c_empty").mkdir()
    code, out = run_split_cli(tmp_path, '{"dataset": {"name": "imagefolder", "root": "%s"}}' % (tmp_path / "data"))
    assert code == 2 and "c_empty" in capsys.readouterr().err
    assert_no_output(out)


def test_cli_corrupt_image_exits_2_without_output(tmp_path, capsys):
    write_imagefolder(tmp_path / "data", {"a": 4, "b": 4})
    (tmp_path / "data" / "a" / "zz.png").write_bytes(b"garbage")
    code, out = run_split_cli(tmp_path, '{"dataset": {"name": "imagefolder", "root": "%s"}}' % (tmp_path / "data"))
    assert code == 2 and "zz.png" in capsys.readouterr().err
    assert_no_output(out)


@pytest.mark.parametrize("bad_line", ["img/gone.png 0 1 0", "../escape.png 0 1 0", "img/c0_0.png 0 0 3"])
def test_cli_bad_list_exits_2_without_output(tmp_path, capsys, bad_line):
    _list_dataset(tmp_path / "data")
    with open(tmp_path / "data" / "database.txt", "a") as handle:
        handle.write(bad_line + "\n")
    code, out = run_split_cli(tmp_path, '{"dataset": {"name": "list", "root": "%s"}, "split": {"protocol": "lists"}}'
                              % (tmp_path / "data"))
    err = capsys.readouterr().err
    assert code == 2 and "database.txt:10" in err and err.count("\n") == 1
    assert_no_output(out)


@pytest.mark.parametrize(
    ("list_name", "line", "message"),
    [
        ("test", "img/c1_0.png 0 1 0", "also in the database list (first: img/c1_0.png)"),
        ("train", "img/c2_3.png 0 0 1", "not in the database list (first: img/c2_3.png)"),
    ],
)
def test_cli_lists_that_break_disjointness_name_the_image(tmp_path, capsys, list_name, line, message):
    _list_dataset(tmp_path / "data")
    with open(tmp_path / "data" / f"{list_name}.txt", "a") as handle:
        handle.write(line + "\n")
    code, out = run_split_cli(tmp_path, '{"dataset": {"name": "list", "root": "%s"}, "split": {"protocol": "lists"}}'
                              % (tmp_path / "data"))
    assert code == 2 and message in capsys.readouterr().err
    assert_no_output(out)


def test_cli_bad_pickle_exits_2_without_output(tmp_path, capsys):
    write_cifar(tmp_path / "data", "cifar10", "python", archive=False)
    (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").write_bytes(
        b"cos\nsystem\n(S'echo pwned'\ntR.")
    code, out = run_split_cli(tmp_path, '{"dataset": {"name": "cifar10", "root": "%s"}}' % (tmp_path / "data"))
    assert code == 2 and "test_batch" in capsys.readouterr().err
    assert_no_output(out)

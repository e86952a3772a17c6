"""Faults on real `lthash` commands: a full disk, an unwritable results folder, truncated or
foreign artifacts. Every case checks the exit code, that the message names the output or input
at fault, and that no file appears under a final name unless complete, earlier artifacts kept
byte for byte (lthash.testing.faults has the injection helpers)."""

from __future__ import annotations

import json
import pickle
import shutil

import h5py
import numpy as np
import pytest

from lthash.cli import main
from lthash.errors import LthashError
from lthash.evaluate.codes import CodeSet, write_codes
from lthash.io import load_safetensors, read_image_set, save_safetensors
from lthash.testing.faults import (can_mount, fill, lthash_command, run, snapshot, tmpfs, truncate_copy,
                                   unwritable_path)

MOUNT = can_mount()
needs_mount = pytest.mark.skipif(not MOUNT, reason="mounting a tmpfs needs root with CAP_SYS_ADMIN")
# The tmpfs variants repeat the RLIMIT_FSIZE / ENOTDIR ones on a real ENOSPC / EROFS file system;
# they run on demand (-m slow) to keep CI under its budget.


def digits_params(seed: int) -> str:
    return json.dumps({"dataset": {"name": "digits"},
                       "split": {"seed": seed, "query_per_class": 20, "train_per_class": 40,
                                 "longtail": {"imbalance_factor": 10}}})


def split_command(out, seed: int) -> list[str]:
    return lthash_command("split", "--out", str(out), "--figure", str(out.parent / "classes.png"),
                          "--params", digits_params(seed), "--threads", "1")


def last_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def good_split(tmp_path_factory):
    """A complete digits split written by the real command (about 230 kB)."""
    out = tmp_path_factory.mktemp("good") / "data" / "split.h5"
    result = run(split_command(out, seed=0))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def codes_file(tmp_path_factory):
    """A codes file of clustered random codes, 600 database and 60 query items, 10 classes."""
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2, (10, 32)).astype(bool)

    def code_set(n):
        labels = rng.integers(0, 10, n)
        codes = centres[labels] ^ (rng.random((n, 32)) < 0.2)
        return CodeSet(codes=np.packbits(codes, axis=1), labels=labels, index=np.arange(n), bits=32)

    path = tmp_path_factory.mktemp("codes") / "codes.h5"
    write_codes(path, {"database": code_set(600), "query": code_set(60)})
    return path


def score_command(codes, out, tag: str) -> list[str]:
    return lthash_command("score", "--codes", str(codes), "--counts", "50,40,30,20,10,8,6,4,2,1",
                          "--out", str(out), "--csv", str(out.with_suffix(".csv")), "--tag", f"run={tag}")


def assert_refused_write(result, out, reason: str) -> None:
    message = last_line(result)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message.startswith("lthash ") and f"failed writing {out}:" in message, message
    assert reason in message and "nothing was written under that name" in message, message


# --- (a) a full disk while writing: exit 2, output named, earlier artifacts intact ----------------

def test_split_over_the_file_size_limit_keeps_the_earlier_split(good_split, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(good_split.parent, folder)
    out = folder / "split.h5"
    before = snapshot(folder)
    result = run(split_command(out, seed=1), fsize_limit=100_000)  # the split is ~230 kB
    assert_refused_write(result, out, "file size limit reached")
    assert snapshot(folder) == before  # same files, same bytes, no temporary left behind
    assert len(read_image_set(out, "query", load_images=False)) == 200


@pytest.mark.slow
@needs_mount
def test_split_on_a_full_disk_keeps_the_earlier_split(tmp_path):
    with tmpfs(tmp_path / "disk", size="400k") as disk:
        out = disk / "data" / "split.h5"
        first = run(split_command(out, seed=0))
        assert first.returncode == 0, first.stderr
        before = snapshot(disk)
        result = run(split_command(out, seed=1))  # a second ~270 kB set does not fit
        assert_refused_write(result, out, "no space left on device")
        assert snapshot(disk) == before
        assert read_image_set(out, "train", load_images=False).attrs["counts"]


def test_score_over_the_file_size_limit_keeps_the_earlier_metrics(codes_file, tmp_path):
    out = tmp_path / "scores" / "metrics.json"
    first = run(score_command(codes_file, out, "a"))
    assert first.returncode == 0, first.stderr
    before = snapshot(out.parent)
    result = run(score_command(codes_file, out, "b"), fsize_limit=4000)  # metrics.json is ~11 kB
    assert_refused_write(result, out, "file size limit reached")
    after = snapshot(out.parent)
    assert sorted(after) == sorted(before) and after["metrics.json"] == before["metrics.json"]
    assert json.loads(out.read_text())["tags"] == {"run": "a"}


@pytest.mark.slow
def test_failed_score_leaves_no_mix_of_old_and_new_outputs(codes_file, tmp_path):
    out = tmp_path / "scores" / "metrics.json"
    assert run(score_command(codes_file, out, "a")).returncode == 0
    before = snapshot(out.parent)
    assert run(score_command(codes_file, out, "b"), fsize_limit=4000).returncode == 2
    assert snapshot(out.parent) == before


@pytest.mark.slow
@needs_mount
def test_score_on_a_full_disk_keeps_the_earlier_metrics(codes_file, tmp_path):
    with tmpfs(tmp_path / "disk", size="256k") as disk:
        out = disk / "metrics.json"
        first = run(score_command(codes_file, out, "a"))
        assert first.returncode == 0, first.stderr
        fill(disk)
        before = snapshot(disk)
        result = run(score_command(codes_file, out, "b"))
        assert_refused_write(result, out, "no space left on device")
        after = snapshot(disk)
        assert sorted(after) == sorted(before) and after["metrics.json"] == before["metrics.json"]
        assert json.loads(out.read_text())["tags"] == {"run": "a"}


# --- (b) an unwritable results folder: exit 2, clear message -------------------------------------

def test_split_into_an_unwritable_folder_exits_2(tmp_path):
    out = unwritable_path(tmp_path, "split.h5")
    result = run(split_command(out, seed=0))
    assert result.returncode == 2, result.stderr
    assert last_line(result) == (f"lthash split: error: cannot write {out}: folder {out.parent} is not "
                                 f"writable (Not a directory)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results_is_a_file"]


def test_score_into_an_unwritable_folder_exits_2(codes_file, tmp_path, capsys):
    out = unwritable_path(tmp_path, "metrics.json")
    assert main(["score", "--codes", str(codes_file), "--counts", "5,4,3,2,1,1,1,1,1,1", "--out", str(out)]) == 2
    assert f"cannot write {out}: folder {out.parent} is not writable" in capsys.readouterr().err


@pytest.mark.slow
@needs_mount
def test_split_into_a_read_only_file_system_exits_2(tmp_path):
    with tmpfs(tmp_path / "ro", size="64k", read_only=True) as disk:
        out = disk / "split.h5"
        result = run(split_command(out, seed=0))
        assert result.returncode == 2, result.stderr
        assert f"cannot write {out}: folder {disk} is not writable (Read-only file system)" in last_line(result)


# --- (c) truncated or foreign artifacts are refused, naming the file ------------------------------

def test_truncated_codes_file_is_refused_by_score(codes_file, tmp_path, capsys):
    cut = truncate_copy(codes_file, tmp_path / "codes.h5")
    out = tmp_path / "metrics.json"
    assert main(["score", "--codes", str(cut), "--counts", "5,4,3,2,1,1,1,1,1,1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{cut} is not a readable HDF5 file (truncated or corrupt)" in err and err.count("\n") == 1
    assert not out.exists()


def test_truncated_split_file_is_refused_by_score(codes_file, good_split, tmp_path, capsys):
    cut = truncate_copy(good_split, tmp_path / "split.h5", fraction=0.9)
    out = tmp_path / "metrics.json"
    assert main(["score", "--codes", str(codes_file), "--split", str(cut), "--out", str(out)]) == 2
    assert f"{cut} is not a readable HDF5 file (truncated or corrupt)" in capsys.readouterr().err
    assert not out.exists()


def test_split_without_its_complete_mark_is_refused(good_split, tmp_path):
    """A valid HDF5 file whose writer died before the last write (an older, non-atomic crash)."""
    unfinished = tmp_path / "split.h5"
    shutil.copy(good_split, unfinished)
    with h5py.File(unfinished, "r+") as h5:
        del h5.attrs["complete"]
    with pytest.raises(LthashError, match=f"{unfinished} is incomplete \\(no 'complete' mark\\)"):
        read_image_set(unfinished, "train")


def test_truncated_shard_is_refused_by_train(small_split, tmp_path, capsys):
    from lthash.io import ImageSet, write_image_sets

    shard = tmp_path / "shard0.h5"
    images = np.random.default_rng(0).integers(0, 255, (64, 28, 28, 1), dtype=np.uint8)
    write_image_sets(shard, {"synthetic": ImageSet(images=images, labels=np.zeros(64, np.int64),
                                                   index=np.arange(64))},
                     attrs={"class_index": 0, "class_name": "T-shirt/top"})
    cut = truncate_copy(shard, tmp_path / "cut.h5", fraction=0.6)
    out = tmp_path / "run"
    code = main(["train", "--split", str(small_split), "--synthetic", str(cut), "--mode", "synthetic",
                 "--out", str(out), "--device", "cpu", "--params", '{"method": "orthohash", "bits": 16}'])
    assert code == 2
    assert f"{cut} is not a readable HDF5 file (truncated or corrupt)" in capsys.readouterr().err
    assert not out.exists() or not (out / "model.safetensors").exists()


def _weights(tmp_path):
    import torch

    path = tmp_path / "model.safetensors"
    save_safetensors(path, {"w": torch.arange(4096, dtype=torch.float32), "b": torch.ones(8)}, {"step": 3})
    return path


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.5, 0.99])
def test_truncated_safetensors_is_refused(tmp_path, fraction):
    good = _weights(tmp_path)
    assert load_safetensors(good)[0]["w"].shape == (4096,)
    cut = truncate_copy(good, tmp_path / "cut.safetensors", fraction)
    with pytest.raises(LthashError, match=f"{cut} is not a valid safetensors file"):
        load_safetensors(cut)


def test_pickled_weights_under_a_safetensors_name_are_refused(tmp_path):
    import torch

    fake = tmp_path / "model.safetensors"
    torch.save({"w": torch.ones(3)}, fake)  # a torch pickle (zip) with the wrong name
    with pytest.raises(LthashError, match=f"{fake} is not a valid safetensors file"):
        load_safetensors(fake)


def test_truncated_model_of_a_run_is_refused_by_encode(small_split, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    good = _weights(tmp_path)
    truncate_copy(good, run_dir / "model.safetensors")
    out = tmp_path / "codes.h5"
    assert main(["encode", "--model", str(run_dir), "--split", str(small_split), "--out", str(out),
                 "--device", "cpu"]) == 2
    assert f"{run_dir / 'model.safetensors'} is not a valid safetensors file" in capsys.readouterr().err
    assert not out.exists()


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/lthash-pwned",))


def test_malicious_pth_pretrained_weights_are_refused(tmp_path):
    """hashing.pretrained.<backbone> may name a .pth: torch.load(weights_only=True) refuses code."""
    from lthash.hashing.backbones import read_state_dict

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": _Exploit()}))
    with pytest.raises(LthashError, match=r"evil.pth \(config key 'hashing.pretrained.cnn'\) is not a loadable"):
        read_state_dict(evil, "hashing.pretrained.cnn")
    import os

    assert not os.path.exists("/tmp/lthash-pwned")


def test_weights_over_the_file_size_limit_keep_the_earlier_file(tmp_path):
    """safetensors reports a failed write as its own error type; it still becomes the clear message."""
    good = _weights(tmp_path)
    before = snapshot(tmp_path)
    code = ("import sys, torch; from lthash.io import save_safetensors\n"
            "save_safetensors(sys.argv[1], {'w': torch.zeros(100000)})")
    import sys

    result = run([sys.executable, "-c", code, str(good)], fsize_limit=50_000)
    assert result.returncode == 1
    assert (f"LthashError: failed writing {good}: file size limit reached" in result.stderr), result.stderr[-800:]
    assert snapshot(tmp_path) == before and load_safetensors(good)[0]["w"].shape == (4096,)


@pytest.mark.slow
def test_training_on_a_full_disk_exits_2_naming_the_checkpoint(small_split, tmp_path):
    out = tmp_path / "run"
    params = json.dumps({"method": "orthohash", "bits": 16, "cnn": {"width": 8, "feature_dim": 32},
                         "train": {"epochs": 2}})
    result = run(lthash_command("train", "--split", str(small_split), "--group", "train", "--mode", "real",
                                "--out", str(out), "--device", "cpu", "--threads", "1", "--params", params),
                 fsize_limit=30_000)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"failed writing {out}.partial/ckpt-000001/tensors.safetensors: file size limit reached" in last_line(result)
    assert not out.exists()

"""Kills: `lthash split`, `lthash encode` and a Snakemake run SIGKILLed mid-job, then rerun. The
rerun's output equals an uninterrupted run's, and the temporaries of the killed writer are cleaned up.
(The stage owners' resume-after-SIGKILL tests of base, personalize, synthesize and train live
in their tests/test_<group>_*.py.)"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from lthash.testing.faults import (child_env, copy_workflow, kill_group, lthash_command, run,
                                   snakemake_command, start_in_new_group, wait_for)

SPLIT = {"seed": 0, "query_per_class": 20, "train_per_class": 40, "longtail": {"imbalance_factor": 10}}
DIGITS = {"dataset": {"name": "digits"}, "split": SPLIT}


def h5_contents(path: Path) -> dict:
    """Every dataset's array and every attribute of an HDF5 file, by name."""
    out = {}
    with h5py.File(path, "r") as h5:
        out["/"] = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in h5.attrs.items()}

        def visit(name, node):
            attrs = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in node.attrs.items()}
            out[name] = (node[()], attrs) if isinstance(node, h5py.Dataset) else attrs

        h5.visititems(visit)
    return out


def assert_same_h5(a: Path, b: Path) -> None:
    left, right = h5_contents(a), h5_contents(b)
    assert sorted(left) == sorted(right)
    for key in left:
        if isinstance(left[key], tuple):
            assert np.array_equal(left[key][0], right[key][0]), key
            assert left[key][1] == right[key][1], key
        else:
            assert left[key] == right[key], key


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def reference_split(tmp_path_factory):
    """The split of an uninterrupted `lthash split` run (what every killed run must end with)."""
    reference = tmp_path_factory.mktemp("reference") / "split.h5"
    result = run(lthash_command("split", "--out", str(reference), "--params", json.dumps(DIGITS)))
    assert result.returncode == 0, result.stderr
    return reference


def test_a_killed_writers_temporaries_are_removed_by_the_next_write(tmp_path):
    """atomic_path names temporaries <host>-<pid>; a later write of the same output deletes those
    of a dead process (and never those of a live one)."""
    from lthash.io import write_json

    out = tmp_path / "metrics.json"
    code = ("import sys, time; from lthash.io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_text('half'); print(tmp, flush=True); time.sleep(60)")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True,
                                env=child_env()) for _ in range(2)]
    temporaries = [Path(w.stdout.readline().strip()) for w in writers]
    assert all(t.exists() and t.parent == tmp_path for t in temporaries)
    writers[0].send_signal(signal.SIGKILL)
    writers[0].wait()
    foreign = tmp_path / ".metrics.json.otherhost-1.abcd.tmp"  # another node's writer: not ours to judge
    foreign.write_text("elsewhere")
    write_json(out, {"ok": 1})
    assert not temporaries[0].exists()  # the dead writer's
    assert temporaries[1].exists() and foreign.exists()  # a live writer's, another host's
    writers[1].kill()
    writers[1].wait()
    assert json.loads(out.read_text()) == {"ok": 1}


@pytest.mark.slow
def test_split_killed_while_writing_leaves_no_output_and_the_rerun_cleans_up(tmp_path, reference_split):
    reference = reference_split
    out = tmp_path / "data" / "split.h5"
    command = lthash_command("split", "--out", str(out), "--figure", str(out.parent / "classes.png"),
                             "--params", json.dumps(DIGITS))
    process = start_in_new_group(command, tmp_path, tmp_path / "killed.log")
    # the temporaries appear when writing starts; kill then, mid-write
    wait_for(lambda: out.parent.exists() and any(p.name.startswith(".split.h5.") for p in out.parent.iterdir()),
             timeout=120, interval=0.005, what="the split's temporary file")
    kill_group(process)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists() and not out.with_suffix(".json").exists()
    leftovers = hidden(out.parent)
    assert any(name.startswith(".split.h5.") for name in leftovers), leftovers

    rerun = run(command)
    assert rerun.returncode == 0, rerun.stderr
    assert hidden(out.parent) == []  # the dead writer's half-written copies are gone
    assert out.read_bytes() == reference.read_bytes() or assert_same_h5(out, reference) is None


TINY_MODEL = {"method": "orthohash", "bits": 16, "seed": 0, "cnn": {"width": 8}, "train": {"epochs": 1, "batch_size": 32}}


@pytest.mark.usefixtures("one_torch_thread")
def test_encode_killed_while_writing_leaves_no_codes_and_the_rerun_matches(tmp_path, small_split):
    """SIGKILL `lthash encode` as soon as a file appears beside its output (writing has begun):
    no codes file is left under the output name, and the rerun of the same command writes the
    codes of an uninterrupted run and removes the killed writer's temporary."""
    from lthash.workflow import stage_config
    from lthash.hashing.train import run_training

    model = tmp_path / "run"
    params = stage_config("train", json.dumps(TINY_MODEL))["hashing"]
    run_training(small_split, "train", [], "real", None, model, params, "cpu")

    def encode(out: Path) -> list[str]:
        return lthash_command("encode", "--model", str(model), "--split", str(small_split), "--out", str(out),
                              "--device", "cpu", "--threads", "1")

    reference = tmp_path / "reference" / "codes.h5"
    done = run(encode(reference))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "results" / "codes.h5"
    out.parent.mkdir()
    for _ in range(5):  # the write takes milliseconds: on a busy machine the kill may land after it
        process = start_in_new_group(encode(out), tmp_path, tmp_path / "killed.log")
        wait_for(lambda: process.poll() is not None or any(out.parent.iterdir()), timeout=120, interval=0,
                 what="the first file of the codes' writer")
        kill_group(process)
        if not out.exists():
            break
        assert_same_h5(out, reference)  # killed after its write: a file under that name must be whole
        out.unlink()
    log = (tmp_path / "killed.log").read_text()
    assert process.returncode == -signal.SIGKILL and not out.exists(), log
    leftovers = hidden(out.parent)
    assert leftovers and all(name.startswith(".codes.h5.") for name in leftovers), leftovers  # killed mid-write

    rerun = run(encode(out))
    assert rerun.returncode == 0, rerun.stderr
    assert hidden(out.parent) == []  # the dead writer's temporary is gone
    assert out.read_bytes() == reference.read_bytes() or assert_same_h5(out, reference) is None


def _snakemake(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(snakemake_command("--cores", "1", *args), cwd=workdir, capture_output=True,
                            text=True, timeout=timeout, env=child_env())
    return result


def test_snakemake_split_killed_mid_job_reruns_to_the_same_split(tmp_path, reference_split):
    """SIGKILL the whole snakemake process group at a random moment of the split job, then
    `snakemake --unlock` and `--rerun-incomplete`: the split equals an uninterrupted run's
    (the rule passes the validated dataset and split sections, as the CLI run fills them)."""
    target = "results/data/split.h5"

    work = copy_workflow(tmp_path / "killed")
    (work / "digits.yaml").write_text(yaml.safe_dump(DIGITS))
    process = start_in_new_group(snakemake_command("--cores", "1", target, "--configfile", "digits.yaml"),
                                 work, tmp_path / "snakemake-killed.log")
    wait_for(lambda: (work / "results" / "logs" / "split.log").exists(), timeout=120, what="the split job")
    delay = random.Random(os.environ.get("LTHASH_KILL_SEED", "7")).uniform(0.0, 1.0)
    time.sleep(delay)  # the job itself takes several seconds (imports, reading digits, writing)
    kill_group(process)
    log = (tmp_path / "snakemake-killed.log").read_text()
    assert not (work / target).exists(), f"the job finished within {delay:.2f} s; kill earlier\n{log}"
    assert any((work / ".snakemake" / "incomplete").iterdir())  # snakemake knows the job died

    assert _snakemake(work, target, "--configfile", "digits.yaml", "--unlock").returncode == 0
    again = _snakemake(work, target, "--configfile", "digits.yaml", "--rerun-incomplete")
    assert again.returncode == 0, again.stdout + again.stderr
    produced, expected = work / target, reference_split
    assert_same_h5(produced, expected)
    assert json.loads(produced.with_suffix(".json").read_text()) == json.loads(expected.with_suffix(".json").read_text())
    assert hidden(produced.parent) == []
    assert not (work / ".snakemake" / "incomplete").exists() or not any((work / ".snakemake" / "incomplete").iterdir())


TRAIN_CONFIG = {
    "dataset": {"name": "digits", "image_size": 16},
    "split": SPLIT,
    "experiment": {"arms": ["balanced"], "methods": ["orthohash"], "backbones": ["cnn"], "bits": [16], "seeds": [1]},
    "hashing": {"cnn": {"width": 8, "feature_dim": 32},
                "train": {"epochs": 6, "batch_size": 32, "lr": 0.002}},
}


@pytest.mark.slow
def test_snakemake_training_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path):
    """SIGKILL snakemake while `balanced` runs (after its first checkpoint), then --unlock and
    --rerun-incomplete: training resumes from <model>.partial and ends with the weights of an
    uninterrupted `lthash train` run with the same params (bit-identical on CPU)."""
    import torch

    from lthash.config import load_config
    from lthash.io import load_safetensors
    from lthash.workflow import rule_params

    target = "results/runs/balanced/orthohash-cnn-16/seed1/model"
    work = copy_workflow(tmp_path / "killed")
    (work / "train.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG))
    process = start_in_new_group(snakemake_command("--cores", "1", target, "--configfile", "train.yaml"),
                                 work, tmp_path / "snakemake-killed.log")
    checkpoint = work / (target + ".partial") / "ckpt-000001" / "state.json"
    wait_for(lambda: checkpoint.exists() or process.poll() is not None, timeout=300, what="a training checkpoint")
    kill_group(process)
    log = (tmp_path / "snakemake-killed.log").read_text()
    assert checkpoint.exists() and not (work / target).exists(), log

    assert _snakemake(work, target, "--configfile", "train.yaml", "--unlock").returncode == 0
    again = _snakemake(work, target, "--configfile", "train.yaml", "--rerun-incomplete", timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    record = json.loads((work / target / "run.json").read_text())
    assert record["resumed_at_epochs"] and record["resumed_at_epochs"][0] >= 1, record.get("resumed_at_epochs")
    assert not (work / (target + ".partial")).exists()

    config = load_config(work / "config.yaml", TRAIN_CONFIG)
    params = rule_params(config, "balanced", {"method": "orthohash", "backbone": "cnn", "bits": 16, "seed": 1})
    reference = tmp_path / "reference"
    done = run(lthash_command("train", "--split", str(work / "results/data/split.h5"), "--group", "train_balanced",
                              "--mode", "real", "--out", str(reference), "--params", json.dumps(params),
                              "--threads", "1", "--device", "cpu"), timeout=600)
    assert done.returncode == 0, done.stderr
    resumed, expected = load_safetensors(work / target / "model.safetensors")[0], load_safetensors(
        reference / "model.safetensors")[0]
    assert resumed.keys() == expected.keys()
    for key in resumed:
        assert torch.equal(resumed[key], expected[key]), key


def test_atomic_dir_replaces_a_folder_whole_and_cleans_up_after_a_killed_writer(tmp_path):
    """lthash.io.atomic_dir, the folder counterpart of atomic_path (model folders, run folders)."""
    from lthash.errors import LthashError
    from lthash.io import atomic_dir

    final = tmp_path / "model"
    with atomic_dir(final) as tmp:
        (tmp / "weights.safetensors").write_bytes(b"first")
    assert (final / "weights.safetensors").read_bytes() == b"first"

    with pytest.raises(RuntimeError, match="crash"):
        with atomic_dir(final) as tmp:
            (tmp / "weights.safetensors").write_bytes(b"half")
            raise RuntimeError("crash")
    assert (final / "weights.safetensors").read_bytes() == b"first" and hidden(tmp_path) == []

    code = ("import sys, time; from lthash.io import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as tmp:\n"
            "    (tmp / 'big.bin').write_bytes(b'x' * 1000); print(tmp, flush=True); time.sleep(60)")
    writer = subprocess.Popen([sys.executable, "-c", code, str(final)], stdout=subprocess.PIPE, text=True,
                              env=child_env())
    killed_tmp = Path(writer.stdout.readline().strip())
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert killed_tmp.is_dir() and (final / "weights.safetensors").read_bytes() == b"first"

    with atomic_dir(final) as tmp:
        (tmp / "weights.safetensors").write_bytes(b"second")
    assert sorted(p.name for p in final.iterdir()) == ["weights.safetensors"]
    assert (final / "weights.safetensors").read_bytes() == b"second"
    assert hidden(tmp_path) == []  # the killed writer's folder and the replaced one are gone

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LthashError, match=f"cannot write {blocker / 'model'}: folder {blocker} is not writable"):
        with atomic_dir(blocker / "model"):
            pass

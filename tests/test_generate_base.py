"""Base training: class-agnostic prompts, outputs, resume after SIGKILL, the SD path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lthash.errors import LthashError
from lthash.generate.base import BaseTrainingConfig, run_base, train_base
from lthash.workflow import stage_config
from lthash.generate.models import load_components, save_tiny_stable_diffusion
from lthash.generate.plan import make_plan
from lthash.generate.synthesize import synthesize_shard

TINY = {"block_out_channels": [8, 16], "norm_num_groups": 4, "text_hidden_size": 16, "text_heads": 2}


def params(**base):
    settings = {"architecture": TINY, "steps": 12, "batch_size": 8, "checkpoint_every": 4, "warmup_steps": 2,
                "samples_per_category": 2}
    settings.update(base)
    return stage_config("base", json.dumps({"generate": {"base": settings}}))["generate"]


def test_base_trains_with_class_agnostic_prompts(small_split, tmp_path):
    out = tmp_path / "base"
    report = run_base(small_split, out, params(), samples_png=tmp_path / "samples.png", progress=False)
    assert report["steps"] == 12
    for name in ("loss.csv", "loss.png", "samples.png", "base.json", "unet", "text_encoder", "tokenizer"):
        assert (out / name).exists(), name
    assert (tmp_path / "samples.png").exists()
    assert not (tmp_path / "base.partial").exists()
    assert len((out / "loss.csv").read_text().splitlines()) == 13
    assert set(report["prompts"]) == {"a photo of a clothing", "a photo of a footwear", "a photo of a accessory"}
    for prompt in report["prompts"]:
        for name in ("shirt", "trouser", "sandal", "sneaker", "bag", "boot", "coat", "dress", "pullover"):
            assert name not in prompt
    parts = load_components(out)
    assert (parts.image_size, parts.channels, parts.kind) == (28, 1, "tiny")
    tok = parts.tokenizer
    assert tok.add_tokens([f"<v{i}>" for i in range(10)]) == 10
    assert max(tok.convert_tokens_to_ids(f"<v{i}>") for i in range(10)) < \
        parts.text_encoder.get_input_embeddings().weight.shape[0]


def test_base_refuses_a_checkpoint_folder(small_split, tmp_path):
    with pytest.raises(LthashError, match="generate.base.model"):
        run_base(small_split, tmp_path / "b", params(model="/models/sd15"), progress=False)


def _tensors(folder):
    parts = load_components(folder)
    return {**{f"u.{k}": v for k, v in parts.unet.state_dict().items()},
            **{f"t.{k}": v for k, v in parts.text_encoder.state_dict().items()}}


def test_base_resumes_after_sigkill_to_the_same_weights(small_split, tmp_path):
    settings = params(steps=60, checkpoint_every=5)
    reference = tmp_path / "reference"
    threads = 1  # both runs on one count (float order depends on it), and one beside the other test worker
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run_base(small_split, reference, settings, progress=False)
    finally:
        torch.set_num_threads(before)
    cmd = [sys.executable, "-m", "lthash.cli", "base", "--split", str(small_split), "--out", str(tmp_path / "killed"),
           "--params", json.dumps({"generate": {"base": settings["base"], "seed": settings["seed"]}}),
           "--threads", str(threads), "--device", "cpu"]
    partial = tmp_path / "killed.partial"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if partial.is_dir() and any(p.name.startswith("ckpt-") for p in partial.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed").exists()
    assert any(p.name.startswith("ckpt-") for p in partial.iterdir())
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert not partial.exists()
    expected, got = _tensors(reference), _tensors(tmp_path / "killed")
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_tiny_stable_diffusion_trains_and_synthesizes(small_split, tmp_path):
    from lthash.io import read_attrs, read_image_set

    folder = save_tiny_stable_diffusion(tmp_path / "sd")
    parts = load_components(folder)
    train = read_image_set(small_split, "train")
    before = {k: v.clone() for k, v in parts.unet.state_dict().items()}
    state = train_base(parts, train.images[:32], ["a photo of a clothing"] * 32,
                       BaseTrainingConfig.from_params(params()["base"], seed=0, steps=3, batch_size=4, warmup_steps=1), progress=False)
    assert len(state.losses) == 3 and all(np.isfinite(state.losses))
    assert any(not torch.equal(before[k], v) for k, v in parts.unet.state_dict().items())
    names = read_attrs(small_split)["class_names"]
    plan = make_plan([5] * 10, names, pretrain_per_class=3, shard_size=3)
    gen = stage_config("synthesize", json.dumps({"synthesis": {"steps": 2, "batch_size": 2}}))["generate"]
    out = tmp_path / "shard.h5"
    summary = synthesize_shard(folder, None, 7, "pretrain", 0, plan, small_split, out, gen, progress=False)
    shard = read_image_set(out, "synthetic")
    assert summary["images"] == 3 and shard.images.shape == (3, 28, 28, 1)
    assert shard.attrs["generator"] == "base" and shard.attrs["prompt"] == "a photo of a footwear"


def test_base_training_on_one_and_two_threads_differs_only_in_float_order(small_split, tmp_path):
    """The workflow gives the base (the critical path: every other job waits for it) all the
    run's cores. Its weights are not bit-identical across thread counts (torch's CPU
    convolution kernels sum in a thread-dependent order), but agree closely over all weights; hash
    training, personalisation and synthesis run on one thread per job in the workflow."""
    settings = params(steps=8, checkpoint_every=100)
    outs = []
    for threads in (1, 2):
        out = tmp_path / f"threads{threads}"
        subprocess.run([sys.executable, "-m", "lthash.cli", "base", "--split", str(small_split), "--out", str(out),
                        "--params", json.dumps({"generate": {"base": settings["base"], "seed": settings["seed"]}}),
                        "--threads", str(threads), "--device", "cpu"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        outs.append(_tensors(out))
    assert outs[0].keys() == outs[1].keys()
    differing = [key for key in outs[0] if not torch.equal(outs[0][key], outs[1][key])]
    assert differing, "bit-identical across threads: say so in the docstring and the README"
    # Over all weights together: a few tensors (attention key biases, whose gradient is zero up
    # to rounding) take Adam-normalised steps of rounding noise and move apart on their own.
    squared = sum(float((outs[0][key] - outs[1][key]).double().pow(2).sum()) for key in outs[0])
    norm = sum(float(outs[0][key].double().pow(2).sum()) for key in outs[0])
    assert (squared / norm) ** 0.5 < 1e-3

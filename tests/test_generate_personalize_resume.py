"""Resume after SIGKILL: a killed `lthash personalize` rerun ends with the uninterrupted run's weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from lthash.generate.models import build_tiny_components, save_components
from lthash.testing.faults import kill_when_exists

PARAMS = {"generate": {"personalize": {
    "schedule": "tiny", "checkpoint_every": 2, "sample_grid": {"images": 2, "steps": 2},
    "attndreambooth": {"stages": {"embedding": {"steps": 4, "batch_size": 4},
                                  "cross_attention": {"steps": 4, "batch_size": 4},
                                  "unet": {"steps": 12, "batch_size": 4}}},
}}}


LORA_PARAMS = json.loads(json.dumps(PARAMS))
LORA_PARAMS["generate"]["personalize"]["attndreambooth"]["stages"]["unet"]["lora_rank"] = 2


def _command(base, split, out, params=PARAMS) -> list[str]:
    return [sys.executable, "-m", "lthash.cli", "personalize", "--base", str(base), "--split", str(split),
            "--class", "4", "--generator", "attndreambooth", "--out", str(out), "--device", "cpu",
            "--threads", "1", "--params", json.dumps(params)]


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return save_components(build_tiny_components(["clothing", "footwear", "accessory"], 28, 1, seed=1),
                           tmp_path_factory.mktemp("base") / "base")


@pytest.mark.parametrize("params", [PARAMS, LORA_PARAMS], ids=["weights", "lora"])
def test_resume_after_sigkill_matches_uninterrupted_run(tiny_base, small_split, tmp_path, one_torch_thread, params):
    """Killed mid stage 3 (a LoRA stage: its factors in the checkpoint), the rerun ends bit-identical."""
    from lthash.config import validate_config
    from lthash.generate.personalize.runner import personalize

    reference = tmp_path / "reference"  # uninterrupted, in this process, with the subprocesses' one thread
    personalize(tiny_base, small_split, 4, "attndreambooth", reference,
                validate_config({"dataset": {}, **params})["generate"], device="cpu")

    killed = tmp_path / "killed"
    partial = tmp_path / "killed.partial"
    target = partial / "ckpt-000002-000004"  # mid stage 3
    returncode = kill_when_exists(_command(tiny_base, small_split, killed, params), target, env=_env())
    assert returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not killed.exists() and target.exists()
    # a checkpoint truncated by a kill is skipped on resume
    broken = partial / "ckpt-000002-000010"
    broken.mkdir()
    (broken / "state.json").write_text("{")

    subprocess.run(_command(tiny_base, small_split, killed, params), check=True, env=_env(), capture_output=True)
    assert not partial.exists()
    for name in ("token_embedding.safetensors", "unet/diffusion_pytorch_model.safetensors"):
        ref, got = load_file(reference / name), load_file(killed / name)
        assert ref.keys() == got.keys()
        for key in ref:
            assert torch.equal(ref[key], got[key]), f"{name}:{key}"
    record = json.loads((killed / "concept.json").read_text())
    assert record["stages"][-1]["resumed_from_step"] >= 4


def test_a_lora_stage_changes_each_weight_by_at_most_its_rank_and_saves_a_plain_unet(tiny_base, small_split,
                                                                                       tmp_path, one_torch_thread):
    from lthash.config import validate_config
    from lthash.generate.personalize.runner import personalize

    out = personalize(tiny_base, small_split, 4, "attndreambooth", tmp_path / "lora",
                      validate_config({"dataset": {}, **LORA_PARAMS})["generate"], device="cpu")
    base = load_file(tiny_base / "unet" / "diffusion_pytorch_model.safetensors")
    trained = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert trained.keys() == base.keys()  # merged: no factors, no parametrisation left in the folder
    changed = 0
    for name in ("down_blocks.0.resnets.0.conv1.weight", "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight",
                 "up_blocks.0.resnets.0.time_emb_proj.weight"):  # weights only the LoRA stage touches
        delta = (trained[name] - base[name]).double().reshape(base[name].shape[0], -1)
        assert torch.linalg.matrix_rank(delta, atol=1e-6).item() <= 2, name
        changed += int(delta.abs().max() > 0)
    assert changed == 3
    assert json.loads((out / "concept.json").read_text())["stages"][-1]["lora_rank"] == 2
    with pytest.raises(Exception, match="stages.embedding.lora_rank"):
        personalize(tiny_base, small_split, 4, "attndreambooth", tmp_path / "bad", validate_config(
            {"dataset": {}, "generate": {"personalize": {"attndreambooth": {"stages": {
                "embedding": {"lora_rank": 2}}}}}})["generate"], device="cpu")

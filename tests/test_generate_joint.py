"""Joint personalisation: every class taught in one run, read by synthesis and the knowledge measure."""

from __future__ import annotations

import json
import signal
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lthash.config import validate_config
from lthash.workflow.reads import stage_config
from lthash.data.split import run_split
from lthash.errors import LthashError
from lthash.generate.base import run_base
from lthash.generate.concepts import read_joint_concept
from lthash.generate.knowledge import measure_generator
from lthash.generate.models import load_components
from lthash.generate.personalize.joint_trainer import ConceptTokens, balanced_batch, personalize_joint
from lthash.generate.sampler import SamplerConfig, generate
from lthash.generate.synthesize import load_generator
from lthash.io import read_image_set
from lthash.testing.faults import child_env, kill_when_exists, lthash_command

TINY = {"block_out_channels": [8, 16], "norm_num_groups": 4, "text_hidden_size": 16, "text_heads": 2}
SPLIT = {"query_per_class": 10, "database_per_class": 60, "train_per_class": 30, "validation_per_class": 3,
         "seed": 0, "longtail": {"imbalance_factor": 10}}
JOINT = {"steps": 8, "batch_size": 8, "replay_batch": 4, "replay_images": 16, "warmup_steps": 2}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A real scikit-learn digits split and a tiny base trained (2 steps) on the digits outside it,
    captioned with their category ("a photo of a digit"), so its corpus can be replayed."""
    folder = tmp_path_factory.mktemp("joint")
    cfg = validate_config({"dataset": {"name": "digits"}, "split": SPLIT})
    split = folder / "split.h5"
    run_split(cfg["dataset"], cfg["split"], split, folder / "split.json")
    params = stage_config("base", json.dumps({"generate": {"base": {
        "architecture": TINY, "steps": 2, "batch_size": 4, "checkpoint_every": 0, "warmup_steps": 1,
        "samples_per_category": 1, "corpus": "outside_split", "captions": "category"}}}))["generate"]
    base = folder / "base"
    run_base(split, base, params, progress=False)
    return split, base


def _generate_params(**joint):
    return validate_config({"dataset": {"name": "digits"}, "generate": {"personalize": {
        "checkpoint_every": 2, "sample_grid": {"images": 2, "steps": 2}, "joint": {**JOINT, **joint}}}})["generate"]


@pytest.fixture(scope="module")
def joint_concepts(digits_run, tmp_path_factory):
    split, base = digits_run
    out = tmp_path_factory.mktemp("concepts") / "joint"
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        personalize_joint(base, split, out, _generate_params())
    return out


def test_the_prompt_puts_the_token_in_the_category_words_place_or_before_it():
    from lthash.generate.personalize.joint_trainer import joint_prompt

    assert joint_prompt("token", "<v3>", "clothing") == "a photo of a <v3>"
    assert joint_prompt("token_category", "<v3>", "clothing") == "a photo of a <v3> clothing"
    with pytest.raises(LthashError, match="generate.personalize.joint.prompt"):
        validate_config({"dataset": {}, "generate": {"personalize": {"joint": {"prompt": "class"}}}})


def test_a_class_balanced_batch_draws_every_class_alike_however_few_its_images():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    index = balanced_batch(labels, 3, 6000, torch.Generator().manual_seed(0))
    counts = np.bincount(labels[index.numpy()], minlength=3)
    assert counts.min() > 1800 and counts.max() < 2200


def test_the_joint_folder_holds_one_token_per_class_and_the_unet_they_share(joint_concepts, digits_run):
    split, base = digits_run
    record = read_joint_concept(joint_concepts)
    assert record["method"] == "joint" and record["steps"] == 8
    prompts = [entry["prompt"] for entry in record["classes"]]
    assert prompts == [f"a photo of a <v{c}>" for c in range(10)]
    assert [entry["images"] for entry in record["classes"]] == np.bincount(read_image_set(split, "train").labels).tolist()
    assert record["replay"] == {"words": ["digit"], "images_per_word": 16}
    losses = (joint_concepts / "loss.csv").read_text().splitlines()
    assert losses[0] == "step,instance,replay" and len(losses) == 9
    rows = load_file(joint_concepts / "token_embeddings.safetensors")
    assert sorted(rows) == sorted(f"<v{c}>" for c in range(10))
    # every row started at the category word's and trained away from it; the UNet changed too
    start = load_components(base).text_encoder.get_input_embeddings().weight
    components = load_components(base)
    word = components.tokenizer("digit", add_special_tokens=False).input_ids[0]
    assert all(not torch.equal(rows[f"<v{c}>"], start[word]) for c in range(10))
    trained = load_file(joint_concepts / "unet" / "diffusion_pytorch_model.safetensors")
    original = load_file(base / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(trained[k], original[k]) for k in original)
    assert (joint_concepts / "samples" / "joint.png").exists()
    assert not (joint_concepts.parent / "joint.partial").exists()


def test_synthesis_and_the_knowledge_measure_read_any_class_of_the_joint_folder(joint_concepts, digits_run,
                                                                               one_torch_thread):
    split, base = digits_run
    components, prompt, name = load_generator(joint_concepts, base, 3, [str(c) for c in range(10)], None)
    assert (prompt, name) == ("a photo of a <v3>", "joint")
    ids = components.tokenizer(prompt).input_ids
    token_id = components.tokenizer.convert_tokens_to_ids("<v3>")
    assert token_id in ids
    saved = load_file(joint_concepts / "token_embeddings.safetensors")["<v3>"]
    assert torch.equal(components.text_encoder.get_input_embeddings().weight[token_id], saved)
    images = generate(components, [prompt] * 3, torch.Generator().manual_seed(0),
                      SamplerConfig.for_model(components, {"steps": 2}))
    assert images.shape == (3, components.image_size, components.image_size, 1)
    params = validate_config({"dataset": {"name": "digits"},
                              "generate": {"knowledge": {"images_per_class": 2, "timesteps": 2}}})["generate"]
    metrics = measure_generator([joint_concepts] * 10, base, split, params, "joint")
    assert len(set(metrics["prompts"])) == 10 and metrics["images"] == 20
    with pytest.raises(LthashError, match="has no class 12"):
        load_generator(joint_concepts, base, 12, [str(c) for c in range(13)], None)


def test_tokens_read_their_own_rows_and_leave_every_other_embedding_alone(digits_run):
    _, base = digits_run
    components = load_components(base)
    table = components.text_encoder.get_input_embeddings().weight.detach().clone()
    concepts = ConceptTokens(components, ["<v0>", "<v1>"], ["digit", "digit"]).install()
    with torch.no_grad():
        concepts.rows[1].fill_(7.0)
    ids = components.tokenizer(["a <v1> digit <v0>"], return_tensors="pt").input_ids
    out = components.text_encoder.get_input_embeddings()(ids)[0]
    v0, v1 = (components.tokenizer.convert_tokens_to_ids(t) for t in ("<v0>", "<v1>"))
    for position, token in enumerate(ids[0].tolist()):
        expected = {v1: torch.full_like(out[0], 7.0), v0: concepts.rows[0]}.get(token, table[token])
        assert torch.equal(out[position], expected)
    assert torch.equal(components.text_encoder.get_input_embeddings().weight, table)
    concepts.remove()


def _killed_at_step_4_and_resumed(base, split, out, joint: dict):
    """``out`` written by ``lthash personalize-joint`` (settings ``joint``, checkpoints every 2
    steps) SIGKILLed once its step-4 checkpoint exists, then run again to the end."""
    params = json.dumps({"generate": {"personalize": {
        "checkpoint_every": 2, "sample_grid": {"images": 2, "steps": 2}, "joint": joint}}})
    command = lthash_command("personalize-joint", "--base", str(base), "--split", str(split), "--out", str(out),
                             "--device", "cpu", "--threads", "1", "--params", params)
    target = out.parent / f"{out.name}.partial" / "ckpt-000004"
    assert kill_when_exists(command, target, env=child_env()) == -signal.SIGKILL, \
        "the run finished before it could be killed"
    assert not out.exists() and target.exists()
    subprocess.run(command, check=True, env=child_env(), capture_output=True)
    assert read_joint_concept(out)["resumed_from_step"] >= 4
    return out


def test_resume_after_sigkill_ends_with_the_uninterrupted_runs_weights(joint_concepts, digits_run, tmp_path):
    split, base = digits_run
    killed = _killed_at_step_4_and_resumed(base, split, tmp_path / "joint", JOINT)
    for name in ("token_embeddings.safetensors", "unet/diffusion_pytorch_model.safetensors"):
        reference, resumed = load_file(joint_concepts / name), load_file(killed / name)
        assert reference.keys() == resumed.keys()
        for key in reference:
            assert torch.equal(reference[key], resumed[key]), f"{name}:{key}"


def test_bad_settings_are_refused_naming_the_key(digits_run, tmp_path):
    split, base = digits_run
    with pytest.raises(LthashError, match="generate.personalize.joint.token_lr"):
        validate_config({"dataset": {}, "generate": {"personalize": {"joint": {"token_lr": 0}}}})
    with pytest.raises(LthashError, match="generate.personalize.joint.trains"):
        validate_config({"dataset": {}, "generate": {"personalize": {"joint": {"trains": "text_encoder"}}}})
    from lthash.generate.models import build_tiny_components, save_components

    no_corpus = save_components(build_tiny_components(["digit"], 8, 1, 0, TINY), tmp_path / "no_corpus")
    with pytest.raises(LthashError, match="generate.personalize.joint.replay_batch"):
        personalize_joint(no_corpus, split, tmp_path / "out", _generate_params())
    assert not (tmp_path / "out").exists()
    unknown = save_components(build_tiny_components(["object"], 8, 1, 0, TINY), tmp_path / "unknown_word")
    with pytest.raises(LthashError, match="generate.categories"):
        personalize_joint(unknown, split, tmp_path / "out", _generate_params(replay_batch=0))
    result = subprocess.run(lthash_command("personalize", "--base", str(base), "--split", str(split), "--class", "0",
                                           "--generator", "joint", "--out", str(tmp_path / "c")),
                            env=child_env(), capture_output=True, text=True)
    assert result.returncode == 2 and "lthash personalize-joint" in result.stderr


def test_the_text_time_pathway_starts_as_the_base_trains_and_is_read_back_by_synthesis(digits_run, tmp_path,
                                                                                      one_torch_thread):
    from lthash.generate.models import with_text_time_embedding

    split, base = digits_run
    components = load_components(base)
    widened = with_text_time_embedding(components.unet)
    x, t = torch.randn(2, *components.model_shape), torch.tensor([10, 700])
    context = torch.randn(2, components.max_length(), components.unet.config.cross_attention_dim)
    assert torch.equal(widened(x, t, context).sample, components.unet(x, t, context).sample)
    assert with_text_time_embedding(widened) is widened
    out = tmp_path / "joint"
    personalize_joint(base, split, out, _generate_params(text_time_embedding=True, trains="cross_attention"))
    saved = json.loads((out / "unet" / "config.json").read_text())
    assert saved["addition_embed_type"] == "text"
    trained = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert trained["add_embedding.norm2.weight"].abs().sum() > 0  # left its zero start: it trained
    components, prompt, _ = load_generator(out, base, 2, [str(c) for c in range(10)], None)
    assert components.unet.config.addition_embed_type == "text" and prompt == "a photo of a <v2>"
    images = generate(components, [prompt], torch.Generator().manual_seed(0),
                      SamplerConfig.for_model(components, {"steps": 2}))
    assert images.shape == (1, components.image_size, components.image_size, 1)


def _trained_tensors(folder) -> dict[str, torch.Tensor]:
    return {**{f"tokens.{k}": v for k, v in load_file(folder / "token_embeddings.safetensors").items()},
            **load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")}


def test_the_moving_average_is_what_the_folder_holds_and_a_killed_run_resumes_it(joint_concepts, digits_run,
                                                                               tmp_path):
    """ema_decay d: the folder holds the average of the steps' weights. The training itself is
    the same (same batches, same steps), so d ~ 0 gives the last step's weights and d = 0.9
    others; the average is checkpointed, so a run killed mid-way resumes it bit for bit."""
    split, base = digits_run
    last = _trained_tensors(joint_concepts)
    runs = {}
    for decay in (1e-12, 0.9):
        out = tmp_path / f"ema{decay}"
        with torch.random.fork_rng():
            torch.set_num_threads(1)
            personalize_joint(base, split, out, _generate_params(ema_decay=decay))
        runs[decay] = _trained_tensors(out)
    assert runs[1e-12].keys() == last.keys()
    for key in last:
        assert torch.allclose(runs[1e-12][key], last[key], atol=1e-6), key
    moved = [key for key in last if not torch.allclose(runs[0.9][key], last[key], atol=1e-6)]
    assert "tokens.<v0>" in moved and len(moved) > len(last) // 2, moved

    resumed = _trained_tensors(_killed_at_step_4_and_resumed(base, split, tmp_path / "joint",
                                                             {**JOINT, "ema_decay": 0.9}))
    for key in runs[0.9]:
        assert torch.equal(runs[0.9][key], resumed[key]), key

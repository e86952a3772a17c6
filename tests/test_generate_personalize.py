"""Personalisation: stage schedule, what each stage trains, methods on tail classes, the SD path,
concept round trip and bad inputs (resume after a kill: test_generate_personalize_resume.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lthash.checkpointing import CheckpointFolder
from lthash.errors import LthashError
from lthash.generate.concepts import load_concept, read_concept
from lthash.generate.models import (build_tiny_components, encode_prompts, images_to_pixels, load_components,
                                    save_components, save_tiny_stable_diffusion)
from lthash.generate.personalize.data import Augmentation, load_class_images, sample_batch
from lthash.generate.personalize.runner import make_accelerator, personalize
from lthash.generate.personalize.schedule import PRESETS, Stage, load_presets, method_stages
from lthash.generate.personalize.trainer import ConceptToken, StageTrainer, TrainingData, TrainingOptions
from lthash.io import ImageSet, read_attrs, read_image_set, write_image_sets

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["clothing", "footwear", "accessory"]
TAIL_CLASS = 8     # reduced to one image in `tail_split`
EMPTY_CLASS = 3    # no image in `tail_split`


def fast_params(method: str, steps: int = 2, batch: int = 2, **extra) -> dict:
    """A validated-shape generate section running every stage of ``method`` for ``steps`` steps."""
    names = {"attndreambooth": ["embedding", "cross_attention", "unet"], "dreambooth": ["unet"],
             "textual_inversion": ["embedding"]}[method]
    personalize_params = {
        "schedule": "tiny", "checkpoint_every": 0, "sample_grid": {"images": 2, "steps": 2},
        method: {"stages": {name: {"steps": steps, "batch_size": batch} for name in names}},
    }
    personalize_params.update(extra)
    from lthash.config import validate_config

    return validate_config({"dataset": {}, "generate": {"personalize": personalize_params}})["generate"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return save_components(build_tiny_components(WORDS, image_size=28, channels=1, seed=0),
                           tmp_path_factory.mktemp("base") / "base")


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "sd", seed=0)


@pytest.fixture(scope="module")
def tail_split(small_split, tmp_path_factory):
    """The small split with class 8 cut to one training image and class 3 emptied."""
    groups = {name: read_image_set(small_split, name) for name in ("train", "train_balanced", "database", "query")}
    train = groups["train"]
    labels = train.labels
    keep = np.ones(len(labels), bool)
    keep[labels == EMPTY_CLASS] = False
    keep[np.flatnonzero(labels == TAIL_CLASS)[1:]] = False
    groups["train"] = ImageSet(train.images[keep], labels[keep], train.index[keep],
                               attrs={"counts": np.bincount(labels[keep], minlength=10).tolist()})
    path = tmp_path_factory.mktemp("tail") / "split.h5"
    write_image_sets(path, groups, attrs=read_attrs(small_split))
    return path


def personalize_section(**spec) -> dict:
    """``generate.personalize`` validated from ``spec``, with the schema's defaults filled."""
    from lthash.config import validate_config

    return validate_config({"dataset": {}, "generate": {"personalize": spec}})["generate"]["personalize"]


# The preset table as it stood in schedule.py before it moved to presets.yaml:
# preset -> method -> (trains, steps, lr, batch_size, lambda_mean, lambda_var) per stage.
PRESET_TABLE = {
    "reference": {
        "attndreambooth": [("embedding", 60, 1e-3, 8, 0.1, 0.0), ("cross_attention", 100, 2e-5, 8, 2.0, 5.0),
                           ("unet", 500, 2e-6, 8, 2.0, 5.0)],
        "dreambooth": [("unet", 400, 5e-6, 4, 0.0, 0.0)],
        "textual_inversion": [("embedding", 500, 5e-3, 8, 0.0, 0.0)],
    },
    "tiny": {
        "attndreambooth": [("embedding", 15, 1e-2, 16, 0.1, 0.0), ("cross_attention", 15, 2e-3, 16, 2.0, 5.0),
                           ("unet", 40, 5e-4, 16, 2.0, 5.0)],
        "dreambooth": [("unet", 50, 5e-4, 16, 0.0, 0.0)],
        "textual_inversion": [("embedding", 60, 1e-2, 16, 0.0, 0.0)],
    },
    "tiny_known_class": {
        "attndreambooth": [("embedding", 15, 1e-3, 16, 0.1, 0.0), ("cross_attention", 15, 2e-4, 16, 2.0, 5.0)],
    },
    "tiny_novel_class": {
        "attndreambooth": [("embedding", 60, 5e-3, 16, 0.1, 0.0), ("cross_attention", 60, 5e-4, 16, 2.0, 5.0),
                           ("unet", 300, 1e-3, 16, 2.0, 5.0)],
    },
}


def test_presets_file_loads_the_stage_table_with_typed_fields(tmp_path):
    loaded = {preset: {method: [(s.trains, s.steps, s.lr, s.batch_size, s.lambda_mean, s.lambda_var) for s in stages]
                       for method, stages in methods.items()} for preset, methods in PRESETS.items()}
    assert loaded == PRESET_TABLE
    types = {"name": str, "trains": str, "steps": int, "lr": float, "batch_size": int, "lambda_mean": float,
             "lambda_var": float, "prior_weight": float}
    for stages in (stages for methods in PRESETS.values() for stages in methods.values()):
        assert isinstance(stages, tuple) and all(isinstance(stage, Stage) for stage in stages)
        for stage in stages:
            assert stage.name == stage.trains and stage.prior_weight == 0.0
            assert {key: type(value) for key, value in stage.as_dict().items()} == types, stage
    assert load_presets() is PRESETS, "read once"
    bad = tmp_path / "presets.yaml"
    bad.write_text("tiny:\n  dreambooth:\n    - {name: unet, trains: unet, steps: 50, lr: 5e-4, batch_size: 16, "
                   "lambda_mean: 0.0, lambda_var: 0.0}\n")
    with pytest.raises(LthashError, match="lr='5e-4' not of type float"):
        load_presets(bad)
    bad.write_text("tiny:\n  dreambooth:\n    - {name: unet, trains: unet, steps: 50}\n")
    with pytest.raises(LthashError, match="a stage has keys"):
        load_presets(bad)


def test_schedule_presets_and_overrides():
    ref = method_stages("attndreambooth", personalize_section(schedule="auto"), has_vae=True)
    assert [(s.trains, s.steps, s.lr, s.batch_size, s.lambda_mean, s.lambda_var) for s in ref] == [
        ("embedding", 60, 1e-3, 8, 0.1, 0.0), ("cross_attention", 100, 2e-5, 8, 2.0, 5.0),
        ("unet", 500, 2e-6, 8, 2.0, 5.0)]
    tiny = method_stages("attndreambooth", personalize_section(schedule="auto", attndreambooth={
        "stages": {"unet": {"steps": 7, "lr": None}}}), has_vae=False)
    assert tiny[2].steps == 7 and tiny[2].lr == method_stages("attndreambooth", personalize_section(), False)[2].lr
    db = method_stages("dreambooth", personalize_section(dreambooth={"prior_preservation": {"enabled": True, "weight": 0.5}}),
                       True)
    assert [(s.trains, s.prior_weight) for s in db] == [("unet", 0.5)]
    assert [s.trains for s in method_stages("textual_inversion", personalize_section(), False)] == ["embedding"]
    with pytest.raises(LthashError, match="unknown stage"):
        method_stages("textual_inversion", {**personalize_section(), "textual_inversion": {"stages": {"unet": {"steps": 1}}}},
                      False)
    with pytest.raises(LthashError, match="preset 'tiny' has no stages for 'lora'"):
        method_stages("lora", personalize_section(), False)
    known = method_stages("attndreambooth", personalize_section(schedule="tiny_known_class", attndreambooth={
        "prior_preservation": {"enabled": True}}), has_vae=False)
    assert [(s.trains, s.lr, s.prior_weight) for s in known] == [("embedding", 1e-3, 1.0),
                                                               ("cross_attention", 2e-4, 1.0)]
    with pytest.raises(LthashError, match="preset 'tiny_known_class' has no stages for 'dreambooth'"):
        method_stages("dreambooth", personalize_section(schedule="tiny_known_class"), False)


def test_augmentation_and_batches_are_seeded_and_shaped():
    pixels = torch.linspace(-1, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)
    aug = Augmentation.from_params(personalize_section()["augment"])
    a = aug(pixels, torch.Generator().manual_seed(0))
    b = aug(pixels, torch.Generator().manual_seed(0))
    assert a.shape == pixels.shape and torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    assert aug.rotation_p == 0.75 and aug.max_zoom == 1.15, "the schema's reference augmentation"
    disabled = Augmentation.from_params(personalize_section(augment={"enabled": False})["augment"])
    assert disabled == Augmentation.identity() and torch.equal(disabled(pixels, torch.Generator()), pixels)
    batch = sample_batch(1, 5, torch.Generator().manual_seed(0))
    assert batch.tolist() == [0] * 5
    batch = sample_batch(3, 7, torch.Generator().manual_seed(0))
    assert sorted(batch[:3].tolist()) == [0, 1, 2] and len(batch) == 7


def _snapshot(components, token):
    return ({k: v.clone() for k, v in components.unet.state_dict().items()},
            {k: v.clone() for k, v in components.text_encoder.state_dict().items()},
            token.row.detach().clone())


def test_each_stage_trains_only_its_parameters(tiny_base, small_split, tmp_path):
    components = load_components(tiny_base)
    token = ConceptToken(components, "<v2>", "clothing").install()
    images = load_class_images(small_split, 2).images
    params = fast_params("attndreambooth", steps=2, batch=4)["personalize"]
    data = TrainingData(images_to_pixels(images, 28, 1), "a photo of a <v2> clothing",
                        Augmentation.from_params(params["augment"]))
    stages = method_stages("attndreambooth", params, has_vae=False)
    trainer = StageTrainer(components, token, data, TrainingOptions.from_params(params),
                           make_accelerator("cpu", "no"), torch.Generator().manual_seed(0),
                           CheckpointFolder(tmp_path / "partial", {"test": 1}), stages)
    unet0, text0, row0 = _snapshot(components, token)

    trainer.run(0)  # [V] row only
    unet1, text1, row1 = _snapshot(components, token)
    assert not torch.equal(row1, row0)
    assert all(torch.equal(unet1[k], unet0[k]) for k in unet0)
    assert all(torch.equal(text1[k], text0[k]) for k in text0)  # every embedding row, incl. [V]'s table row

    trainer.run(1)  # attn2 q, k, v, out only
    unet2, text2, row2 = _snapshot(components, token)
    assert torch.equal(row2, row1) and all(torch.equal(text2[k], text0[k]) for k in text0)
    changed = {k for k in unet0 if not torch.equal(unet2[k], unet1[k])}
    cross = {k for k in unet0 if ".attn2.to_" in k}
    assert changed and changed <= cross
    assert {k.split(".attn2.")[1].split(".")[0] for k in changed} == {"to_q", "to_k", "to_v", "to_out"}

    trainer.run(2)  # whole UNet
    unet3, text3, row3 = _snapshot(components, token)
    assert torch.equal(row3, row2) and all(torch.equal(text3[k], text0[k]) for k in text0)
    changed = {k for k in unet0 if not torch.equal(unet3[k], unet2[k])}
    assert changed - cross and len(changed) > 0.9 * len(unet0)
    assert [entry["trains"] for entry in trainer.stage_log] == ["embedding", "cross_attention", "unet"]
    assert all(np.isfinite(entry["final"]["mse"]) for entry in trainer.stage_log)
    assert "reg" in trainer.stage_log[1]["final"]


def test_out_of_memory_names_the_keys_that_size_the_stage(tiny_base, small_split, tmp_path, monkeypatch):
    components = load_components(tiny_base)
    token = ConceptToken(components, "<v2>", "clothing").install()
    params = fast_params("dreambooth", steps=1, batch=4)["personalize"]
    data = TrainingData(images_to_pixels(load_class_images(small_split, 2).images, 28, 1),
                        "a photo of a <v2> clothing", Augmentation.from_params(params["augment"]))
    trainer = StageTrainer(components, token, data, TrainingOptions.from_params(params),
                           make_accelerator("cpu", "no"), torch.Generator().manual_seed(0),
                           CheckpointFolder(tmp_path / "partial", {"test": 1}),
                           method_stages("dreambooth", params, has_vae=False), method="dreambooth")

    def exhausted(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(components.unet, "forward", exhausted)
    with pytest.raises(LthashError) as error:
        trainer.run(0)
    message = str(error.value)
    for key in ("generate.personalize.dreambooth.stages.unet.batch_size (now 4)",
                "generate.personalize.gradient_accumulation_steps", "generate.personalize.gradient_checkpointing",
                "generate.personalize.mixed_precision", "CUDA out of memory"):
        assert key in message, message
    monkeypatch.setattr(components.unet, "forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="other"):  # any other error passes through
        trainer.run(0)


@pytest.mark.parametrize("method", ["attndreambooth", "dreambooth", "textual_inversion"])
@pytest.mark.parametrize("class_index", [TAIL_CLASS, 0])
def test_methods_on_a_one_image_class_and_a_normal_class(method, class_index, tiny_base, tail_split, tmp_path):
    extra = {}
    if method == "dreambooth" and class_index == TAIL_CLASS:
        extra = {"dreambooth": {"prior_preservation": {"enabled": True, "images": 2, "weight": 1.0},
                                "stages": {"unet": {"steps": 2, "batch_size": 2}}}}
    if method == "attndreambooth" and class_index == 0:
        extra = {"gradient_accumulation_steps": 2, "gradient_checkpointing": True}
    params = fast_params(method, **extra)
    out = personalize(tiny_base, tail_split, class_index, method, tmp_path / "concept", params, device="cpu")
    record = read_concept(out)
    counts = read_image_set(tail_split, "train").attrs["counts"]
    assert record["images"] == counts[class_index] and (class_index != TAIL_CLASS or record["images"] == 1)
    assert record["token"] == f"<v{class_index}>"
    expected_word = "accessory" if class_index == TAIL_CLASS else "clothing"
    assert record["category"] == expected_word and record["prompt"] == f"a photo of a <v{class_index}> {expected_word}"
    assert record["has_unet"] == (method != "textual_inversion")
    assert (out / "unet").exists() == record["has_unet"]
    assert len(list((out / "samples").glob("*.png"))) == len(record["stages"])
    assert not (tmp_path / "concept.partial").exists() and not list(tmp_path.glob(".concept*"))
    if "prior_preservation" in json.dumps(extra):
        assert "prior" in record["stages"][0]["final"]


def test_load_concept_round_trip(tiny_base, small_split, tmp_path):
    out = personalize(tiny_base, small_split, 5, "attndreambooth", tmp_path / "c5",
                      fast_params("attndreambooth"), device="cpu")
    base = load_components(tiny_base)
    components, prompt = load_concept(out, tiny_base)
    assert prompt == "a photo of a <v5> footwear"
    token_id = components.tokenizer.convert_tokens_to_ids("<v5>")
    ids = components.tokenizer(prompt, add_special_tokens=False).input_ids
    assert len(ids) == 6 and ids[4] == token_id
    weight = components.text_encoder.get_input_embeddings().weight
    base_weight = base.text_encoder.get_input_embeddings().weight
    others = torch.arange(weight.shape[0]) != token_id
    assert torch.equal(weight[others], base_weight[others])
    from lthash.io import load_safetensors

    row, _ = load_safetensors(out / "token_embedding.safetensors")
    assert torch.equal(weight[token_id], row["<v5>"]) and not torch.equal(weight[token_id], base_weight[token_id])
    from safetensors.torch import load_file

    saved = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    loaded = components.unet.state_dict()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert any(not torch.equal(loaded[k], v) for k, v in base.unet.state_dict().items())
    with torch.no_grad():
        assert not torch.equal(encode_prompts(components, [prompt]), encode_prompts(base, ["a photo of a footwear"]))


def test_stable_diffusion_path_with_vae(tiny_sd, small_split, tmp_path):
    out = personalize(tiny_sd, small_split, 1, "attndreambooth", tmp_path / "sd-concept",
                      fast_params("attndreambooth", steps=1, batch=2), device="cpu")
    record = read_concept(out)
    assert record["base_kind"] == "stable-diffusion" and record["has_unet"]
    assert [s["trains"] for s in record["stages"]] == ["embedding", "cross_attention", "unet"]
    components, prompt = load_concept(out, tiny_sd)
    assert components.vae is not None and prompt.startswith("a photo of a <v1> ")
    from lthash.generate.personalize.sampling import sample_images

    images = sample_images(components, [prompt] * 2, {"steps": 2}, torch.Generator().manual_seed(0))
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8


def test_bad_inputs_name_the_problem(tiny_base, tail_split, tmp_path, capsys):
    params = fast_params("textual_inversion")
    with pytest.raises(LthashError, match="unknown personalisation method 'lora'"):
        personalize(tiny_base, tail_split, 0, "lora", tmp_path / "x", params)
    with pytest.raises(LthashError, match="class index 12 is out of range"):
        personalize(tiny_base, tail_split, 12, "textual_inversion", tmp_path / "x", params)
    with pytest.raises(LthashError, match=r"class 3 \('Dress'\) has no images"):
        personalize(tiny_base, tail_split, EMPTY_CLASS, "textual_inversion", tmp_path / "x", params)
    from lthash.cli import main

    code = main(["personalize", "--base", str(tiny_base), "--split", str(tail_split), "--class", "3",
                 "--generator", "textual_inversion", "--out", str(tmp_path / "x"), "--device", "cpu",
                 "--params", json.dumps({"generate": {"personalize": {"schedule": "tiny"}}})])
    assert code == 2 and "has no images" in capsys.readouterr().err
    code = main(["personalize", "--base", str(tiny_base), "--split", str(tail_split), "--class", "0",
                 "--generator", "textual_inversion", "--out", str(tmp_path / "x"), "--device", "cpu",
                 "--params", json.dumps({"generate": {"personalize": {"schedule": "huge"}}})])
    assert code == 2 and "personalize.schedule" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_personalisation_registry_equals_the_schema_and_refuses_a_second_method_of_one_name():
    from pathlib import Path

    import yaml

    from lthash.generate.personalize.method import Method, get_method, method_names, personalised_names, register

    root = Path(__file__).resolve().parents[1]
    experiment = yaml.safe_load((root / "lthash/schemas/experiment.schema.yaml").read_text())
    generate = yaml.safe_load((root / "lthash/schemas/generate.schema.yaml").read_text())
    personalize = generate["properties"]["personalize"]["properties"]
    assert experiment["properties"]["generators"]["items"]["enum"] == method_names()
    assert [name for name in personalize if name in method_names()] == personalised_names()
    assert [name for name in method_names() if name not in personalised_names()] == ["base"]
    with pytest.raises(ValueError, match="registered twice"):
        register(Method(name="dreambooth", description="a second DreamBooth", seed_id=2))
    with pytest.raises(LthashError, match="allowed: base, attndreambooth, dreambooth, textual_inversion, joint"):
        get_method("lora")

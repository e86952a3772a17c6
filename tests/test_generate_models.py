"""Model components: tiny model build/save/load, the tiny random SD folder, bad folders."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from lthash.errors import LthashError
from lthash.generate.models import (build_tiny_components, decode, encode_images, encode_prompts,
                                    load_components, save_components, save_tiny_stable_diffusion)

WORDS = ["clothing", "footwear", "accessory"]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "sd", seed=0)


def test_word_tokenizer_keeps_words_and_placeholders_whole():
    parts = build_tiny_components(WORDS, image_size=28, channels=1, seed=0)
    tok = parts.tokenizer
    for word in WORDS + ["photo", "of", "a"]:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1
    assert tok.add_tokens(["<v0>"]) == 1
    ids = tok("a photo of a <v0> clothing", add_special_tokens=False).input_ids
    assert len(ids) == 6 and ids[4] == tok.convert_tokens_to_ids("<v0>")
    # a placeholder added later still has an embedding row without resizing
    assert ids[4] < parts.text_encoder.get_input_embeddings().weight.shape[0]
    assert encode_prompts(parts, ["a photo of a <v0> clothing"]).shape == (1, 16, 64)


def test_tiny_round_trip(tmp_path):
    parts = build_tiny_components(WORDS, image_size=28, channels=1, seed=3)
    save_components(parts, tmp_path / "base")
    assert not list(tmp_path.glob(".base*"))
    loaded = load_components(tmp_path / "base")
    assert loaded.kind == "tiny" and loaded.vae is None and (loaded.image_size, loaded.channels) == (28, 1)
    for (name, a), b in zip(parts.unet.state_dict().items(), loaded.unet.state_dict().values()):
        assert torch.equal(a, b), name
    prompts = ["a photo of a footwear", ""]
    with torch.no_grad():
        assert torch.equal(encode_prompts(parts, prompts), encode_prompts(loaded, prompts))
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    x = encode_images(loaded, images)
    assert x.shape == (3, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(decode(loaded, x, (28, 28, 1)), images)
    assert decode(loaded, x, (32, 32, 3)).shape == (3, 32, 32, 3)


def test_tiny_stable_diffusion_folder_through_the_real_loader(tiny_sd):
    parts = load_components(tiny_sd)
    assert parts.kind == "stable-diffusion" and parts.vae is not None
    assert type(parts.noise_scheduler).__name__ == "DDPMScheduler"
    assert parts.model_shape == (4, 16, 16) and parts.channels == 3
    grey = np.random.default_rng(1).integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    latents = encode_images(parts, grey, generator=torch.Generator().manual_seed(0))
    assert latents.shape == (2, 4, 16, 16)
    out = decode(parts, latents, (28, 28, 1))
    assert out.shape == (2, 28, 28, 1) and out.dtype == np.uint8
    with torch.no_grad():
        hidden = encode_prompts(parts, ["a photo of a clothing"] * 2)
        pred = parts.unet(latents, torch.tensor([10, 500]), encoder_hidden_states=hidden).sample
    assert pred.shape == latents.shape


def test_sd15_architecture_has_stable_diffusion_15s_shapes():
    """The full-size random SD 1.5 (bench_true_shapes.py writes it) has the public configs' shapes:
    built on the meta device here (no memory), its parameter counts are SD 1.5's."""
    from accelerate import init_empty_weights

    from lthash.generate.stable_diffusion import build_stable_diffusion

    with init_empty_weights():
        parts = build_stable_diffusion("sd15")
    counts = [sum(p.numel() for p in m.parameters()) for m in (parts.unet, parts.text_encoder, parts.vae)]
    assert counts == [859_520_964, 123_060_480, 83_653_863]
    assert parts.model_shape == (4, 64, 64) and parts.image_size == 512 and parts.max_length() == 77
    assert len(parts.tokenizer) == parts.text_encoder.config.vocab_size == 49408
    assert parts.vae.config.scaling_factor == 0.18215 and parts.unet.config.cross_attention_dim == 768
    assert parts.noise_scheduler.config.beta_schedule == "scaled_linear"
    ids = parts.tokenizer("a photo of a object", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and max(ids) < 49408 and "<|filler" not in "".join(parts.tokenizer.convert_ids_to_tokens(ids))


def test_missing_parts_are_named(tiny_sd, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd, broken)
    shutil.rmtree(broken / "unet")
    shutil.rmtree(broken / "vae")
    with pytest.raises(LthashError, match=r"unet.*vae|vae.*unet"):
        load_components(broken)
    with pytest.raises(LthashError, match="not found"):
        load_components(tmp_path / "nowhere")


def test_weights_must_be_safetensors(tiny_sd, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_sd, pickled)
    weights = pickled / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(LthashError, match=r"unet.*safetensors"):
        load_components(pickled)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_sd, corrupt)
    (corrupt / "text_encoder" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(LthashError, match="text_encoder"):
        load_components(corrupt)

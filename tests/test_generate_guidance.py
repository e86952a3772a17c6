"""Guidance against the super-category (generate.synthesis.guidance_reference) on real tiny bases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lthash.config import validate_config
from lthash.errors import LthashError
from lthash.generate.models import build_tiny_components, load_components
from lthash.generate.sampler import SamplerConfig, generate
from lthash.generate.shipped import MODELS_DIR
from lthash.generate.synthesize import guidance_reference

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def test_the_reference_is_the_empty_prompt_or_the_class_super_category():
    components = load_components(MODELS_DIR / "fashion-mnist-categories")
    assert guidance_reference(components, "empty", CLASSES, None, 7) == ""
    assert guidance_reference(components, "category", CLASSES, None, 7) == "a photo of a footwear"
    assert guidance_reference(components, "category", CLASSES, None, 8) == "a photo of a accessory"
    with pytest.raises(LthashError, match="generate.synthesis.guidance_reference"):
        guidance_reference(components, "negative", CLASSES, None, 0)
    with pytest.raises(LthashError, match="generate.synthesis.guidance_reference"):
        validate_config({"dataset": {}, "generate": {"synthesis": {"guidance_reference": "class"}}})


def test_a_category_word_the_tokenizer_never_saw_is_refused_naming_the_key():
    components = build_tiny_components(["digit"], 28, 1, 0, {"block_out_channels": [8, 16], "norm_num_groups": 4,
                                                              "text_hidden_size": 16, "text_heads": 2})
    with pytest.raises(LthashError, match="guidance_reference.*'clothing'"):
        guidance_reference(components, "category", CLASSES, None, 0)


def test_guidance_against_the_category_draws_other_images_than_against_the_empty_prompt(one_torch_thread):
    components = load_components(MODELS_DIR / "fashion-mnist-class-names")
    sampler = SamplerConfig.for_model(components, {"steps": 4})
    prompt = "a photo of a sneaker"
    plain = generate(components, [prompt] * 4, torch.Generator().manual_seed(0), sampler)
    again = generate(components, [prompt] * 4, torch.Generator().manual_seed(0), sampler, negative_prompt="")
    against = generate(components, [prompt] * 4, torch.Generator().manual_seed(0), sampler,
                       negative_prompt="a photo of a sandal")
    assert np.array_equal(plain, again)
    assert np.abs(plain.astype(int) - against.astype(int)).mean() > 1.0

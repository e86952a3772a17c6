"""The sampler draws exactly what the plain classifier-free-guidance loop over the same model
draws (:func:`lthash.generate.reference.reference_draw`). A change to
:func:`lthash.generate.sampler.generate` made for speed must keep the images bit-identical to
it, or be reported as a change of the images.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lthash.errors import LthashError
from lthash.generate.models import encode_prompts, load_components
from lthash.generate.sampler import SamplerConfig, generate
from lthash.generate.reference import reference_draw
from lthash.generate.shipped import MODELS_DIR
from lthash.io import read_image_set

PROMPT = "a photo of a dress"


@pytest.fixture(scope="module")
def tiny():
    """The shipped base (the default workflow's model)."""
    return load_components(MODELS_DIR / "fashion-mnist-class-names")


def test_text_to_image_is_bit_identical_to_the_plain_loop(tiny):
    sampler = SamplerConfig.for_model(tiny, {"steps": 4, "batch_size": 12})
    drawn = generate(tiny, [PROMPT] * 12, torch.Generator().manual_seed(5), sampler, size=(28, 28, 1))
    expected = reference_draw(tiny, PROMPT, 12, 5, 4, sampler.guidance, (28, 28, 1))
    assert drawn.shape == (12, 28, 28, 1) and len(np.unique(drawn)) > 100
    np.testing.assert_array_equal(drawn, expected)


def test_image_to_image_is_bit_identical_to_the_plain_loop(tiny, small_split):
    init = read_image_set(small_split, "train").images[:10]
    sampler = SamplerConfig.for_model(tiny, {"steps": 6, "batch_size": 10})
    drawn = generate(tiny, [PROMPT] * 10, torch.Generator().manual_seed(2), sampler, size=(28, 28, 1),
                     init_images=init, strength=0.5)
    expected = reference_draw(tiny, PROMPT, 10, 2, 6, sampler.guidance, (28, 28, 1), init, 0.5)
    np.testing.assert_array_equal(drawn, expected)


def test_drawing_leaves_the_model_trainable_afterwards(tiny):
    """Sampling runs without autograd, and nothing it caches breaks a later training step."""
    generate(tiny, [PROMPT] * 2, torch.Generator().manual_seed(0), SamplerConfig.for_model(tiny, {"steps": 2}))
    tiny.unet.train()
    tiny.unet.requires_grad_(True)
    try:
        hidden = encode_prompts(tiny, [PROMPT] * 2)
        out = tiny.unet(torch.randn(2, *tiny.model_shape), 10, encoder_hidden_states=hidden).sample
        out.square().mean().backward()
        assert all(p.grad is not None for p in tiny.unet.parameters())
    finally:
        tiny.unet.zero_grad(set_to_none=True)
        tiny.unet.requires_grad_(False)
        tiny.unet.eval()


def test_sampler_defaults_by_model_kind_then_params(tiny):
    """The defaults each kind had before they moved to SAMPLER_DEFAULTS; non-null params naming
    a field override them, other keys are ignored, an unknown kind is refused."""
    assert SamplerConfig.for_model(tiny) == SamplerConfig("ddim", 6, 3.0, 256, "trailing", "auto")
    stable_diffusion = SimpleNamespace(kind="stable-diffusion")
    assert SamplerConfig.for_model(stable_diffusion) == SamplerConfig("dpm", 50, 7.5, 8, "leading", "auto")
    assert SamplerConfig.for_model(stable_diffusion, {"steps": 20, "guidance": None, "strength": [0.5]}) == \
        SamplerConfig("dpm", 20, 7.5, 8, "leading", "auto")
    with pytest.raises(LthashError, match="no sampler defaults for model kind 'other'"):
        SamplerConfig.for_model(SimpleNamespace(kind="other"))

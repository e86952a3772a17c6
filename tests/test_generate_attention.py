"""Cross-attention capture and the AttnDreamBooth regulariser (seed paper eq. 1)."""

from __future__ import annotations

import pytest
import torch

from lthash.generate.attention import capture_cross_attention, cross_attention_layer_names
from lthash.generate.models import build_tiny_components, encode_prompts, load_components, save_tiny_stable_diffusion
from lthash.generate.regularizer import attention_moments, attention_regularizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_components(["clothing", "footwear"], image_size=28, channels=1, seed=0)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return load_components(save_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "sd", seed=0))


def _expected_pixels(unet, name: str, height: int) -> int:
    """Pixels of the feature map an attn2 layer sees: down/up block level or the lowest level."""
    levels = len(unet.config.block_out_channels)
    parts = name.split(".")
    if parts[0] == "mid_block":
        level = levels - 1
    elif parts[0] == "down_blocks":
        level = int(parts[1])
    else:
        level = levels - 1 - int(parts[1])
    return (height // 2 ** level) ** 2


@pytest.mark.parametrize("which", ["tiny", "tiny_sd"])
def test_capture_shapes_every_cross_attention_layer(which, request):
    parts = request.getfixturevalue(which)
    unet = parts.unet
    channels, height, _ = parts.model_shape
    context = encode_prompts(parts, ["a photo of a clothing", "a photo of a footwear"]).detach()
    x = torch.randn(2, channels, height, height, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])
    with torch.no_grad():
        reference = unet(x, t, context).sample
    before = dict(unet.attn_processors)
    with capture_cross_attention(unet, [4, 5]) as store:
        with torch.no_grad():
            out = unet(x, t, context).sample
        names = cross_attention_layer_names(unet)
        assert names and sorted(store.maps) == sorted(names)
        for name, maps in store.maps.items():
            attn = unet.get_submodule(name.rsplit(".", 1)[0])
            assert maps.shape == (2, attn.heads, _expected_pixels(unet, name, height), 2), name
            assert (maps >= 0).all() and (maps <= 1).all()
        # self-attention keeps its processor
        for name, proc in unet.attn_processors.items():
            if "attn1" in name:
                assert proc is before[name]
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-4)
    assert all(unet.attn_processors[name] is proc for name, proc in before.items())


def test_capture_per_sample_positions_and_full_rows(tiny):
    unet = tiny.unet
    context = encode_prompts(tiny, ["a photo of a clothing"] * 2).detach()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    everything = list(range(context.shape[1]))
    with capture_cross_attention(unet, everything) as store, torch.no_grad():
        unet(x, torch.tensor([3, 3]), context)
        full = dict(store.maps)
    for maps in full.values():  # probabilities over the text tokens sum to one
        torch.testing.assert_close(maps.sum(-1), torch.ones_like(maps.sum(-1)))
    positions = torch.tensor([[4, 5], [5, 4]])
    with capture_cross_attention(unet, positions) as store, torch.no_grad():
        unet(x, torch.tensor([3, 3]), context)
    for name, maps in store.maps.items():
        torch.testing.assert_close(maps[0], full[name][0][..., [4, 5]])
        torch.testing.assert_close(maps[1], full[name][1][..., [5, 4]])


def test_regularizer_matches_hand_computation():
    # layer A, batch of 2, 1 head, 2 pixels, columns ([V], category)
    layer_a = torch.tensor([
        [[[0.2, 0.1], [0.4, 0.5]]],   # sample 0: V=(0.2,0.4) mu .3 var .01; cat=(0.1,0.5) mu .3 var .04
        [[[0.6, 0.2], [0.6, 0.2]]],   # sample 1: V mu .6 var 0; cat mu .2 var 0
    ])
    # layer B, batch of 2, 2 heads, 1 pixel
    layer_b = torch.tensor([
        [[[0.0, 0.5]], [[1.0, 0.5]]],  # V=(0,1) mu .5 var .25; cat=(.5,.5) mu .5 var 0
        [[[0.3, 0.1]], [[0.3, 0.3]]],  # V mu .3 var 0; cat=(.1,.3) mu .2 var .01
    ])
    lm, lv = 2.0, 5.0
    a = (lm * 0.0 ** 2 + lv * (0.01 - 0.04) ** 2) + (lm * 0.4 ** 2 + lv * 0.0 ** 2)
    b = (lm * 0.0 ** 2 + lv * 0.25 ** 2) + (lm * 0.1 ** 2 + lv * 0.01 ** 2)
    loss = attention_regularizer({"a": layer_a, "b": layer_b}, lm, lv)
    assert loss.item() == pytest.approx((a + b) / 2, rel=1e-5)
    mu, var = attention_moments(layer_b[..., 0])
    torch.testing.assert_close(mu, torch.tensor([0.5, 0.3]))
    torch.testing.assert_close(var, torch.tensor([0.25, 0.0]))
    assert attention_regularizer({"a": layer_a}, 0.0, 0.0).item() == 0.0


def test_regularizer_gradient_reaches_cross_attention_only(tiny):
    unet = tiny.unet
    unet.requires_grad_(True)
    context = encode_prompts(tiny, ["a photo of a clothing footwear"] * 2).detach()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    try:
        with capture_cross_attention(unet, [5, 6]) as store:
            unet(x, torch.tensor([100, 900]), context)
            loss = attention_regularizer(store.maps, 2.0, 5.0)
        unet.zero_grad()
        loss.backward()
        grads = {name: p.grad for name, p in unet.named_parameters()}
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "attn2.to_k" in n)
        assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if "up_blocks.2" in n)
    finally:
        unet.zero_grad(set_to_none=True)
        unet.requires_grad_(False)


def test_regularizer_under_gradient_checkpointing_keeps_the_forward_maps(tiny_sd):
    """Checkpointed backward recomputes every layer: the gradient equals the plain one and the
    store still holds the forward pass's maps, not the recomputed ones (whose graphs it would pin)."""
    unet = tiny_sd.unet
    channels, height, _ = tiny_sd.model_shape
    context = encode_prompts(tiny_sd, ["a photo of a clothing footwear"] * 2).detach()
    x = torch.randn(2, channels, height, height, generator=torch.Generator().manual_seed(3))
    grads = []
    unet.requires_grad_(True)
    unet.train()
    try:
        for checkpointing in (False, True):
            if checkpointing:
                unet.enable_gradient_checkpointing()
            with capture_cross_attention(unet, [5, 6]) as store:
                unet(x, torch.tensor([100, 900]), context)
                forward_maps = dict(store.maps)
                loss = attention_regularizer(store.maps, 2.0, 5.0)
                unet.zero_grad(set_to_none=True)
                loss.backward()
                assert all(store.maps[name] is forward_maps[name] for name in forward_maps)
            grads.append({n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None})
    finally:
        unet.disable_gradient_checkpointing()
        unet.eval()
        unet.zero_grad(set_to_none=True)
        unet.requires_grad_(False)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-7)

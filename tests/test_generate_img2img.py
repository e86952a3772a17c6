"""Real-guided synthesis (image-to-image, diffusers' strength semantics) on the tiny model and
a tiny random Stable Diffusion pipeline, and shards that start from the class's training images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lthash.config import validate_config
from lthash.errors import LthashError
from lthash.workflow import stage_config
from lthash.generate.models import build_tiny_components, load_components, save_tiny_stable_diffusion
from lthash.generate.sampler import SamplerConfig, generate
from lthash.generate.plan import make_plan
from lthash.generate.synthesize import init_choice, synthesize_shard
from lthash.io import read_attrs, read_image_set

TINY = {"block_out_channels": [8, 16], "norm_num_groups": 4, "text_hidden_size": 16, "text_heads": 2}
PROMPT = "a photo of a clothing"


@pytest.fixture(scope="module")
def tiny():
    components = build_tiny_components(["clothing", "footwear", "accessory"], 28, 1, 0, TINY)
    components.unet.eval()
    return components


@pytest.fixture(scope="module")
def init_images(small_split):
    return read_image_set(small_split, "train").images[:6]


class Calls:
    """Counts forward passes of a module (the UNet runs once per denoising step and batch)."""

    def __init__(self, module):
        self.n = 0
        self.handle = module.register_forward_hook(self._count)

    def _count(self, *_):
        self.n += 1

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.handle.remove()


def draw(components, images, steps, strength=1.0, scheduler=None, seed=1, size=None):
    sampler = SamplerConfig.for_model(components, {"steps": steps, "scheduler": scheduler})
    with Calls(components.unet) as calls:
        out = generate(components, [PROMPT] * 6, torch.Generator().manual_seed(seed), sampler, size=size,
                       init_images=images, strength=strength)
    return out, calls.n


def mse(a, b):
    return float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())


@pytest.mark.parametrize("steps,strength,expected", [(6, 0.5, 3), (6, 1.0, 6), (6, 0.34, 2), (10, 0.25, 2)])
def test_strength_sets_the_denoising_steps_run(tiny, init_images, steps, strength, expected):
    assert draw(tiny, init_images, steps, strength)[1] == expected


@pytest.mark.parametrize("scheduler", ["dpm", "euler", "ddpm"])
def test_other_schedulers_run_the_tail_of_their_timesteps(tiny, init_images, scheduler):
    out, calls = draw(tiny, init_images, 6, 0.5, scheduler)
    assert calls == 3 and out.shape == (6, 28, 28, 1)


def test_small_strength_stays_near_the_init_image_and_strength_one_is_noise(tiny, init_images):
    near, calls = draw(tiny, init_images, 20, 0.05)
    assert calls == 1
    full, _ = draw(tiny, init_images, 6, 1.0)
    text_to_image, noise_calls = draw(tiny, None, 6)
    assert noise_calls == 6
    assert mse(near, init_images) < 300  # RMS error ~ 11 grey levels after one step from t=49
    assert mse(full, init_images) > 30 * mse(near, init_images)
    # strength 1 noises the init image to the last training timestep: the same start as noise
    assert mse(full, text_to_image) < 0.01 * mse(full, init_images)


def test_same_seed_same_images_and_bad_strength_is_named(tiny, init_images):
    a, _ = draw(tiny, init_images, 6, 0.5, seed=4)
    b, _ = draw(tiny, init_images, 6, 0.5, seed=4)
    c, _ = draw(tiny, init_images, 6, 0.5, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(LthashError, match="strength.*steps"):
        draw(tiny, init_images, 6, 0.1)  # int(0.6) = 0 steps would run
    with pytest.raises(LthashError, match="init images for 6 prompts"):
        draw(tiny, init_images[:2], 6, 0.5)


@pytest.mark.parametrize("bad,message", [({"strength": 0}, r"number in \(0, 1\]"), ({"strength": -0.5}, "number in"),
                                         ({"strength": 1.5}, "number in"), ({"strength": [0.5, 1.2]}, "list of"),
                                         ({"strength": []}, "non-empty list"), ({"init": "photo"}, "is not one of")])
def test_schema_refuses_bad_synthesis_settings(bad, message):
    with pytest.raises(LthashError, match=rf"generate\.synthesis\.{list(bad)[0]}'.*{message}"):
        validate_config({"dataset": {}, "generate": {"synthesis": bad}})


def test_stable_diffusion_img2img_goes_through_the_vae(tmp_path, init_images):
    sd = load_components(save_tiny_stable_diffusion(tmp_path / "sd"))
    assert sd.vae is not None and sd.image_size == 32
    with Calls(sd.vae.encoder) as encodes:
        out, calls = draw(sd, init_images, 4, 0.5, size=(28, 28, 1))
    assert encodes.n == 1 and calls == 2 and out.shape == (6, 28, 28, 1)
    again, _ = draw(sd, init_images, 4, 0.5, size=(28, 28, 1))
    np.testing.assert_array_equal(out, again)
    other, _ = draw(sd, init_images[::-1].copy(), 4, 0.5, size=(28, 28, 1))
    assert not np.array_equal(out, other)  # the init images steer the result


def test_init_choice_is_a_seeded_cycled_permutation():
    picks = init_choice(np.arange(100, 107), 30, seed=9)
    counts = np.bincount(picks, minlength=7)
    assert counts.min() == 4 and counts.max() == 5
    assert len(set(picks[:7].tolist())) == 7
    np.testing.assert_array_equal(picks, init_choice(np.arange(100, 107), 30, seed=9))
    assert not np.array_equal(picks, init_choice(np.arange(100, 107), 30, seed=10))


@pytest.fixture(scope="module")
def shard_setup(small_split, tiny_clothing_base):
    base = tiny_clothing_base
    names = read_attrs(small_split)["class_names"]
    plan = make_plan([60, 30, 20, 15, 12, 10, 8, 7, 6, 6], names, pretrain_per_class=20, shard_size=20)
    return base, plan


def shard(shard_setup, small_split, out, cls=3, **synthesis):
    base, plan = shard_setup
    params = {"seed": 3, "synthesis": {"steps": 4, "batch_size": 16, "init": "real", "strength": 0.5, **synthesis}}
    return synthesize_shard(base, None, cls, "pretrain", 0, plan, small_split, out,
                            stage_config("synthesize", json.dumps(params))["generate"], progress=False)


def test_real_shard_starts_from_the_class_train_images_and_records_them(shard_setup, small_split, tmp_path):
    train = read_image_set(small_split, "train")
    for cls in (3, 8):
        shard(shard_setup, small_split, tmp_path / f"c{cls}.h5", cls=cls)
        got = read_image_set(tmp_path / f"c{cls}.h5", "synthetic")
        allowed = train.index[train.labels == cls]
        assert got.images.shape == (20, 28, 28, 1)
        assert set(got.extra["init_index"].tolist()) <= set(allowed.tolist())
        used = np.unique(got.extra["init_index"], return_counts=True)[1]
        assert len(used) == min(20, len(allowed)) and used.max() - used.min() <= 1
        assert got.attrs["init"] == "real" and got.attrs["strength"] == pytest.approx(0.5)
        # every synthetic image resembles its recorded init image more than the others
        source = {int(i): img for i, img in zip(train.index, train.images)}
        inits = np.stack([source[int(i)] for i in got.extra["init_index"]])
        assert mse(got.images, inits) < mse(got.images, inits[::-1])
    shard(shard_setup, small_split, tmp_path / "again.h5", cls=8)
    again = read_image_set(tmp_path / "again.h5", "synthetic")
    first = read_image_set(tmp_path / "c8.h5", "synthetic")
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.extra["init_index"], first.extra["init_index"])


def test_editing_strength_or_init_redraws_the_shard(shard_setup, small_split, tmp_path):
    out = tmp_path / "s.h5"
    assert shard(shard_setup, small_split, out, strength=0.5)["skipped"] is False
    assert shard(shard_setup, small_split, out, strength=0.5)["skipped"] is True
    assert shard(shard_setup, small_split, out, strength=0.75)["skipped"] is False
    assert shard(shard_setup, small_split, out, init="noise")["skipped"] is False
    noise = read_image_set(out, "synthetic")
    assert noise.attrs["init"] == "noise" and "init_index" not in noise.extra


def test_a_strength_set_gives_each_image_one_of_its_strengths_and_records_it(shard_setup, small_split, tmp_path):
    strengths = [0.25, 0.5, 1.0]
    shard(shard_setup, small_split, tmp_path / "set.h5", strength=strengths)
    got = read_image_set(tmp_path / "set.h5", "synthetic")
    drawn = got.extra["strength"]
    assert sorted(set(drawn.tolist())) == strengths, "20 draws from 3 values use every value"
    assert got.attrs["strength"] == strengths
    shard(shard_setup, small_split, tmp_path / "again.h5", strength=[1.0, 0.5, 0.25])
    again = read_image_set(tmp_path / "again.h5", "synthetic")
    np.testing.assert_array_equal(again.images, got.images)
    np.testing.assert_array_equal(again.extra["strength"], drawn)
    train = read_image_set(small_split, "train")
    source = {int(i): img for i, img in zip(train.index, train.images)}
    inits = np.stack([source[int(i)] for i in got.extra["init_index"]])
    low, high = drawn == 0.25, drawn == 1.0
    assert mse(got.images[low], inits[low]) < mse(got.images[high], inits[high]), \
        "images drawn at strength 0.25 stay nearer their init image than those at 1.0"
    assert shard(shard_setup, small_split, tmp_path / "set.h5", strength=strengths)["skipped"] is True
    assert shard(shard_setup, small_split, tmp_path / "set.h5", strength=[0.25, 0.5])["skipped"] is False


def test_a_single_strength_and_a_set_of_one_draw_the_same_images(shard_setup, small_split, tmp_path):
    shard(shard_setup, small_split, tmp_path / "one.h5", strength=0.5)
    shard(shard_setup, small_split, tmp_path / "set.h5", strength=[0.5])
    np.testing.assert_array_equal(read_image_set(tmp_path / "one.h5", "synthetic").images,
                                  read_image_set(tmp_path / "set.h5", "synthetic").images)


def test_every_value_of_a_strength_set_must_run_a_step_before_any_image_is_drawn(shard_setup, small_split, tmp_path):
    with pytest.raises(LthashError, match="strength.*steps"):
        shard(shard_setup, small_split, tmp_path / "bad.h5", strength=[0.5, 0.1])  # 4 x 0.1 runs no step
    assert not (tmp_path / "bad.h5").exists()

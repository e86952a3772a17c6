"""Random Stable-Diffusion-shaped models built from architecture configs, saved like real checkpoints.

:data:`SD_SPECS` holds ``tiny`` (the tests' model, 32 px) and ``sd15`` (SD 1.5's public
unet/vae/text_encoder configs, full size: UNet 859.5 M, text encoder 123.1 M, VAE 83.7 M
parameters). Weights are random; nothing is downloaded. :func:`save_stable_diffusion` writes a
folder that :func:`lthash.generate.models.load_components` reads exactly as a downloaded one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from lthash.errors import LthashError
from lthash.generate.models import DiffusionComponents
from lthash.generate.tokenizer import build_word_tokenizer


@dataclass(frozen=True)
class StableDiffusionSpec:
    """Architecture of a random Stable-Diffusion-shaped model (UNet, AutoencoderKL, CLIP text encoder).

    ``vocab_size`` None = the word tokenizer's size + 16 spare rows (tiny); a number pads the
    tokenizer's vocabulary with never-produced filler entries to exactly that size and gives
    the text encoder as many rows, as a real CLIP tokenizer and encoder have (49,408 for SD 1.x),
    so a personalisation token grows the table through ``resize_token_embeddings`` as with a
    real checkpoint.
    """

    image_size: int
    unet_blocks: tuple[int, ...]
    unet_down: tuple[str, ...]
    unet_up: tuple[str, ...]
    unet_layers: int
    unet_norm_groups: int
    attention_head_dim: int
    vae_blocks: tuple[int, ...]
    vae_layers: int
    vae_norm_groups: int
    text_hidden: int
    text_intermediate: int
    text_layers: int
    text_heads: int
    max_length: int
    vocab_size: int | None = None
    text_act: str = "quick_gelu"


# The public architecture configs: SD 1.5's unet/, vae/ and text_encoder/ config.json (runwayml
# stable-diffusion-v1-5) and a tiny model of the same layout for the tests.
SD_SPECS: dict[str, StableDiffusionSpec] = {
    "tiny": StableDiffusionSpec(
        image_size=32, unet_blocks=(16, 32), unet_down=("DownBlock2D", "CrossAttnDownBlock2D"),
        unet_up=("CrossAttnUpBlock2D", "UpBlock2D"), unet_layers=1, unet_norm_groups=8, attention_head_dim=4,
        vae_blocks=(8, 16), vae_layers=1, vae_norm_groups=4, text_hidden=32, text_intermediate=37,
        text_layers=2, text_heads=4, max_length=16),
    "sd15": StableDiffusionSpec(
        image_size=512, unet_blocks=(320, 640, 1280, 1280),
        unet_down=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        unet_up=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, unet_layers=2, unet_norm_groups=32,
        attention_head_dim=8, vae_blocks=(128, 256, 512, 512), vae_layers=2, vae_norm_groups=32,
        text_hidden=768, text_intermediate=3072, text_layers=12, text_heads=12, max_length=77,
        vocab_size=49408),
}
SD_WORDS = ("clothing", "footwear", "accessory", "digit", "object")


def stable_diffusion_spec(name: str) -> StableDiffusionSpec:
    """The named architecture of :data:`SD_SPECS` (``tiny`` or ``sd15``)."""
    if name not in SD_SPECS:
        raise LthashError(f"unknown Stable Diffusion architecture {name!r} (known: {', '.join(SD_SPECS)})")
    return SD_SPECS[name]


def build_stable_diffusion(spec: str | StableDiffusionSpec = "tiny", seed: int = 0, image_size: int | None = None,
                           words: Iterable[str] = SD_WORDS) -> DiffusionComponents:
    """A RANDOM Stable-Diffusion-shaped model (latent UNet, AutoencoderKL, CLIP text encoder) of ``spec``.

    Built from configs so tests and the true-shape benchmark exercise the real-checkpoint path
    (VAE encode/decode, latent UNet, RGB images) without any download. ``image_size`` None =
    the spec's. Modules are created in a fixed order after ``torch.manual_seed(seed)``.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    spec = stable_diffusion_spec(spec) if isinstance(spec, str) else spec
    image_size = int(image_size or spec.image_size)
    tokenizer = build_word_tokenizer(words, spec.max_length, vocab_size=spec.vocab_size)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=spec.vocab_size or len(tokenizer) + 16, hidden_size=spec.text_hidden,
        intermediate_size=spec.text_intermediate, num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads, max_position_embeddings=spec.max_length, hidden_act=spec.text_act,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=spec.text_hidden))
    levels = len(spec.vae_blocks)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=spec.vae_blocks,
        latent_channels=4, layers_per_block=spec.vae_layers, norm_num_groups=spec.vae_norm_groups,
        sample_size=image_size)
    unet = UNet2DConditionModel(
        sample_size=image_size // 2 ** (levels - 1), in_channels=4, out_channels=4,
        down_block_types=spec.unet_down, up_block_types=spec.unet_up, block_out_channels=spec.unet_blocks,
        layers_per_block=spec.unet_layers, cross_attention_dim=spec.text_hidden,
        attention_head_dim=spec.attention_head_dim, norm_num_groups=spec.unet_norm_groups)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False, prediction_type="epsilon")
    return DiffusionComponents(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                               noise_scheduler=scheduler, vae=vae, image_size=image_size, channels=3,
                               kind="stable-diffusion", info={})


def save_stable_diffusion(path: str | os.PathLike, spec: str | StableDiffusionSpec = "tiny", seed: int = 0,
                          image_size: int | None = None, words: Iterable[str] = SD_WORDS) -> Path:
    """Save a random Stable Diffusion pipeline of ``spec`` the way real checkpoints ship.

    Written with ``StableDiffusionPipeline.save_pretrained`` (model_index.json, a PNDM
    scheduler config as SD 1.x ships, no lthash metadata, safetensors), so
    :func:`load_components` treats it exactly like a downloaded checkpoint. ``sd15`` is
    about 4.3 GB in fp32 (UNet 860 M, text encoder 123 M, VAE 84 M parameters).
    """
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    parts = build_stable_diffusion(spec, seed, image_size, words)
    scheduler = PNDMScheduler.from_config(parts.noise_scheduler.config, skip_prk_steps=True, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                                   unet=parts.unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    from lthash.io import atomic_dir

    path = Path(path)
    with atomic_dir(path) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
    return path

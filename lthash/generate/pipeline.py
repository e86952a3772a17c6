"""Text-to-image sampling with classifier-free guidance over :class:`DiffusionComponents`.

Schedulers are built from the model's training (DDPM) schedule, so one pipeline serves the
tiny pixel model and Stable Diffusion checkpoints alike.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from lthash.errors import LthashError
from lthash.generate.models import DiffusionComponents, decode, encode_prompts

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
}


@dataclass
class SamplerConfig:
    """How images are drawn: scheduler name, denoising steps, guidance scale, batch size."""

    scheduler: str = "ddim"
    steps: int = 6
    guidance: float = 3.0
    batch_size: int = 256
    timestep_spacing: str = "trailing"
    mixed_precision: str = "auto"

    @classmethod
    def for_model(cls, components: DiffusionComponents, params: dict | None = None) -> "SamplerConfig":
        """Defaults by model kind, then ``params``.

        Tiny: DDIM 6 steps, guidance 3 (measured on the default base: as faithful as DDIM 10 at
        1.7x the speed; more steps score worse on an under-trained model). Stable Diffusion: the
        reference's DPM-Solver multistep, 50 steps, guidance 7.5.
        """
        params = {key: value for key, value in (params or {}).items() if value is not None}
        if components.kind == "tiny":
            base = cls(scheduler="ddim", steps=6, guidance=3.0)
        else:
            base = cls(scheduler="dpm", steps=50, guidance=7.5, batch_size=8, timestep_spacing="leading")
        fields = set(cls.__dataclass_fields__)
        return cls(**{**base.__dict__, **{k: v for k, v in params.items() if k in fields}})


def make_scheduler(name: str, components: DiffusionComponents, timestep_spacing: str = "trailing"):
    """A sampling scheduler configured from the model's own noise schedule."""
    import diffusers

    if name not in SCHEDULERS:
        raise LthashError(f"unknown scheduler {name!r} (choose from {sorted(SCHEDULERS)})")
    cls = getattr(diffusers, SCHEDULERS[name])
    extra = {"timestep_spacing": timestep_spacing}
    if name == "ddim":
        extra["set_alpha_to_one"] = False
    if name == "pndm":
        extra["skip_prk_steps"] = True
    return cls.from_config(components.noise_scheduler.config, **extra)


def autocast_context(device: torch.device, mixed_precision: str):
    """fp16/bf16 autocast on a GPU; plain float32 on CPU (autocast gains nothing there)."""
    if device.type != "cuda" or mixed_precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mixed_precision == "bf16" or (
        mixed_precision == "auto" and torch.cuda.is_bf16_supported()) else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


@torch.no_grad()
def generate(
    components: DiffusionComponents,
    prompts: Sequence[str],
    generator: torch.Generator,
    sampler: SamplerConfig,
    size: tuple[int, int, int] | None = None,
    negative_prompt: str = "",
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Draw one image per prompt; returns uint8 N x H x W x C (``size`` = (H, W, C) or the model's).

    Initial noise comes from ``generator`` batch after batch, so a fixed seed, prompt list
    and batch size give identical images.
    """
    scheduler = make_scheduler(sampler.scheduler, components, sampler.timestep_spacing)
    device = components.device
    unet = components.unet
    shape = components.model_shape
    size = size or (components.image_size, components.image_size, components.channels)
    guided = sampler.guidance != 1.0
    outputs = []
    for start in range(0, len(prompts), sampler.batch_size):
        batch = list(prompts[start:start + sampler.batch_size])
        n = len(batch)
        noise = torch.randn((n, *shape), generator=generator, dtype=torch.float32)
        with autocast_context(device, sampler.mixed_precision):
            hidden = encode_prompts(components, batch + [negative_prompt] * n if guided else batch)
            scheduler.set_timesteps(sampler.steps, device=device)
            x = (noise * scheduler.init_noise_sigma).to(device)
            for t in scheduler.timesteps:
                model_in = torch.cat([x, x]) if guided else x
                model_in = scheduler.scale_model_input(model_in, t)
                pred = unet(model_in.to(unet.dtype), t, encoder_hidden_states=hidden.to(unet.dtype)).sample.float()
                if guided:
                    cond, uncond = pred.chunk(2)
                    pred = uncond + sampler.guidance * (cond - uncond)
                x = scheduler.step(pred, t, x, generator=generator).prev_sample
        outputs.append(decode(components, x, size))
        if on_batch is not None:
            on_batch(n)
    if not outputs:
        return np.zeros((0, *size), dtype=np.uint8)
    return np.concatenate(outputs)

"""Text-to-image and image-to-image sampling with classifier-free guidance over :class:`DiffusionComponents`.

Schedulers are built from the model's training (DDPM) schedule, so one pipeline serves the
tiny pixel model and Stable Diffusion checkpoints alike. Image-to-image follows diffusers'
img2img pipelines: after ``set_timesteps(steps)``, ``k = min(int(steps * strength), steps)``
steps run, from ``t_start = steps - k``: the timesteps ``timesteps[t_start * order:]``, starting
from ``add_noise(encode(init), noise, timesteps[t_start * order])`` (for Stable Diffusion the
init image goes through the VAE encoder). Strength 1 starts from (almost) pure noise.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from lthash.errors import LthashError
from lthash.generate.models import DiffusionComponents, decode, encode_images, encode_prompts

SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
}


# Sampler settings by model kind (``DiffusionComponents.kind``). Tiny: DDIM 6 steps, guidance 3
# (measured on the default base: as faithful as DDIM 10 at 1.7x the speed; more steps score worse
# on an under-trained model). Stable Diffusion: the reference's DPM-Solver multistep, 50 steps,
# guidance 7.5.
SAMPLER_DEFAULTS: dict[str, dict[str, Any]] = {
    "tiny": {"scheduler": "ddim", "steps": 6, "guidance": 3.0, "batch_size": 256,
             "timestep_spacing": "trailing", "mixed_precision": "auto"},
    "stable-diffusion": {"scheduler": "dpm", "steps": 50, "guidance": 7.5, "batch_size": 8,
                         "timestep_spacing": "leading", "mixed_precision": "auto"},
}


@dataclass
class SamplerConfig:
    """How images are drawn: scheduler name, denoising steps, guidance scale, batch size,
    timestep spacing and mixed precision (defaults by model kind: :data:`SAMPLER_DEFAULTS`)."""

    scheduler: str
    steps: int
    guidance: float
    batch_size: int
    timestep_spacing: str
    mixed_precision: str

    @classmethod
    def for_model(cls, components: DiffusionComponents, params: Mapping[str, Any] | None = None) -> "SamplerConfig":
        """:data:`SAMPLER_DEFAULTS` of the model's kind, overridden by the non-null entries of
        ``params`` that name a field (other keys are ignored)."""
        if components.kind not in SAMPLER_DEFAULTS:
            raise LthashError(f"no sampler defaults for model kind {components.kind!r} "
                              f"(kinds: {', '.join(SAMPLER_DEFAULTS)})")
        fields = set(cls.__dataclass_fields__)
        overrides = {key: value for key, value in (params or {}).items() if value is not None and key in fields}
        return cls(**{**SAMPLER_DEFAULTS[components.kind], **overrides})


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


def img2img_start(steps: int, strength: float) -> int:
    """``t_start``: denoising steps skipped for ``strength`` (diffusers' ``get_timesteps``)."""
    if not 0.0 < strength <= 1.0:
        raise LthashError(f"config key 'generate.synthesis.strength': {strength!r} is not in (0, 1]")
    run = min(int(steps * strength), steps)
    if run < 1:
        raise LthashError(f"config keys 'generate.synthesis.strength' x 'generate.synthesis.steps' = "
                          f"{strength} x {steps} runs no denoising step: raise either so the product is >= 1")
    return steps - run


@torch.inference_mode()
def generate(
    components: DiffusionComponents,
    prompts: Sequence[str],
    generator: torch.Generator,
    sampler: SamplerConfig,
    size: tuple[int, int, int] | None = None,
    negative_prompt: str = "",
    on_batch: Callable[[int], None] | None = None,
    init_images: np.ndarray | None = None,
    strength: float = 1.0,
) -> np.ndarray:
    """Draw one image per prompt; returns uint8 N x H x W x C (``size`` = (H, W, C) or the model's).

    Without ``init_images`` the run starts from noise (text-to-image). With them (uint8
    N x H x W x C, one per prompt, any size: resized to the model) the run is image-to-image
    at ``strength`` (module docstring). Noise comes from ``generator`` batch after batch, so
    a fixed seed, prompt list, init images and batch size give identical images.
    """
    if init_images is not None and len(init_images) != len(prompts):
        raise LthashError(f"{len(init_images)} init images for {len(prompts)} prompts: give one per prompt")
    scheduler = make_scheduler(sampler.scheduler, components, sampler.timestep_spacing)
    device = components.device
    unet = components.unet
    shape = components.model_shape
    size = size or (components.image_size, components.image_size, components.channels)
    guided = sampler.guidance != 1.0
    t_start = 0 if init_images is None else img2img_start(sampler.steps, strength)
    # as diffusers' prepare_extra_step_kwargs: only stochastic schedulers take the generator
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    outputs = []
    for start in range(0, len(prompts), sampler.batch_size):
        batch = list(prompts[start:start + sampler.batch_size])
        n = len(batch)
        noise = torch.randn((n, *shape), generator=generator, dtype=torch.float32)
        with autocast_context(device, sampler.mixed_precision):
            hidden = encode_prompts(components, batch + [negative_prompt] * n if guided else batch)
            scheduler.set_timesteps(sampler.steps, device=device)
            timesteps = scheduler.timesteps[t_start * scheduler.order:]
            if init_images is None:
                x = (noise * scheduler.init_noise_sigma).to(device)
            else:
                if hasattr(scheduler, "set_begin_index"):
                    scheduler.set_begin_index(t_start * scheduler.order)
                init = encode_images(components, init_images[start:start + n], generator=generator).float()
                x = scheduler.add_noise(init, noise.to(device), timesteps[:1].repeat(n))
            for t in timesteps:
                model_in = torch.cat([x, x]) if guided else x
                model_in = scheduler.scale_model_input(model_in, t)
                pred = unet(model_in.to(unet.dtype), t, encoder_hidden_states=hidden.to(unet.dtype)).sample.float()
                if guided:
                    cond, uncond = pred.chunk(2)
                    pred = uncond + sampler.guidance * (cond - uncond)
                x = scheduler.step(pred, t, x, **step_kwargs).prev_sample
        outputs.append(decode(components, x, size))
        if on_batch is not None:
            on_batch(n)
    if not outputs:
        return np.zeros((0, *size), dtype=np.uint8)
    return np.concatenate(outputs)

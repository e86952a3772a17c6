"""The plain classifier-free-guidance loop: the yardstick for :func:`lthash.generate.sampler.generate`.

It is the textbook DDIM loop of diffusers' StableDiffusion / img2img pipelines, written out with
nothing but the model's parts: one batch, the conditional and unconditional halves in one UNet
call ``[x, x]``, under ``torch.no_grad``. Tests hold the sampler bit-identical to it
(tests/test_generate_sampler.py) and benchmarks/bench_generate.py times the sampler against it.
"""

from __future__ import annotations

import numpy as np
import torch

from lthash.generate.models import DiffusionComponents, decode, encode_images, encode_prompts


def reference_draw(components: DiffusionComponents, prompt: str, n: int, seed: int, steps: int, guidance: float,
                   size: tuple[int, int, int], init_images: np.ndarray | None = None, strength: float = 1.0,
                   memory_format: torch.memory_format = torch.contiguous_format) -> np.ndarray:
    """``n`` images of ``prompt`` (uint8 N x H x W x C of ``size``): DDIM, trailing spacing, from
    noise or, with ``init_images`` (one per image), image-to-image at ``strength``.

    ``memory_format`` lays out the UNet's input (channels_last to compare layouts); the
    model's own layout is left as it is.
    """
    from diffusers import DDIMScheduler

    generator = torch.Generator().manual_seed(seed)
    scheduler = DDIMScheduler.from_config(components.noise_scheduler.config, timestep_spacing="trailing",
                                          set_alpha_to_one=False)
    with torch.no_grad():
        noise = torch.randn((n, *components.model_shape), generator=generator)
        hidden = encode_prompts(components, [prompt] * n + [""] * n)
        scheduler.set_timesteps(steps)
        skip = 0 if init_images is None else steps - min(int(steps * strength), steps)
        timesteps = scheduler.timesteps[skip:]
        if init_images is None:
            x = noise * scheduler.init_noise_sigma
        else:
            x = scheduler.add_noise(encode_images(components, init_images), noise, timesteps[:1].repeat(n))
        for t in timesteps:
            model_in = torch.cat([x, x]).contiguous(memory_format=memory_format)
            cond, uncond = components.unet(model_in, t, encoder_hidden_states=hidden).sample.chunk(2)
            x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    return decode(components, x.contiguous(), size)

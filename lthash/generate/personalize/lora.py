"""Low-rank adaptation (LoRA) of a stage's UNet weights, merged into them when the stage ends.

A stage with ``lora_rank`` r > 0 does not train the weights W of its parameter set; it trains,
for every such weight (Linear and Conv2d, viewed as a matrix of out x in*k*k), two factors and
reads

    W' = W + (alpha / r) * B @ A,    A: r x in (random, seeded), B: out x r (zeros)

so the stage starts exactly at the model it was given, and what it may change of each weight
has rank r (Hu et al., LoRA; DreamBooth-LoRA's diffusers recipe puts it on the attention
projections, LoCon on the convolutions too). alpha = r (scale 1). The factors are registered
with ``torch.nn.utils.parametrize``: while installed, ``module.weight`` is W' and the UNet's
named parameters hold ``...parametrizations.weight.original`` (W, frozen) and
``...parametrizations.weight.0.lora_a`` / ``lora_b`` (trained), which is what a checkpoint
saves. :func:`merge_lora` writes W' into the plain weights and removes the factors, so the
concept folder holds an ordinary UNet and synthesis reads it unchanged.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

LORA_MARK = ".parametrizations.weight."


class LowRankDelta(nn.Module):
    """The parametrisation W -> W + scale * (B @ A).view_as(W)."""

    def __init__(self, weight: torch.Tensor, rank: int, generator: torch.Generator) -> None:
        super().__init__()
        rows, cols = weight.shape[0], weight[0].numel()
        start = torch.randn((rank, cols), generator=generator) / cols ** 0.5
        self.lora_a = nn.Parameter(start.to(device=weight.device, dtype=weight.dtype))
        self.lora_b = nn.Parameter(torch.zeros((rows, rank), device=weight.device, dtype=weight.dtype))
        self.scale = 1.0  # alpha = r

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_b @ self.lora_a).view_as(weight).to(weight.dtype)


def plain_name(name: str) -> str:
    """A parameter's name without the factors' wrapping: ``m.parametrizations.weight.original`` ->
    ``m.weight`` (other names unchanged)."""
    if LORA_MARK in name:
        return name.split(LORA_MARK)[0] + ".weight"
    return name


def lora_modules(unet: nn.Module, names: Iterable[str]) -> list[tuple[str, nn.Module]]:
    """The Linear / Conv2d modules owning the weights ``names`` (``<module>.weight``), in model order,
    that have room for a rank-r factor (both matrix sides > 1)."""
    wanted = {plain_name(name)[: -len(".weight")] for name in names if plain_name(name).endswith(".weight")}
    found = []
    for module_name, module in unet.named_modules():
        if module_name in wanted and isinstance(module, (nn.Linear, nn.Conv2d)) and min(
                module.weight.shape[0], module.weight[0].numel()) > 1:
            found.append((module_name, module))
    return found


def add_lora(unet: nn.Module, weight_names: Iterable[str], rank: int,
             generator: torch.Generator) -> dict[str, nn.Parameter]:
    """Install rank-``rank`` factors on the weights ``weight_names`` of ``unet`` (the stage's set);
    return the factors by parameter name. Modules that already have them keep theirs."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    for _, module in lora_modules(unet, weight_names):
        if not parametrize.is_parametrized(module, "weight"):
            parametrize.register_parametrization(module, "weight", LowRankDelta(module.weight, rank, generator))
    return lora_parameters(unet)


def lora_parameters(unet: nn.Module) -> dict[str, nn.Parameter]:
    """The LoRA factors installed on ``unet``, by parameter name."""
    return {name: p for name, p in unet.named_parameters() if LORA_MARK in name and "original" not in name}


def merge_lora(unet: nn.Module) -> None:
    """W <- W + scale * B @ A for every installed factor pair, and the factors removed: ``unet``
    is a plain module again, computing what it computed with them."""
    for module in unet.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


def lora_rank_of(weights: dict[str, torch.Tensor]) -> int:
    """The rank of the factors in checkpointed ``weights`` (0 when there are none)."""
    for name, value in weights.items():
        if name.endswith(".lora_a"):
            return int(value.shape[0])
    return 0

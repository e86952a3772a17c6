"""Exponential moving average of trained parameters, the weights a diffusion model is sampled with.

    shadow <- d_n * shadow + (1 - d_n) * param,   d_n = min(decay, (1 + n) / (10 + n))

after optimiser step n (the warm-up factor lets the average follow the early, fast-moving
weights instead of averaging them with the initial ones). The base stage and joint
personalisation train with it; their checkpoints hold ``shadow`` so a resumed run averages
exactly as an uninterrupted one.
"""

from __future__ import annotations

import torch


class ExponentialMovingAverage:
    """Shadow copies of ``parameters`` (name -> parameter), updated by :meth:`update`."""

    def __init__(self, parameters: dict[str, torch.nn.Parameter], decay: float):
        self.parameters = parameters
        self.decay = decay
        self.shadow = {name: param.detach().clone() for name, param in parameters.items()}

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Average in the parameters after optimiser step ``step`` (0-based)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        for name, param in self.parameters.items():
            self.shadow[name].mul_(decay).add_(param.detach(), alpha=1 - decay)

    @torch.no_grad()
    def copy_to_parameters(self) -> None:
        """Overwrite the parameters with their averages (training is over)."""
        for name, param in self.parameters.items():
            param.copy_(self.shadow[name])

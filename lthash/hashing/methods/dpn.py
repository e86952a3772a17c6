"""DPN, Deep Polarized Network (Fan et al., IJCAI 2020).

    v = W f(x) + b,   t_y in {-1, +1}^bits = random target code of class y
    L = mean over the batch of  sum_k max(0, m - v_k * t_{y,k}),   m = 1

Targets are Bernoulli +-1 per class, or (``distance``) the best of 200 draws by minimum Hamming
distance, or rejection-sampled to a given ``min_distance``.
"""

from __future__ import annotations

from typing import Mapping

import torch

from lthash.hashing.centers import class_codes
from lthash.hashing.methods.base import HashMethod, hash_head, register


@register("dpn")
class DPN(HashMethod):
    def build(self) -> None:
        self.hash = hash_head(self.backbone.out_dim, self.bits)
        targets = class_codes(self.options["targets"], self.num_classes, self.bits, self.rng,
                              self.options["min_distance"])
        self.register_buffer("targets", torch.from_numpy(targets))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"code": self.hash(self.backbone(x))}

    def loss(self, out: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        polar = self.options["margin"] - out["code"].float() * self.targets[labels]
        return polar.clamp(min=0).sum(dim=1).mean()

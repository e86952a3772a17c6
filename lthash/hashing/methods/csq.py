"""CSQ, Central Similarity Quantization (Yuan et al., CVPR 2020).

    u = tanh(W f(x) + b),   c_y = Hadamard centre of class y
    L = BCE((u + 1) / 2, (c_y + 1) / 2) + lambda * mean((|u| - 1)^2)

Centres: rows of H, [H; -H] beyond ``bits`` classes, random balanced codes with a minimum
distance beyond ``2 bits`` (see :func:`lthash.hashing.centers.hadamard_codes`).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from lthash.hashing.centers import hadamard_codes
from lthash.hashing.methods.base import HashMethod, hash_head, register


@register("csq")
class CSQ(HashMethod):
    def build(self) -> None:
        self.hash = hash_head(self.backbone.out_dim, self.bits)
        centres = hadamard_codes(self.num_classes, self.bits, self.rng, self.options["min_distance"])
        self.register_buffer("centres", torch.from_numpy(centres))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"code": torch.tanh(self.hash(self.backbone(x)))}

    def loss(self, out: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        code = out["code"].float()
        target = (self.centres[labels] + 1) / 2
        centre_loss = F.binary_cross_entropy((code + 1) / 2, target)
        return centre_loss + self.options["quant_weight"] * (code.abs() - 1).pow(2).mean()

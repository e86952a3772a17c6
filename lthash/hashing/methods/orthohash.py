"""OrthoHash (Hoe et al., NeurIPS 2021; kamwoh/orthohash): one fixed +-1 code per class.

    u = BN(W f(x) + b)
    logit_c = s * (cos(u, o_c) - m * [c == y])          (CosFace margin on the true class)
    L = CE(logits, y) + lambda_q * mean((|u| - 1)^2)    (quantisation term off by default)
    logits + tau * log pi inside CE under hashing.train.balance: logit_adjusted (losses.logit_adjustment)

Codebook o: Bernoulli +-1 (default), or ``distance``: the best of 200 Bernoulli codebooks by
minimum Hamming distance, or rejection-sampled to a given ``min_distance``.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lthash.hashing.centers import class_codes
from lthash.hashing.losses.logit_adjustment import adjust_logits
from lthash.hashing.methods.base import HashMethod, hash_head, register


@register("orthohash")
class OrthoHash(HashMethod):
    has_class_logits = True

    def build(self) -> None:
        self.hash = hash_head(self.backbone.out_dim, self.bits)
        self.bn = nn.BatchNorm1d(self.bits)
        codes = class_codes(self.options["codebook"], self.num_classes, self.bits, self.rng,
                            self.options["min_distance"])
        self.register_buffer("codebook", torch.from_numpy(codes))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        code = self.bn(self.hash(self.backbone(x)))
        cosine = F.normalize(code, dim=1) @ F.normalize(self.codebook, dim=1).t()
        return {"code": code, "cosine": cosine}

    def loss(self, out: Mapping[str, torch.Tensor], labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        margin = F.one_hot(labels, self.num_classes).to(out["cosine"].dtype) * self.options["margin"]
        logits = adjust_logits(self.options["scale"] * (out["cosine"] - margin), self.logit_offset)
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        if self.options["quant_weight"]:
            loss = loss + self.options["quant_weight"] * (out["code"].abs() - 1).pow(2).mean()
        return loss

"""ADH, Attention Deep Hashing (Zhang & Lu): channel and spatial attention re-weight the
backbone's last feature map before the hash layer (CBAM-style, Woo et al. 2018).

    F' = F * sigmoid(MLP(avgpool F) + MLP(maxpool F))                      channel attention
    F''= F' * sigmoid(conv7x7([mean_c F'; max_c F']))                      spatial attention
    u  = W pool(F'') + b
    L  = mean_ij [ log(1 + exp(theta_ij)) - s_ij theta_ij ]                  pairwise likelihood (DPSH)
         + alpha * CE(V u, y)                                               classification on the code
                   (V u + tau * log pi under hashing.train.balance: logit_adjusted)
         + eta * mean((u - sign u)^2)                                       quantisation
         theta_ij = u_i . u_j / 2,  s_ij = [y_i == y_j]

The paper's abstract gives only the architecture idea; the objective is the pairwise-likelihood
family it builds on (DPSH, Li et al. 2016) with DSDH's classification term on the code, which
the pairwise term alone needs on small long-tail batches (few positive pairs per batch).
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from lthash.errors import LthashError
from lthash.hashing.losses.logit_adjustment import adjust_logits
from lthash.hashing.methods.base import HashMethod, hash_head, register


class ChannelSpatialAttention(nn.Module):
    """Channel re-weighting by a shared MLP over avg/max pooled maps, then spatial re-weighting."""

    def __init__(self, channels: int, reduction: int = 8, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        channel = torch.sigmoid(self.mlp(fmap.mean(dim=(2, 3))) + self.mlp(fmap.amax(dim=(2, 3))))
        fmap = fmap * channel[:, :, None, None]
        pooled = torch.cat([fmap.mean(dim=1, keepdim=True), fmap.amax(dim=1, keepdim=True)], dim=1)
        return fmap * torch.sigmoid(self.spatial(pooled))


@register("adh")
class ADH(HashMethod):
    has_class_logits = True

    def build(self) -> None:
        if not self.backbone.has_map:
            raise LthashError(f"config key 'hashing.backbone': adh needs a convolutional backbone, "
                              f"'{self.backbone.name}' has no feature map")
        self.attention = ChannelSpatialAttention(self.backbone.map_channels, int(self.options["reduction"]))
        self.hash = hash_head(self.backbone.out_dim, self.bits)
        self.classifier = nn.Linear(self.bits, self.num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap = self.attention(self.backbone.feature_map(x))
        code = self.hash(self.backbone.pool(fmap))
        return {"code": code, "logits": self.classifier(code)}

    def loss(self, out: Mapping[str, torch.Tensor], labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        code = out["code"].float()
        similar = (labels[:, None] == labels[None, :]).float()
        theta = code @ code.t() / 2
        likelihood = (F.softplus(theta) - similar * theta).mean()
        quantisation = (code - code.sign()).pow(2).mean()
        classification = F.cross_entropy(adjust_logits(out["logits"].float(), self.logit_offset), labels,
                                         label_smoothing=label_smoothing)
        return likelihood + self.options["class_weight"] * classification + self.options["quant_weight"] * quantisation

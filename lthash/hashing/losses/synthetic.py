"""Real and synthetic images of a mixed fine-tuning batch, weighted apart.

    L = (sum_real l + w * sum_synthetic l) / (n_real + w * n_synthetic)

where each sum is the method's own loss of that part of the batch (one forward pass for the
whole batch) times its size: w < 1 down-weights synthetic images (DiffuLT; DataDream's 0.8
real / 0.2 synthetic). Synthetic images may also train on smoothed targets,
(1 - eps) * onehot(y) + eps / C (Diff-Mix's soft labels), for methods with class logits.
With w = 1 and eps = 0, or a batch of one kind, L is the method's loss of the whole batch. A
pairwise loss (ADH) split in two no longer pairs real with synthetic images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch


@dataclass(frozen=True)
class SyntheticLoss:
    """``weight`` w and ``label_smoothing`` eps of synthetic images (``hashing.mix``)."""

    weight: float = 1.0
    label_smoothing: float = 0.0

    @property
    def plain(self) -> bool:
        return self.weight == 1.0 and self.label_smoothing == 0.0

    @classmethod
    def from_mix(cls, mix: Mapping[str, Any]) -> "SyntheticLoss":
        return cls(float(mix["synthetic_weight"]), float(mix["synthetic_label_smoothing"]))


def _part(out: Mapping[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The per-image entries of a forward pass's output, for the images of ``mask``."""
    return {key: value[mask] if value.dim() and value.shape[0] == mask.shape[0] else value
            for key, value in out.items()}


def mixed_batch_loss(model: Any, out: Mapping[str, torch.Tensor], labels: torch.Tensor,
                     synthetic: torch.Tensor, rule: SyntheticLoss) -> torch.Tensor:
    """The loss of one batch under ``rule`` (module formula); ``synthetic``: bool per image."""
    n_synthetic = int(synthetic.sum())
    if rule.plain or n_synthetic == 0:
        return model.loss(out, labels)
    smoothing = {"label_smoothing": rule.label_smoothing} if rule.label_smoothing else {}
    synthetic_loss = model.loss(_part(out, synthetic), labels[synthetic], **smoothing)
    n_real = int(synthetic.shape[0]) - n_synthetic
    if n_real == 0:
        return synthetic_loss
    real = ~synthetic
    real_loss = model.loss(_part(out, real), labels[real])
    return (n_real * real_loss + rule.weight * n_synthetic * synthetic_loss) / (n_real + rule.weight * n_synthetic)

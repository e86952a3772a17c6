"""Logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021).

    pi_c = n_c / sum_k n_k                  class prior of the data the model trains on
    L    = CE(logits + tau * log pi, y)     tau = 0: the plain loss

Against class c, true class y must now win by tau * log(pi_c / pi_y) more than before: a
larger margin for rarer y. Only training changes; codes are computed from the network as before.
"""

from __future__ import annotations

import numpy as np
import torch


def logit_offset(class_counts: np.ndarray, tau: float) -> torch.Tensor:
    """tau * log pi per class (float32); a class without training images counts as one image."""
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1)
    return torch.from_numpy(tau * np.log(counts / counts.sum())).float()


def adjust_logits(logits: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    """Class logits as the loss sees them: ``logits + offset``, or unchanged without an offset."""
    return logits if offset is None else logits + offset

"""AttnDreamBooth's attention regulariser (seed paper eq. 1).

For every captured cross-attention layer l, with M_V and M_cat the attention maps of the [V]
token and of the category token that follows it (each over heads x pixels, per sample b):

    mu_x     = mean over heads and pixels of M_x
    var_x    = population variance over heads and pixels of M_x
    L_l      = sum_b [ lambda_mean * (mu_V - mu_cat)^2 + lambda_var * (var_V - var_cat)^2 ]
    L_reg    = (1 / #layers) * sum_l L_l

i.e. summed over the batch and averaged over layers. It is added to the denoising MSE.
"""

from __future__ import annotations

from typing import Mapping

import torch


def attention_moments(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance over heads and pixels: ``(B, H, P) -> ((B,), (B,))``."""
    flat = maps.reshape(maps.shape[0], -1).float()
    return flat.mean(dim=1), flat.var(dim=1, unbiased=False)


def attention_regularizer(
    maps: Mapping[str, torch.Tensor],
    lambda_mean: float,
    lambda_var: float,
    v_column: int = 0,
    category_column: int = 1,
) -> torch.Tensor:
    """Eq. 1 over captured maps ``{layer: (B, heads, pixels, k)}``.

    ``v_column`` / ``category_column`` pick the [V] and category columns among the ``k``
    captured token positions. Returns a scalar (zero when both lambdas are zero).
    """
    if not maps:
        raise ValueError("no attention maps captured: is the capture processor installed?")
    total = None
    for layer_maps in maps.values():
        mu_v, var_v = attention_moments(layer_maps[..., v_column])
        mu_c, var_c = attention_moments(layer_maps[..., category_column])
        layer_loss = (lambda_mean * (mu_v - mu_c) ** 2 + lambda_var * (var_v - var_c) ** 2).sum()
        total = layer_loss if total is None else total + layer_loss
    return total / len(maps)

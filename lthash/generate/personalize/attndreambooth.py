"""AttnDreamBooth (Pang et al., NeurIPS 2024): three chained stages with the attention regulariser.

1. ``embedding``: only the [V] row, initialised from the category word (lambda_mean 0.1);
2. ``cross_attention``: every UNet ``attn2`` q, k, v, out (lambda_mean 2, lambda_var 5);
3. ``unet``: the whole UNet, starting from stage 2 (lambda_mean 2, lambda_var 5).

Each stage starts from the previous one's weights; a checkpoint is written between stages.
"""

from __future__ import annotations

from lthash.generate.personalize.method import Method, register

METHOD = register(Method(
    name="attndreambooth",
    description="[V] embedding, then cross-attention, then whole UNet, with the eq. 1 regulariser",
    seed_id=1,
))

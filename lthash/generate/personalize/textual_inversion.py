"""Textual Inversion (Gal et al., ICLR 2023), the seed paper's table-2 baseline.

Only the [V] embedding row is learned (from the category word's embedding), with the plain
denoising loss; the UNet and the rest of the text encoder are unchanged. With prior
preservation enabled the prior term is computed and logged, but it has no gradient (the class
prompt has no [V] and nothing else trains), so the concept is the one learned without it.
"""

from __future__ import annotations

from lthash.generate.personalize.method import Method, register

METHOD = register(Method(
    name="textual_inversion",
    description="[V] embedding only, plain denoising loss",
    seed_id=3,
))

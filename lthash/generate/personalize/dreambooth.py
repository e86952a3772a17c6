"""DreamBooth (Ruiz et al., CVPR 2023), the seed paper's table-2 baseline.

The whole UNet is fine-tuned on the class images with the prompt "a photo of a [V] <category>"
([V] stays at the category word's embedding; the text encoder is frozen). Prior preservation
(``dreambooth.prior_preservation``, shared by every method: see the trainer) adds
w * the denoising MSE of class images captioned with the base's own class prompt.
"""

from __future__ import annotations

from lthash.generate.personalize.method import Method, register

METHOD = register(Method(
    name="dreambooth",
    description="whole-UNet fine-tune on the class images",
    seed_id=2,
))

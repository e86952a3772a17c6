"""DreamBooth (Ruiz et al., CVPR 2023), the seed paper's table-2 baseline.

The whole UNet is fine-tuned on the class images with the prompt "a photo of a [V] <category>"
([V] stays at the category word's embedding; the text encoder is frozen). With prior
preservation, class-agnostic images "a photo of a <category>" drawn from the base before
training add weight * their denoising MSE to every step:

    L = ||eps - eps_theta(x_t, c_V)||^2 + w * ||eps' - eps_theta(x'_t, c_prior)||^2
"""

from __future__ import annotations

from lthash.generate.personalize.method import Method, register

METHOD = register(Method(
    name="dreambooth",
    description="whole-UNet fine-tune on the class images, optional prior preservation",
    uses_prior=True,
))

"""Joint personalisation (``generator: joint``): every class taught in one run.

One token per class initialised from its category word, trained together with the UNet (or
its cross-attention) on class-balanced batches of the long-tail set, with the base's category
captions replayed from its corpus as the prior. The trainer is
:mod:`lthash.generate.personalize.joint_trainer`; this module only registers the method (the
registry is read while the workflow is parsed, so it imports nothing heavy).
"""

from __future__ import annotations

from lthash.generate.personalize.method import Method, register

METHOD = register(Method(
    name="joint",
    description="every class at once: one token per class + the UNet, class-balanced batches, category replay",
    seed_id=4,
    joint=True,
))

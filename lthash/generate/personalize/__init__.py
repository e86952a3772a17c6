"""Personalisation of the base model to one class: AttnDreamBooth, DreamBooth, Textual Inversion.

Composable pieces: :mod:`.schedule` (stages and presets), :mod:`.data` (class images,
augmentation), :mod:`.trainer` ([V] token, trainable sets, loss, stage loop),
:mod:`.sampling` (grids, prior images), resume after a kill through
:class:`lthash.checkpointing.CheckpointFolder`,
one module per method, and :mod:`.runner` tying them into :func:`personalize`.
(Imported lazily so ``lthash --help`` does not load torch.)
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "personalize":
        from lthash.generate.personalize.runner import personalize

        return personalize
    raise AttributeError(name)

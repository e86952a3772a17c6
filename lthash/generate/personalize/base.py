"""The ``base`` generator: no personalisation, the base model itself with its own prompt for the
class ("a photo of a <word>", the word it was trained with: the class name for a class_name
base, the super-category otherwise), so a report shows what personalisation adds. It trains
nothing and writes no concept: synthesis reads the base folder directly
(:func:`lthash.generate.synthesize.load_generator`).
"""

from __future__ import annotations

from lthash.generate.personalize.method import Method, register

METHOD = register(Method(
    name="base",
    description="no personalisation: the base model prompted with its own caption of the class",
    seed_id=0,
    personalises=False,
))

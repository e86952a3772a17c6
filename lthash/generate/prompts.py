"""Class-agnostic prompts: the super-category word of every class and the prompt built from it.

The tiny base model only ever sees "a photo of a <super-category>", never a class name, so
whatever it knows of a class comes from personalisation. Personalisation prompts are
"a photo of a [V] <super-category>" with the same word.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from lthash.errors import LthashError

FALLBACK_CATEGORY = "object"

# Built-in super-categories, keyed by the normalised class name (lower case, letters only).
KNOWN_CATEGORIES: dict[str, str] = {
    # Fashion-MNIST
    "tshirttop": "clothing", "trouser": "clothing", "pullover": "clothing", "dress": "clothing",
    "coat": "clothing", "shirt": "clothing", "sandal": "footwear", "sneaker": "footwear",
    "ankleboot": "footwear", "bag": "accessory",
    # digits / MNIST
    **{name: "digit" for name in ("zero", "one", "two", "three", "four", "five", "six", "seven",
                                   "eight", "nine")},
    # CIFAR-10
    "airplane": "vehicle", "automobile": "vehicle", "ship": "vehicle", "truck": "vehicle",
    "bird": "animal", "cat": "animal", "deer": "animal", "dog": "animal", "frog": "animal",
    "horse": "animal",
    # ImageNette
    "tench": "fish", "englishspringer": "dog", "cassetteplayer": "device", "chainsaw": "tool",
    "church": "building", "frenchhorn": "instrument", "garbagetruck": "vehicle", "gaspump": "machine",
    "golfball": "ball", "parachute": "object",
}


def _key(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", str(name).lower())
    if key.isdigit() and len(key) == 1:
        return ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")[int(key)]
    return key


def class_categories(class_names: Sequence[str], overrides: Mapping[str, str] | None = None) -> list[str]:
    """The super-category word of each class: ``overrides`` (by class name), else built-in, else 'object'.

    A word must be letters only, and must not be the class's own name (base prompts are
    class-agnostic).
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(map(str, class_names)))
    if unknown:
        raise LthashError(f"config key 'generate.categories' names unknown class(es) {unknown}; "
                          f"classes are {list(class_names)}")
    words = []
    for name in class_names:
        word = overrides.get(str(name)) or KNOWN_CATEGORIES.get(_key(name), FALLBACK_CATEGORY)
        word = word.strip().lower()
        if not word.isalpha():
            raise LthashError(f"config key 'generate.categories.{name}': {word!r} must be one word of letters")
        if _key(word) == _key(name) and len(class_names) > 1:
            raise LthashError(f"config key 'generate.categories.{name}': the super-category must not be the "
                              f"class name itself (base prompts are class-agnostic)")
        words.append(word)
    return words


def class_word(name: str) -> str:
    """A class name as one prompt word of letters: "T-shirt/top" -> "tshirttop", "3" -> "three"."""
    word = re.sub(r"[^a-z]", "", _key(name))
    if not word:
        raise LthashError(f"class name {name!r} has no letters to make a prompt word of (generate.base.captions: "
                          f"class_name)")
    return word


def category_prompt(word: str) -> str:
    """The class-agnostic prompt the base model is trained and sampled with."""
    return f"a photo of a {word}"

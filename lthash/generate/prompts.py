"""Prompt words: the words of every class (from its folder name) and its super-category word.

In the novel-concept regime the tiny base only ever sees "a photo of a <super-category>",
never a class name, so whatever it knows of a class comes from personalisation.
Personalisation prompts are "a photo of a [V] <super-category>" with the same word. In the
known-class regime (``generate.base.captions: class_name``) the base hears "a photo of a
<class words>", so every class needs words of its own (:func:`class_words`):

- a folder named in ``generate.class_words`` (a mapping, or the YAML/JSON file of one) takes
  the words given there;
- a folder of a known layout takes the words shipped in ``class_words.yaml`` beside this
  module (ImageNette's WordNet ids: ``n01440764`` -> "tench");
- numbered folders sharing one prefix (``digit_0`` ... ``digit_9``, ``class_01`` ...) take the
  number alone as words ("zero", "one"): the prefix tells no class from another, and the
  words equal those of folders ``0`` ... ``9``;
- any other name keeps its letters as one word ("T-shirt/top" -> "tshirttop"), a run of
  digits in it becoming number words ("digit_0" beside "cat" -> "digit zero").

In the known-class regime, classes whose words would coincide are refused naming them and the
key to set (:func:`check_distinct_words`), at workflow load
(:func:`lthash.generate.corpus.check_prompt_words`) and again in the base stage.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from lthash.errors import LthashError

#: the config key of the folder name -> words mapping
CLASS_WORDS_KEY = "generate.class_words"
#: words of known folder layouts, by folder name
SHIPPED_WORDS_FILE = Path(__file__).with_name("class_words.yaml")
_WORDNET_ID = re.compile(r"n\d{8}")
_NUMBERED = re.compile(r"([A-Za-z]*)[^A-Za-z0-9]*(\d+)")
_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

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
        return _ONES[int(key)]
    return key


def number_words(value: int) -> list[str]:
    """English words of ``value``: 0..999 as spoken ("twenty one", "one hundred five"), larger
    numbers digit by digit."""
    if value < 0:
        raise ValueError(f"number_words: {value} is negative")
    if value < 20:
        return [_ONES[value]]
    if value < 100:
        return [_TENS[value // 10]] + (number_words(value % 10) if value % 10 else [])
    if value < 1000:
        return [_ONES[value // 100], "hundred"] + (number_words(value % 100) if value % 100 else [])
    return [_ONES[int(digit)] for digit in str(value)]


@functools.lru_cache(maxsize=1)
def shipped_words() -> dict[str, str]:
    """Folder name -> words of the known layouts (``class_words.yaml``)."""
    from lthash.config import load_yaml

    return {str(key): str(value) for key, value in load_yaml(SHIPPED_WORDS_FILE.read_text()).items()}


def load_class_words(value: Mapping[str, str] | str | os.PathLike | None) -> dict[str, str]:
    """The ``generate.class_words`` mapping: as given, or read from the YAML/JSON file it names."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(key): str(words) for key, words in value.items()}
    from lthash.config import load_yaml

    path = Path(value)
    try:
        data = load_yaml(path.read_text())
    except FileNotFoundError:
        raise LthashError(f"config key '{CLASS_WORDS_KEY}': the file {path} does not exist") from None
    except Exception as exc:  # yaml's errors: the file is not YAML/JSON
        raise LthashError(f"config key '{CLASS_WORDS_KEY}': {path} is not a YAML/JSON mapping: {exc}") from None
    if not isinstance(data, Mapping) or not all(isinstance(words, str) for words in data.values()):
        raise LthashError(f"config key '{CLASS_WORDS_KEY}': {path} must hold a mapping of folder name to words "
                          f"(for example n01440764: tench)")
    return {str(key): words for key, words in data.items()}


def _given_words(text: str, where: str) -> list[str]:
    words = [word for word in re.split(r"[^a-z]+", text.lower()) if word]
    if not words or re.search(r"[0-9]", text):
        raise LthashError(f"{where}: {text!r} must be words of letters (write numbers as words)")
    return words


@dataclass(frozen=True)
class _Numbered:
    """Folder names that are one shared prefix of letters and a number each."""

    prefix: str
    numbers: dict[str, int]


def _numbered(class_names: Sequence[str]) -> _Numbered | None:
    matches = [_NUMBERED.fullmatch(str(name)) for name in class_names]
    if len(class_names) < 2 or not all(matches):
        return None
    prefixes = {match.group(1).lower() for match in matches}
    if len(prefixes) != 1:
        return None
    return _Numbered(prefixes.pop(), {str(name): int(match.group(2)) for name, match in zip(class_names, matches)})


def _derived_words(name: str) -> list[str]:
    """Letters joined into one word ("T-shirt/top" -> "tshirttop"); each run of digits -> number words."""
    words: list[str] = []
    letters = ""
    for run in re.findall(r"[a-z]+|[0-9]+", str(name).lower()):
        if run.isalpha():
            letters += run
            continue
        if letters:
            words.append(letters)
            letters = ""
        words += number_words(int(run))
    return words + ([letters] if letters else [])


def class_words(class_names: Sequence[str], mapping: Mapping[str, str] | str | None = None) -> list[str]:
    """The prompt words of every class, lower case, one space apart (see the module docstring)."""
    given = load_class_words(mapping)
    shipped = shipped_words()
    numbered = _numbered(class_names)
    result = []
    for name in map(str, class_names):
        if name in given:
            words = _given_words(given[name], f"config key '{CLASS_WORDS_KEY}.{name}'")
        elif name in shipped:
            words = _given_words(shipped[name], f"{SHIPPED_WORDS_FILE}: {name}")
        elif _WORDNET_ID.fullmatch(name):
            raise LthashError(f"class folder {name!r} is a WordNet id lthash knows no words for: name the class in "
                              f"config key '{CLASS_WORDS_KEY}' (for example {{{name}: tench}}, or the path of a "
                              f"YAML file of such lines)")
        elif numbered is not None:
            words = number_words(numbered.numbers[name])
        else:
            words = _derived_words(name)
        if not words:
            raise LthashError(f"class name {name!r} has no letters or digits to make prompt words of: name it in "
                              f"config key '{CLASS_WORDS_KEY}'")
        result.append(" ".join(words))
    return result


def check_distinct_words(class_names: Sequence[str], words: Sequence[str], what: str = "prompt words") -> None:
    """Refuse classes whose ``words`` coincide, naming them and :data:`CLASS_WORDS_KEY`."""
    by_words: dict[str, list[str]] = {}
    for name, word in zip(map(str, class_names), words):
        by_words.setdefault(word, []).append(name)
    shared = {word: names for word, names in by_words.items() if len(names) > 1}
    if shared:
        listed = "; ".join(f"{' and '.join(map(repr, names))} would be {word!r}" for word, names in shared.items())
        raise LthashError(f"classes would share their {what} ({listed}): give each class its own words in "
                          f"config key '{CLASS_WORDS_KEY}' (a mapping of folder name to words, or the path of a "
                          f"YAML file of one)")


def class_categories(class_names: Sequence[str], overrides: Mapping[str, str] | None = None,
                     words: Mapping[str, str] | str | None = None) -> list[str]:
    """The super-category word of each class: ``overrides`` (``generate.categories``, by class
    name), else the built-in word of the class's name, or of the words ``words``
    (``generate.class_words``) or the shipped layouts give it, else the shared prefix of numbered
    folders where that is a built-in super-category (``digit_0`` -> "digit"), else 'object'.

    A word must be letters only, and must not be the class's own name (base prompts are
    class-agnostic).
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(map(str, class_names)))
    if unknown:
        raise LthashError(f"config key 'generate.categories' names unknown class(es) {unknown}; "
                          f"classes are {list(class_names)}")
    named = {**shipped_words(), **load_class_words(words)}
    numbered = _numbered(class_names)
    prefix = numbered.prefix if numbered is not None and numbered.prefix in KNOWN_CATEGORIES.values() else None
    result = []
    for name in class_names:
        known = KNOWN_CATEGORIES.get(_key(named.get(str(name), name)), prefix or FALLBACK_CATEGORY)
        word = (overrides.get(str(name)) or known).strip().lower()
        if not word.isalpha():
            raise LthashError(f"config key 'generate.categories.{name}': {word!r} must be one word of letters")
        if _key(word) == _key(name) and len(class_names) > 1:
            raise LthashError(f"config key 'generate.categories.{name}': the super-category must not be the "
                              f"class name itself (base prompts are class-agnostic)")
        result.append(word)
    return result


def category_prompt(word: str) -> str:
    """The class-agnostic prompt the base model is trained and sampled with."""
    return f"a photo of a {word}"

"""What the base model learns from: its corpus and its captions.

Corpora (``generate.base.corpus``):

- ``split_train``: the split's long-tail training images (the base knows nothing the split
  does not hold; re-sampling those images is then as informative as generating them);
- ``outside_split``: every image of the split's dataset that is in no split group (query,
  database and so every training set), as Stable Diffusion has seen far more than any
  user's split. Disjoint from every group by construction, and checked again whenever the
  base is used with a split (:func:`check_base_corpus`).

Captions (``generate.base.captions``):

- ``category``: "a photo of a <super-category>" (the novel-concept regime: the base never
  hears a class name; what it knows of a class comes from personalisation);
- ``class_name``: "a photo of a <class words>" (the known-class regime: Stable Diffusion knows
  "tench" and "church"; the words of a folder name: :func:`lthash.generate.prompts.class_words`).

The base folder records the corpus (``corpus.json`` with the dataset, the split params it is
the complement of and the SHA-256 of its sorted source indices; ``corpus.safetensors`` with
the indices themselves) and, in ``model_info.json``, the word each class's prompts use.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lthash.errors import LthashError
from lthash.generate.prompts import check_distinct_words, class_categories, class_words

CORPORA = ("split_train", "outside_split")
CAPTIONS = ("category", "class_name")
CORPUS_FILE = "corpus.json"
CORPUS_INDEX_FILE = "corpus.safetensors"


@dataclass
class Corpus:
    """Images (uint8 N x H x W x C), class labels, source indices and how they were chosen."""

    images: np.ndarray
    labels: np.ndarray
    index: np.ndarray
    record: dict[str, Any]


def index_digest(index: np.ndarray) -> str:
    """SHA-256 of the sorted int64 source indices."""
    return hashlib.sha256(np.sort(np.asarray(index, dtype=np.int64)).tobytes()).hexdigest()


def split_indices(split_path: str | os.PathLike) -> np.ndarray:
    """Source indices of every image in any group of the split file (sorted, unique)."""
    from lthash.data.split import ALL_GROUPS
    from lthash.io import open_complete_h5

    parts = []
    with open_complete_h5(split_path) as h5:
        for group in ALL_GROUPS:
            if group in h5:
                parts.append(np.asarray(h5[group]["index"][()], dtype=np.int64))
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def load_corpus(split_path: str | os.PathLike, kind: str, threads: int = 1) -> Corpus:
    """The base stage's training images for corpus ``kind`` (see the module docstring)."""
    from lthash.io import read_attrs, read_image_set

    if kind not in CORPORA:
        raise LthashError(f"config key 'generate.base.corpus': {kind!r} is not one of {list(CORPORA)}")
    attrs = read_attrs(split_path)
    if kind == "split_train":
        train = read_image_set(split_path, "train")
        if train.images is None:
            raise LthashError(f"{split_path}/train holds image paths: the base stage needs pixels")
        record = {"kind": kind, "dataset": attrs.get("dataset"), "images": int(len(train.labels))}
        return Corpus(train.images, np.asarray(train.labels), np.asarray(train.index), record)
    from lthash.data.readers import load_dataset

    params = json.loads(attrs["params"]) if isinstance(attrs.get("params"), str) else attrs.get("params")
    if not isinstance(params, Mapping) or "dataset" not in params:
        raise LthashError(f"{split_path} does not record the dataset it was drawn from (attribute 'params'): "
                          f"rebuild it with lthash split")
    dataset = load_dataset(params["dataset"], threads=threads)
    if dataset.images is None:
        raise LthashError("config key 'generate.base.corpus': outside_split needs a dataset held as pixels "
                          "(dataset.store: pixels)")
    used = split_indices(split_path)
    outside = np.setdiff1d(np.arange(len(dataset), dtype=np.int64), used)
    if not len(outside):
        raise LthashError(f"config key 'generate.base.corpus': every image of {dataset.name} is in the split "
                          f"{split_path}; outside_split has nothing to learn from")
    record = {"kind": kind, "dataset": dataset.name, "split_params": params, "images": int(len(outside)),
              "index_sha256": index_digest(outside),
              "per_class": np.bincount(dataset.labels[outside], minlength=len(dataset.class_names)).tolist()}
    return Corpus(dataset.images[outside], np.asarray(dataset.labels[outside]), outside, record)


def caption_words(class_names: Sequence[str], captions: str, categories: Mapping[str, str] | None,
                  words: Mapping[str, str] | str | None = None) -> list[str]:
    """The words each class's prompts use: its super-category, or its own words (``class_name``,
    :func:`lthash.generate.prompts.class_words`; classes that would share them are refused).
    ``words`` is ``generate.class_words``."""
    if captions == "class_name":
        chosen = class_words(class_names, words)
        check_distinct_words(class_names, chosen, "base prompt (generate.base.captions: class_name)")
        return chosen
    if captions != "category":
        raise LthashError(f"config key 'generate.base.captions': {captions!r} is not one of {list(CAPTIONS)}")
    return class_categories(class_names, categories, words)


def prompt_words(base_info: Mapping[str, Any], class_names: Sequence[str],
                 categories: Mapping[str, str] | None, words: Mapping[str, str] | str | None = None) -> list[str]:
    """The words of the base's own training prompts where it records them, else the configured categories."""
    recorded = base_info.get("categories") if base_info else None
    if isinstance(recorded, Mapping):
        missing = [name for name in class_names if str(name) not in recorded]
        if missing:
            raise LthashError(f"the base model was trained for other classes: it has no prompt word for {missing}")
        return [str(recorded[str(name)]) for name in class_names]
    return class_categories(class_names, categories, words)


def check_prompt_words(config: Mapping[str, Any]) -> dict[str, Any]:
    """Before any job: the validated ``config`` with a ``generate.class_words`` file read into it
    (its entries are then in every rule's params, so editing the file reruns what it changes),
    after refusing classes whose base prompts would coincide (the known-class regime of a tiny
    base) or whose words or categories cannot be made, as the stages would, but naming them now.
    Datasets whose class names only the data stage can read are checked by the stages alone."""
    import copy

    from lthash.data.readers import known_class_names
    from lthash.generate.prompts import load_class_words
    from lthash.generate.shipped import PREFIX
    from lthash.workflow.arms import uses_generators

    generate = config["generate"]
    if isinstance(generate.get("class_words"), str):
        config = copy.deepcopy(dict(config))
        config["generate"]["class_words"] = load_class_words(generate["class_words"])
        generate = config["generate"]
    if not uses_generators(config):
        return config
    names = known_class_names(config["dataset"])
    if names is None:
        return config
    model, words = generate["base"]["model"], generate.get("class_words")
    if model == "tiny":
        caption_words(names, generate["base"]["captions"], generate["categories"], words)
    elif not model.startswith(PREFIX):  # a Stable Diffusion folder: prompts name the super-category
        class_categories(names, generate["categories"], words)
    return config


def class_prompts(class_names: Sequence[str], generate: Mapping[str, Any]) -> list[dict[str, str | None]]:
    """What every class is called in the prompts of the ``generate`` section: its ``words``
    (:func:`lthash.generate.prompts.class_words`; None where none can be made and none are
    needed), its super-``category``, and the base ``prompt`` (personalisation puts [V] before
    the prompt's word): the base's own caption for a tiny or shipped base, the super-category for
    a Stable Diffusion folder."""
    from lthash.generate.models import MODEL_INFO_FILE
    from lthash.generate.prompts import category_prompt
    from lthash.generate.shipped import MODELS_DIR, PREFIX

    words_value, model = generate.get("class_words"), generate["base"]["model"]
    try:
        words: list[str | None] = list(class_words(class_names, words_value))
    except LthashError:
        words = [None] * len(class_names)
    categories = class_categories(class_names, generate["categories"], words_value)
    if model == "tiny":
        prompted = caption_words(class_names, generate["base"]["captions"], generate["categories"], words_value)
    elif model.startswith(PREFIX):
        info = json.loads((MODELS_DIR / model[len(PREFIX):] / MODEL_INFO_FILE).read_text())
        prompted = prompt_words(info, class_names, generate["categories"], words_value)
    else:
        prompted = categories
    return [{"class": str(name), "words": word, "category": category, "prompt": category_prompt(prompt)}
            for name, word, category, prompt in zip(class_names, words, categories, prompted)]


def write_corpus(folder: Path, corpus: Corpus) -> None:
    """``corpus.json`` and (for outside_split) ``corpus.safetensors`` into a model folder being written."""
    from lthash.io import save_safetensors

    (folder / CORPUS_FILE).write_text(json.dumps(corpus.record, indent=2, sort_keys=True) + "\n")
    if corpus.record["kind"] == "outside_split":
        import torch

        save_safetensors(folder / CORPUS_INDEX_FILE, {"index": torch.from_numpy(np.sort(corpus.index))})


def read_corpus(base_dir: str | os.PathLike) -> tuple[dict[str, Any], np.ndarray | None]:
    """(record, source indices or None) of a base folder; an empty record for a base without one."""
    base_dir = Path(base_dir)
    path = base_dir / CORPUS_FILE
    if not path.exists():
        return {}, None
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise LthashError(f"{path} is not valid JSON: {exc}") from exc
    if record.get("kind") != "outside_split":
        return record, None
    from lthash.io import load_safetensors

    index_path = base_dir / CORPUS_INDEX_FILE
    if not index_path.exists():
        raise LthashError(f"{index_path} is missing: the base cannot show that its corpus is disjoint from the split")
    tensors, _ = load_safetensors(index_path)
    index = tensors["index"].numpy().astype(np.int64)
    if index_digest(index) != record.get("index_sha256"):
        raise LthashError(f"{index_path} does not match the checksum recorded in {path}")
    return record, index


def check_base_corpus(base_dir: str | os.PathLike, split_path: str | os.PathLike) -> None:
    """Refuse a base whose corpus shares an image with the split (or comes from another dataset)."""
    from lthash.io import read_attrs

    record, index = read_corpus(base_dir)
    if index is None:
        return
    dataset = read_attrs(split_path).get("dataset")
    if record.get("dataset") != dataset:
        raise LthashError(f"config key 'generate.base.model': the base {base_dir} learned from {record.get('dataset')} "
                          f"images outside another split, but the split {split_path} is of {dataset}")
    shared = np.intersect1d(index, split_indices(split_path))
    if len(shared):
        raise LthashError(f"config key 'generate.base.model': the corpus of {base_dir} shares {len(shared)} image(s) "
                          f"with the split {split_path} (first: source index {int(shared[0])}); the base must "
                          f"never have seen a query, database or training image. Train a base for this split "
                          f"(generate.base.model: tiny)")


def corpus_class_images(base_dir: str | os.PathLike, class_names: Sequence[str], words: Sequence[str],
                        class_index: int, count: int, seed: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, source indices) of up to ``count`` real images of the base's recorded corpus
    that the base saw captioned with class ``class_index``'s prompt: the images of every class
    whose caption word (``words``, by class) is that class's. A seeded choice without replacement.

    Only an ``outside_split`` corpus qualifies (disjoint from the split, :func:`check_base_corpus`):
    a base with no corpus record, or one that learned from the split's training group, is refused
    naming ``key``, as is a class with no image in the corpus.
    """
    from lthash.data.readers import load_dataset

    record, index = read_corpus(base_dir)
    if not record:
        raise LthashError(f"config key '{key}' is corpus, but the base {base_dir} records no corpus ({CORPUS_FILE}): "
                          f"its class images can only be its own samples (source: samples)")
    if index is None:
        raise LthashError(f"config key '{key}' is corpus, but the base {base_dir} learned from the split's own "
                          f"training images (corpus {record.get('kind')!r}) and class images never come from the "
                          f"split: use source: samples, or a base trained with generate.base.corpus: outside_split")
    dataset = load_dataset(record["split_params"]["dataset"])
    if list(map(str, dataset.class_names)) != list(map(str, class_names)):
        raise LthashError(f"config key '{key}': the corpus of {base_dir} ({record.get('dataset')}) has classes "
                          f"{list(dataset.class_names)}, the split has {list(class_names)}")
    captioned = [c for c, word in enumerate(words) if word == words[class_index]]
    members = index[np.isin(dataset.labels[index], captioned)]
    if not len(members):
        raise LthashError(f"config key '{key}' is corpus, but the corpus of {base_dir} holds no image of class "
                          f"{class_index} ({class_names[class_index]!r}) or of a class sharing its caption "
                          f"{words[class_index]!r}")
    chosen = np.sort(np.random.default_rng(seed).permutation(members)[:count])
    return dataset.images[chosen], chosen

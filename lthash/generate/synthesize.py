"""Sharded synthesis: one (generator, class, purpose, shard) file of synthetic images.

Every shard has its own seed, derived from (generate.seed, generator, class, purpose, shard),
so shards are distinct and each is reproducible on its own. With ``synthesis.init: real`` each
image starts from one of the class's long-tail training images (a permutation seeded by the
shard's seed, cycled); with ``synthesis.filter_factor`` f > 1 a shard draws ceil(f x count)
candidates and keeps the count that the filter judge (``lthash filter-judge``) picks by its
keep rule (:mod:`lthash.generate.filtering`), in drawing order. A shard file appears atomically;
a complete shard already in place is never redrawn, and a killed job leaves nothing but a
temporary file, which the next writer of the same shard removes (``lthash.io.atomic_path``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from lthash.errors import LthashError
from lthash.generate.judge import check_judge_for
from lthash.generate.models import DiffusionComponents, load_components
from lthash.generate.sampler import SamplerConfig, generate, img2img_start
from lthash.generate.plan import shard_entry
from lthash.generate.shards import class_train_images, init_choice, shard_is_complete, shard_seed  # noqa: F401
from lthash.generate.corpus import check_base_corpus, prompt_words
from lthash.generate.prompts import category_prompt
from lthash.io import ImageSet, canonical_json, open_complete_h5, read_attrs, write_image_sets
from lthash.runtime import memory_hint

log = logging.getLogger("lthash.synthesize")

BASE_GENERATOR = "base"


def split_image_shape(split_path: str | os.PathLike) -> tuple[int, int, int]:
    """(H, W, C) of the split's images, which synthetic shards must match: the stored pixels'
    shape, else (a split stored as paths) its ``image_shape`` attribute."""
    with open_complete_h5(split_path) as h5:
        for group in ("train", "train_balanced", "database", "query"):
            if group in h5 and "images" in h5[group]:
                return tuple(int(v) for v in h5[group]["images"].shape[1:])
    shape = read_attrs(split_path).get("image_shape")
    if shape is not None and len(shape) == 3:
        return tuple(int(v) for v in shape)
    raise LthashError(f"{split_path} holds no images to take the shard size from")


def load_generator(model_dir: str | os.PathLike, base_dir: str | os.PathLike | None, class_index: int,
                   class_names: list[str], categories: Mapping[str, str] | None,
                   device: str = "cpu", class_words: Mapping[str, str] | str | None = None
                   ) -> tuple[DiffusionComponents, str, str]:
    """(components, prompt, generator name) for one class.

    ``model_dir`` is a concept folder (``concept.json``, from ``lthash personalize``), a joint
    concept folder (``joint.json``, every class: ``lthash personalize-joint``) or a model folder itself; the latter is the non-personalised generator ``base``, prompted with
    the base's own caption of the class ("a photo of a <word>": the class name for a
    class_name base, the super-category otherwise).
    """
    model_dir = Path(model_dir)
    from lthash.generate.concepts import is_joint_concept

    if is_joint_concept(model_dir):
        from lthash.generate.concepts import joint_class_prompt, load_joint_concept

        if base_dir is None:
            raise LthashError(f"joint concept {model_dir} needs --base (the model it was personalised from)")
        components, record = load_joint_concept(model_dir, base_dir, device=device)
        return components, joint_class_prompt(record, class_index, model_dir), str(record["method"])
    if (model_dir / "concept.json").exists():
        from lthash.generate.concepts import load_concept, read_concept

        record = read_concept(model_dir)
        if int(record["class_index"]) != int(class_index):
            raise LthashError(f"concept {model_dir} is for class {record['class_index']}, not class {class_index}")
        if base_dir is None:
            raise LthashError(f"concept {model_dir} needs --base (the model it was personalised from)")
        components, prompt = load_concept(model_dir, base_dir, device=device)
        return components, prompt, str(record["method"])
    components = load_components(model_dir, device=device)
    words = prompt_words(components.info, class_names, categories, class_words)
    return components, category_prompt(words[class_index]), BASE_GENERATOR


def generator_prompt(model_dir: str | os.PathLike, class_index: int, class_names: list[str],
                     categories: Mapping[str, str] | None, components: DiffusionComponents,
                     class_words: Mapping[str, str] | str | None = None) -> str:
    """The prompt :func:`load_generator` gives class ``class_index`` of ``model_dir``, read without
    loading any weights (``components``: the model already loaded from ``model_dir``)."""
    from lthash.generate.concepts import is_joint_concept, joint_class_prompt, read_concept, read_joint_concept

    model_dir = Path(model_dir)
    if is_joint_concept(model_dir):
        return joint_class_prompt(read_joint_concept(model_dir), class_index, model_dir)
    if (model_dir / "concept.json").exists():
        return str(read_concept(model_dir)["prompt"])
    return category_prompt(prompt_words(components.info, class_names, categories, class_words)[class_index])


def candidate_count(count: int, factor: float) -> int:
    """ceil(factor x count) candidates (rounded first, so 1.1 x 10 is 11, not 12)."""
    return int(math.ceil(round(float(factor) * count, 9)))


def _judge_for(judge_dir: str | os.PathLike | None, factor: float, split_path: str | os.PathLike,
               class_names: list[str]) -> dict[str, str]:
    """What a shard records of its filter: the judge's digest (checked to be the split's) and,
    when filtering, its keep rule (``generate.filter_judge.keep``); "none" when nothing is filtered."""
    if factor <= 1:
        return {"filter_judge": "none"}
    if judge_dir is None:
        raise LthashError(f"config key 'generate.synthesis.filter_factor' is {factor:g}: filtering needs "
                          "--judge (the folder written by lthash filter-judge)")
    from lthash.generate.filtering import keep_rule

    digest, record = check_judge_for(judge_dir, split_path, class_names)
    return {"filter_judge": digest, "filter_keep": keep_rule(record)}


def _filtered(images: np.ndarray, init_index: np.ndarray | None, strengths: np.ndarray | None,
              judge_dir: str | os.PathLike, rule: str, class_index: int, count: int):
    """(images, init indices, strengths, what the shard records of the filter) of the kept candidates."""
    from lthash.generate.filtering import keep_candidates

    keep, extra = keep_candidates(images, judge_dir, rule, class_index, count)
    return (images[keep], None if init_index is None else init_index[keep],
            None if strengths is None else strengths[keep], extra)


def strength_record(strength: float | list[float]) -> float | str:
    """How a shard records ``generate.synthesis.strength``: the number, or a set as canonical JSON."""
    return canonical_json(sorted(float(s) for s in strength)) if isinstance(strength, list) else float(strength)


def image_strengths(strength: float | list[float], count: int, seed: int) -> np.ndarray:
    """The strength of each of ``count`` images: the one number, or a uniform draw from the set
    (``numpy.random.default_rng([seed, 606])``)."""
    if not isinstance(strength, list):
        return np.full(count, float(strength))
    choices = np.asarray(sorted(float(s) for s in strength))
    return choices[np.random.default_rng([seed, 606]).integers(len(choices), size=count)]


def _draw(components: DiffusionComponents, prompt: str, count: int, seed: int, sampler: SamplerConfig,
          size: tuple[int, int, int], on_batch, init_images: np.ndarray | None,
          strengths: np.ndarray | None, reference: str = "") -> np.ndarray:
    """``count`` images of ``prompt``: from noise, or from ``init_images`` at ``strengths``, one
    group per strength in ascending order, every group drawing from one generator seeded ``seed``
    (a single strength is one group: the plain image-to-image run). Guidance is taken against
    ``reference`` (the empty prompt, or the super-category's: :func:`guidance_reference`)."""
    generator = torch.Generator().manual_seed(seed)
    if init_images is None:
        return generate(components, [prompt] * count, generator, sampler, size=size, on_batch=on_batch,
                        negative_prompt=reference)
    images = None
    for value in np.unique(strengths):
        members = np.flatnonzero(strengths == value)
        drawn = generate(components, [prompt] * len(members), generator, sampler, size=size, on_batch=on_batch,
                         init_images=init_images[members], strength=float(value), negative_prompt=reference)
        if images is None:
            images = np.empty((count, *drawn.shape[1:]), dtype=drawn.dtype)
        images[members] = drawn
    return images


def guidance_reference(components: DiffusionComponents, mode: str, class_names: list[str],
                       categories: Mapping[str, str] | None, class_index: int,
                       class_words: Mapping[str, str] | str | None = None) -> str:
    """The prompt classifier-free guidance is taken against (``generate.synthesis.guidance_reference``):

    - ``empty``: "" (classifier-free guidance as trained: eps = eps("") + w (eps(c) - eps("")));
    - ``category``: the class's super-category prompt "a photo of a <category>"
      (eps = eps_cat + w (eps_class - eps_cat): it amplifies what tells the classes of one
      category apart). Every word of it must be known to the base's tokenizer.
    """
    if mode == "empty":
        return ""
    if mode != "category":
        raise LthashError(f"config key 'generate.synthesis.guidance_reference': {mode!r} is not one of empty, category")
    from lthash.generate.prompts import class_categories

    word = class_categories(class_names, categories, class_words)[class_index]
    tokenizer = components.tokenizer
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids or tokenizer.unk_token_id in ids:
        raise LthashError(f"config key 'generate.synthesis.guidance_reference' is category, but the base model's "
                          f"tokenizer does not know the category word {word!r} of class {class_names[class_index]!r} "
                          f"(set generate.categories, or use guidance_reference: empty)")
    return category_prompt(word)


def _sampling(components: DiffusionComponents, params: Mapping[str, Any], class_names: list[str],
              class_index: int) -> tuple[SamplerConfig, str]:
    """(sampler, guidance reference prompt) of a shard, the strengths checked against the steps
    before anything is drawn."""
    synthesis = params["synthesis"]
    sampler = SamplerConfig.for_model(components, synthesis)
    reference = guidance_reference(components, str(synthesis["guidance_reference"]), class_names,
                                   params.get("categories"), class_index, params.get("class_words"))
    if synthesis["init"] == "real":
        strength = synthesis["strength"]
        for value in strength if isinstance(strength, list) else [strength]:
            img2img_start(sampler.steps, float(value))
    return sampler, reference


def memory_settings(sampler: SamplerConfig) -> list[str]:
    """The config keys that size synthesis's memory, with their values (for :func:`memory_hint`)."""
    return [f"generate.synthesis.batch_size (now {sampler.batch_size}): lower it",
            f"generate.synthesis.mixed_precision (now {sampler.mixed_precision}): fp16 or bf16"]


def synthesize_shard(
    model_dir: str | os.PathLike,
    base_dir: str | os.PathLike | None,
    class_index: int,
    purpose: str,
    shard: int,
    plan: Mapping[str, Any],
    split_path: str | os.PathLike,
    out: str | os.PathLike,
    params: Mapping[str, Any],
    device: str = "cpu",
    progress: bool = True,
    judge_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Draw one shard of the plan and write it to ``out``; returns a summary (images, candidates,
    seconds, images/s per kept image).

    ``params`` is the ``generate`` section (``seed``, ``categories``, ``synthesis``);
    ``judge_dir`` the filter judge's folder, required when ``synthesis.filter_factor`` > 1.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    entry = shard_entry(plan, class_index, purpose, shard)
    synthesis = params["synthesis"]
    init, strength = str(synthesis["init"]), synthesis["strength"]
    factor = float(synthesis["filter_factor"])
    class_names = list(plan["class_names"])
    judge = _judge_for(judge_dir, factor, split_path, class_names)
    check_base_corpus(base_dir if base_dir is not None else model_dir, split_path)
    components, prompt, generator_name = load_generator(model_dir, base_dir, class_index, class_names,
                                                        params.get("categories"), device,
                                                        params.get("class_words"))
    sampler, reference = _sampling(components, params, class_names, class_index)
    seed = shard_seed(params["seed"], generator_name, class_index, purpose, shard)
    expected = {"generator": generator_name, "class_index": class_index, "shard": shard, "purpose": purpose,
                "seed": seed, "count": entry["count"], "sampler": canonical_json(sampler.__dict__),
                "init": init, "strength": strength_record(strength) if init == "real" else "none", "filter_factor": factor,
                "guidance_reference": reference, **judge}
    if shard_is_complete(out, expected):
        log.info("%s is complete already: not redrawn", out)
        return {"images": entry["count"], "seconds": 0.0, "skipped": True}
    size = split_image_shape(split_path)
    candidates = candidate_count(entry["count"], factor)
    init_images = init_index = strengths = None
    if init == "real":
        train = class_train_images(split_path, class_index, "config key 'generate.synthesis.init': real needs them")
        picks = init_choice(train.index, candidates, seed)
        init_images, init_index = train.images[picks], train.index[picks]
        strengths = image_strengths(strength, candidates, seed)
    started = time.perf_counter()
    with tqdm(total=candidates, desc=f"class {class_index} {purpose} shard {shard}",
              disable=not progress, mininterval=5) as bar:
        with memory_hint(f"synthesis of class {class_index}", memory_settings(sampler)):
            images = _draw(components, prompt, candidates, seed, sampler, size, bar.update, init_images, strengths,
                           reference)
    extra: dict[str, np.ndarray] = {}
    if factor > 1:
        images, init_index, strengths, extra = _filtered(images, init_index, strengths, judge_dir,
                                                         judge["filter_keep"], class_index, entry["count"])
    if init_index is not None:
        extra["init_index"] = np.asarray(init_index, dtype=np.int64)
    if isinstance(strength, list):
        extra["strength"] = np.asarray(strengths, dtype=np.float32)
    seconds = time.perf_counter() - started
    attrs = dict(expected, class_name=class_names[class_index], prompt=prompt, start=entry["start"],
                 candidates=candidates)
    write_image_sets(out, {"synthetic": ImageSet(
        images=images,
        labels=np.full(len(images), class_index, dtype=np.int64),
        index=entry["start"] + np.arange(len(images), dtype=np.int64),
        attrs=attrs,
        extra=extra,
    )}, attrs={"generator": generator_name, "params": canonical_json(dict(params))})
    rate = len(images) / seconds if seconds > 0 else float("inf")
    log.info("%s: %d images (of %d candidates) in %.1f s (%.2f kept images/s)", out, len(images), candidates,
             seconds, rate)
    return {"images": len(images), "candidates": candidates, "seconds": seconds, "images_per_second": rate,
            "skipped": False}

"""Personalise the base model to one class: run a method's stages and write the concept folder.

Order of work: check inputs (method, class, images) before loading any model; load the base;
add the [V] token; resume from ``<out>.partial/`` when it holds a checkpoint of the same
settings; run the remaining stages with a checkpoint and a sample grid after each; write the
concept folder atomically; remove the partial folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from lthash.errors import LthashError
from lthash.generate.concepts import write_concept
from lthash.generate.models import images_to_pixels, load_components
from lthash.checkpointing import CheckpointFolder, partial_folder
from lthash.generate.personalize.data import Augmentation, load_class_images, prior_class_images
from lthash.generate.personalize.method import Method, get_method
from lthash.generate.personalize.sampling import sample_images, save_grid
from lthash.generate.personalize.trainer import (ConceptToken, StageTrainer, TrainingData, TrainingOptions,
                                                 changed_weights, concept_prompt, concept_token_name, load_weights)
from lthash.generate.corpus import check_base_corpus, prompt_words

log = logging.getLogger("lthash.personalize")

def run_seed(seed: int, class_index: int, method: Method) -> int:
    """One independent seed per (config seed, class, method)."""
    return int(np.random.SeedSequence([seed, class_index, method.seed_id]).generate_state(1)[0])


def make_accelerator(device: str, mixed_precision: str):
    """An Accelerator on ``device``; mixed precision only on CUDA (CPU autocast gave nothing here)."""
    from accelerate import Accelerator

    cpu = not device.startswith("cuda")
    if device.startswith("cuda:") and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        torch.cuda.set_device(int(device.split(":")[1]))
    return Accelerator(cpu=cpu, mixed_precision="no" if cpu else mixed_precision)


def check_replicas_agree(accelerator, weights: Mapping[str, torch.Tensor]) -> None:
    """Under several processes, every replica must hold the same trained weights (a checksum per tensor)."""
    if accelerator.num_processes == 1:
        return
    sums = torch.stack([value.detach().double().sum() for _, value in sorted(weights.items())]).to(accelerator.device)
    gathered = accelerator.gather(sums[None]).reshape(accelerator.num_processes, -1)
    if not torch.equal(gathered, gathered[:1].expand_as(gathered)):
        raise RuntimeError("replicas diverged: the trained weights differ between processes")


def _resume(checkpoints: CheckpointFolder, trainer: StageTrainer, components, token: ConceptToken,
            generator: torch.Generator, partial: Path):
    """The latest checkpoint, its weights, random state and stage log restored; None when the run starts afresh."""
    resume = checkpoints.latest()
    if resume is not None:
        load_weights(components.unet, token, resume.tensors["weights"])
        resume.restore_rng(generator)
        trainer.stage_log = list(resume.state["stage_log"])
        log.info("resuming %s at stage %d step %d", partial, *resume.position)
    return resume


def _sample_grids(partial: Path) -> dict[str, Path]:
    """The sample grids drawn after each stage, by file name."""
    samples_dir = partial / "samples"
    return {path.name: path for path in (sorted(samples_dir.glob("*.png")) if samples_dir.exists() else [])}


def personalize(base_dir: str | os.PathLike, split_path: str | os.PathLike, class_index: int, method_name: str,
                out_dir: str | os.PathLike, generate_params: Mapping[str, Any], device: str = "cpu") -> Path:
    """Personalise ``base_dir`` to class ``class_index`` of the split's long-tail ``train`` group.

    ``generate_params`` is the validated ``generate`` config section (``seed``,
    ``categories`` = class name -> super-category overrides, ``personalize``). The category
    word is the one the base was trained with for the class (its super-category, or its own
    name for a known-class base: :func:`lthash.generate.corpus.prompt_words`). A base whose
    corpus shares an image with the split is refused. Returns the concept folder.
    """
    method: Method = get_method(method_name)
    if not method.personalises:
        raise LthashError(f"personalisation method {method.name!r} trains nothing: synthesis draws from the base "
                          f"model itself (lthash synthesize --model <base>)")
    check_base_corpus(base_dir, split_path)
    params = generate_params["personalize"]
    data = load_class_images(split_path, class_index)
    out = Path(out_dir)
    partial = partial_folder(out)
    accelerator = make_accelerator(device, params["mixed_precision"])
    components = load_components(base_dir, device=str(accelerator.device))
    has_vae = components.vae is not None
    stages = method.stages(params, has_vae)
    seed = run_seed(int(generate_params["seed"]), class_index, method)
    words = prompt_words(components.info, data.class_names, generate_params["categories"],
                         generate_params.get("class_words"))
    category = words[class_index]
    token_name = concept_token_name(class_index)
    token = ConceptToken(components, token_name, category).install()
    prompt = concept_prompt(token_name, category)
    token.positions(components, prompt)
    fingerprint = {
        "method": method.name, "class_index": class_index, "seed": seed, "category": category,
        "stages": [stage.as_dict() for stage in stages], "params": params, "images": int(len(data.images)),
        "base": str(Path(base_dir).resolve()), "processes": accelerator.num_processes,
    }
    checkpoints = CheckpointFolder(partial, fingerprint, process_index=accelerator.process_index,
                                   is_main_process=accelerator.is_main_process, barrier=accelerator.wait_for_everyone)
    checkpoints.prepare()
    grid = params["sample_grid"]
    prior = method.prior_settings(params)
    training_data = TrainingData(
        pixels=images_to_pixels(data.images, components.image_size, components.channels),
        prompt=prompt, augmentation=Augmentation.from_params(params["augment"]))
    prior_images = None
    if prior is not None:
        prior_images = prior_class_images(
            components, base_dir, prior, f"generate.personalize.{method.name}.prior_preservation", data.class_names,
            words, class_index, grid, seed + 1, partial / "prior.safetensors")
        training_data.prior_pixels, training_data.prior_prompt = prior_images.pixels, prior_images.prompt
        training_data.prior_seed = seed + 2 + 1_000_003 * accelerator.process_index
    generator = torch.Generator().manual_seed(seed + 1_000_003 * accelerator.process_index)
    trainer = StageTrainer(components, token, training_data, TrainingOptions.from_params(params), accelerator,
                           generator, checkpoints, stages, seed=seed, method=method.name)
    resume = _resume(checkpoints, trainer, components, token, generator, partial)
    first = 0 if resume is None else resume.position[0]
    for index in range(first, len(stages)):
        trainer.run(index, resume if resume is not None and resume.position[0] == index else None)
        if accelerator.is_main_process and int(grid["images"]) > 0:
            path = partial / "samples" / f"stage{index + 1}-{stages[index].name}.png"
            images = sample_images(components, [prompt] * int(grid["images"]), grid,
                                   torch.Generator().manual_seed(seed + 17))
            save_grid(images, path)
        trainer.save(index + 1, 0)
    check_replicas_agree(accelerator, changed_weights(components.unet, token, stages))
    if accelerator.is_main_process:
        record = {
            "method": method.name, "class_index": class_index, "class_name": data.class_name,
            "token": token_name, "category": category, "prompt": prompt, "seed": seed,
            "images": int(len(data.images)), "stages": trainer.stage_log, "params": params,
            "base": str(base_dir), "base_kind": components.kind, "processes": accelerator.num_processes,
            "prior": None if prior_images is None else prior_images.record(float(prior["weight"])),
        }
        unet_changed = any(stage.trains in ("cross_attention", "unet") for stage in stages)
        write_concept(out, record, token.row, accelerator.unwrap_model(components.unet) if unet_changed else None,
                      _sample_grids(partial))
        checkpoints.remove()
    accelerator.wait_for_everyone()
    return out

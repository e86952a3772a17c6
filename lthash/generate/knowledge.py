"""What a generator knows of each class, measured before any synthesis (the Diffusion Classifier).

A held-out real image x of class y is classified by the class prompt under which the
generator denoises it best (Li et al., "Your Diffusion Model is Secretly a Zero-Shot
Classifier"): with K fixed timesteps t_k (evenly spaced, t_k = floor((k + 1/2) T / K)) and one
fixed noise eps_{x,k} per image and timestep, shared by every class,

    L(x, c) = 1/K sum_k || eps_{x,k} - eps_theta_c(sqrt(a_k) x + sqrt(1 - a_k) eps_{x,k}, t_k, prompt_c) ||^2

and the prediction is argmin_c L(x, c). eps_theta_c is the generator of class c: the base
model, a class's own concept (per-class personalisation) or the joint concept. Two scores:

- ``accuracy``: argmin over every class;
- ``within_group_accuracy``: argmin over the classes of the image's super-category only
  (``generate.categories``), beside its chance level 1/|group|. A generator whose class
  prompts carry nothing beyond the category (the un-personalised base on a category-captioned
  base) sits exactly at chance there; a one-class group scores 1 for free, so groups are
  reported one by one and ``multi_class_groups`` averages only the groups of two classes or more.

Ties (identical prompts give identical losses) count as the expected accuracy of a random
choice among the tied classes (1/number tied when the true class is among them).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lthash.errors import LthashError

log = logging.getLogger("lthash.knowledge")


def measurement_timesteps(num_train_timesteps: int, count: int) -> torch.Tensor:
    """t_k = floor((k + 1/2) T / K), k = 0..K-1: evenly spaced, neither end of the schedule."""
    if count < 1:
        raise LthashError(f"config key 'generate.knowledge.timesteps': {count} is not >= 1")
    return torch.tensor([int((k + 0.5) * num_train_timesteps / count) for k in range(count)], dtype=torch.long)


@torch.inference_mode()
def denoising_losses(components, prompt: str, x0: torch.Tensor, noises: torch.Tensor, timesteps: torch.Tensor,
                     batch_size: int = 512) -> np.ndarray:
    """L(x, prompt) of every image (module docstring): ``x0`` N x C x H x W in model space,
    ``noises`` N x K x C x H x W, ``timesteps`` K. Returns N float64 losses."""
    from lthash.generate.models import encode_prompts
    from lthash.generate.personalize.trainer import prediction_target

    scheduler = components.noise_scheduler
    n, k = x0.shape[0], timesteps.shape[0]
    flat_x0 = x0[:, None].expand(n, k, *x0.shape[1:]).reshape(n * k, *x0.shape[1:])
    flat_noise = noises.reshape(n * k, *x0.shape[1:])
    flat_t = timesteps[None].expand(n, k).reshape(-1)
    context = encode_prompts(components, [prompt])
    unet = components.unet
    losses = torch.empty(n * k, dtype=torch.float64)
    for start in range(0, n * k, batch_size):
        end = min(start + batch_size, n * k)
        noise = flat_noise[start:end].to(flat_x0.device)
        t = flat_t[start:end].to(flat_x0.device)
        noisy = scheduler.add_noise(flat_x0[start:end], noise, t)
        target = prediction_target(scheduler, flat_x0[start:end], noise, t)
        pred = unet(noisy.to(unet.dtype), t, context.expand(end - start, -1, -1).to(unet.dtype)).sample.float()
        losses[start:end] = ((pred - target.float()) ** 2).flatten(1).mean(1).double().cpu()
    return losses.view(n, k).mean(1).numpy()


def tie_aware_correct(losses: np.ndarray, labels: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """Per image, the expected correctness of argmin over the allowed classes (``allowed``:
    N x C booleans, default all): 1/(number of minima) when the true class is among them, else 0."""
    masked = np.where(allowed, losses, np.inf) if allowed is not None else losses
    best = masked.min(1, keepdims=True)
    minima = np.isclose(masked, best, rtol=1e-9, atol=0.0) & np.isfinite(masked)
    hit = minima[np.arange(len(labels)), labels]
    return np.where(hit, 1.0 / minima.sum(1), 0.0)


def knowledge_metrics(losses: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                      categories: Sequence[str]) -> dict[str, Any]:
    """Accuracy over all classes and within super-category groups, per class and per group."""
    categories = list(categories)
    category_of = np.array(categories)
    same_group = category_of[None, :] == category_of[labels][:, None]
    overall = tie_aware_correct(losses, labels)
    within = tie_aware_correct(losses, labels, same_group)
    per_class = {}
    for c, name in enumerate(class_names):
        members = labels == c
        if not members.any():
            continue
        group_size = int((category_of == categories[c]).sum())
        per_class[str(name)] = {"class_index": c, "category": categories[c], "images": int(members.sum()),
                                "accuracy": float(overall[members].mean()),
                                "within_group_accuracy": float(within[members].mean()),
                                "within_group_chance": 1.0 / group_size}
    groups = OrderedDict()
    for group in sorted(set(categories), key=categories.index):
        members = [name for name, entry in per_class.items() if entry["category"] == group]
        if not members:
            continue
        groups[group] = {"classes": members, "chance": 1.0 / int((category_of == group).sum()),
                         "within_group_accuracy": float(np.mean([per_class[m]["within_group_accuracy"]
                                                                 for m in members]))}
    multi = [entry for entry in per_class.values() if entry["within_group_chance"] < 1.0]
    return {
        "images": int(len(labels)),
        "accuracy": float(np.mean([entry["accuracy"] for entry in per_class.values()])),
        "chance": 1.0 / len(class_names),
        "within_group_accuracy": float(np.mean([entry["within_group_accuracy"] for entry in per_class.values()])),
        "within_group_chance": float(np.mean([entry["within_group_chance"] for entry in per_class.values()])),
        "multi_class_groups": {
            "within_group_accuracy": float(np.mean([e["within_group_accuracy"] for e in multi])) if multi else None,
            "chance": float(np.mean([e["within_group_chance"] for e in multi])) if multi else None,
        },
        "groups": groups,
        "classes": per_class,
    }


def held_out_images(split_path: str | os.PathLike, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(uint8 images, labels, group name) of up to ``per_class`` held-out real images per class:
    the split's ``validation`` group (never the queries); a seeded subset when it has more."""
    from lthash.io import read_image_set

    try:
        held = read_image_set(split_path, "validation")
    except (KeyError, LthashError) as exc:
        raise LthashError(f"{split_path} has no validation group to measure the generators on "
                          f"(set split.validation_per_class > 0): {exc}") from exc
    if held.labels.ndim != 1:
        raise LthashError("the knowledge measure needs single-label classes (the split has one-hot labels)")
    rng = np.random.default_rng([seed, 707])
    keep = []
    for c in np.unique(held.labels):
        members = np.flatnonzero(held.labels == c)
        keep.append(np.sort(rng.permutation(members)[:per_class]) if len(members) > per_class else members)
    keep = np.sort(np.concatenate(keep))
    return held.images[keep], held.labels[keep], "validation"


def measure_generator(models: Sequence[str | os.PathLike], base_dir: str | os.PathLike | None,
                      split_path: str | os.PathLike, params: Mapping[str, Any], generator: str,
                      device: str = "cpu") -> dict[str, Any]:
    """The knowledge JSON of one generator: ``models[c]`` is what synthesis draws class c from
    (a concept folder, the joint concept folder, or the base folder); ``params`` the validated
    ``generate`` section (``seed``, ``categories``, ``class_words``, ``knowledge``)."""
    import time

    from lthash.generate.models import encode_images
    from lthash.generate.prompts import class_categories
    from lthash.generate.synthesize import generator_prompt, load_generator
    from lthash.io import read_attrs

    settings = params["knowledge"]
    class_names = [str(n) for n in read_attrs(split_path)["class_names"]]
    if len(models) != len(class_names):
        raise LthashError(f"{len(models)} generator models for {len(class_names)} classes: give one per class")
    seed = int(params["seed"])
    images, labels, group = held_out_images(split_path, int(settings["images_per_class"]), seed)
    categories = class_categories(class_names, params.get("categories"), params.get("class_words"))
    began = time.perf_counter()
    losses = np.empty((len(labels), len(class_names)))
    loaded_key, components = None, None
    x0 = noises = timesteps = None
    prompts = []
    for c in range(len(class_names)):
        key = str(Path(models[c]).resolve())
        if key == loaded_key:  # one model for every class (base, joint): only the prompt changes
            prompt = generator_prompt(models[c], c, class_names, params.get("categories"), components,
                                      params.get("class_words"))
        else:
            components, prompt, _ = load_generator(models[c], base_dir, c, class_names, params.get("categories"),
                                                   device, params.get("class_words"))
            loaded_key = key
            components.unet.eval()
        if x0 is None:
            x0 = encode_images(components, images, sample=False).float()
            timesteps = measurement_timesteps(components.noise_scheduler.config.num_train_timesteps,
                                              int(settings["timesteps"]))
            noises = torch.randn((len(labels), len(timesteps), *x0.shape[1:]),
                                 generator=torch.Generator().manual_seed(seed + 808))
        losses[:, c] = denoising_losses(components, prompt, x0, noises, timesteps)
        prompts.append(prompt)
    metrics = knowledge_metrics(losses, labels, class_names, categories)
    metrics.update({"generator": generator, "held_out": group, "timesteps": timesteps.tolist(),
                    "images_per_class": int(settings["images_per_class"]), "prompts": prompts,
                    "seconds": round(time.perf_counter() - began, 2)})
    return metrics

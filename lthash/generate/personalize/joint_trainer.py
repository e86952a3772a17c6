"""The joint personalisation trainer: every class taught in one run, the classes each other's negatives.

Per-class personalisation (AttnDreamBooth, DreamBooth, Textual Inversion) shows one concept
its own images and nothing else; a base that knows only the super-category then has nothing
that tells a Shirt from a Pullover. The methods that teach a model many new classes (Diff-Mix,
DataDream's dataset-wide LoRA, Azizi et al.) train them together, and so does this one:

- one new token per class, ``<v_c>``, its embedding row initialised from the class's category
  word; the prompt of class c is "a photo of a <v_c>" (``prompt: token``: the token takes the
  category word's place in the base's own caption, so every later position of the text
  encoder's output, which the base's cross-attention learned to read, carries it) or
  "a photo of a <v_c> <category>" (``token_category``, Diff-Mix's and AttnDreamBooth's form);
- the token rows and the UNet (``trains: unet``) or only its cross-attention q/k/v/out
  (``trains: cross_attention``), with ``text_time_embedding`` a pooled-text pathway into the
  UNet's time embedding (:func:`lthash.generate.models.with_text_time_embedding`, starting at
  0), and the text encoder but its embedding table
  (``train_text_encoder``; null = the tiny model's yes, as its base training does, Stable
  Diffusion's no), trained together with AdamW at ``token_lr`` and ``lr`` (warm-up, then cosine);
- each step draws ``batch_size`` long-tail training images class-balanced (a class with
  probability 1/C, then one of its images uniformly: Diff-Mix's 1/n sampler), augmented as
  per-class personalisation is; each prompt is the empty one with probability
  ``caption_dropout`` (classifier-free guidance keeps working);
- plus ``replay_batch`` images of the base's recorded corpus captioned with the base's own
  prompt for them ("a photo of a <category>"), the prior that keeps the category drawable:

      L = mean_i ||eps_i - eps(x_i,t, t_i, c_i)||^2 + replay_weight * mean_j ||eps_j - eps(x_j,t, t_j, c_cat(j))||^2

- with ``ema_decay`` d > 0, the folder holds an exponential moving average of every trained
  tensor (:mod:`lthash.generate.ema`), as the base stage does, instead of the last step's.

The output is a joint concept folder (:mod:`lthash.generate.concepts`): ``joint.json``, one
embedding row per class, the trained UNet, a sample grid. Synthesis and the knowledge measure
read it for any of its classes. Checkpoints (``<out>.partial/``, every ``checkpoint_every``
steps) hold the trained tensors, the optimiser state and the random state: a resumed run
draws the same batches and ends with the same weights.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lthash.checkpointing import CheckpointFolder, partial_folder
from lthash.errors import LthashError
from lthash.generate.corpus import check_base_corpus, corpus_class_images, prompt_words
from lthash.generate.ema import ExponentialMovingAverage
from lthash.generate.models import (DiffusionComponents, images_to_pixels, load_components, tokenize,
                                   with_text_time_embedding)
from lthash.generate.personalize.data import Augmentation
from lthash.generate.personalize.joint import METHOD
from lthash.generate.personalize.trainer import (CROSS_ATTENTION_PARTS, EmbeddingHook, add_token, category_token_id,
                                                 noise_and_timesteps, prediction_target,
                                                 concept_prompt, concept_token_name, to_model_space)
from lthash.generate.prompts import category_prompt
from lthash.schedules import warmup_decay

log = logging.getLogger("lthash.personalize")

TOKENS_GROUP = "tokens"
UNET_GROUP = "unet"
TEXT_GROUP = "text_encoder"
EMA_GROUP = "ema"
TEXT_TIME_PARTS = "add_embedding."  # the text-time pathway (with_text_time_embedding): trained whenever present


class ConceptTokens(EmbeddingHook):
    """One new token per class; while installed, token id ``ids[c]`` reads ``rows[c]``:
    e(t) = rows[c] if t == ids[c] else E[t] (the embedding table itself never changes).

    ``rows[c]`` starts at the row of its category word w_c, plus, with ``init_spread`` s > 0, a
    random offset of s times that row's norm in a direction drawn from ``generator``:
    rows[c] = E[w_c] + s ||E[w_c]|| u_c, u_c uniform on the sphere (classes of one category
    then start apart instead of identical)."""

    def __init__(self, components: DiffusionComponents, tokens: Sequence[str], categories: Sequence[str],
                 init_spread: float = 0.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.tokens = list(tokens)
        self.ids = [add_token(components, token) for token in self.tokens]
        self.embedding = components.text_encoder.get_input_embeddings()
        start = torch.stack([self.embedding.weight[category_token_id(components, word)] for word in categories])
        start = start.detach().float()
        if init_spread > 0:
            offsets = torch.randn(start.shape, generator=generator)
            offsets = offsets / offsets.norm(dim=1, keepdim=True) * start.norm(dim=1, keepdim=True) * init_spread
            start = start + offsets.to(start.device)
        self.rows = torch.nn.Parameter(start.detach().clone().float().to(self.embedding.weight.device))
        self._lookup = torch.full((self.embedding.weight.shape[0],), -1, dtype=torch.long)
        self._lookup[torch.tensor(self.ids)] = torch.arange(len(self.ids))

    def _inject(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        which = self._lookup.to(inputs[0].device)[inputs[0]]
        mask = (which >= 0).unsqueeze(-1)
        return torch.where(mask, self.rows[which.clamp(min=0)].to(output.dtype), output)


@dataclass(frozen=True)
class JointSettings:
    """The keys of validated ``generate.personalize.joint`` (defaults in the schema)."""

    trains: str
    text_time_embedding: bool
    train_text_encoder: bool | None
    prompt: str
    init_spread: float
    steps: int
    lr: float
    token_lr: float
    warmup_steps: int
    batch_size: int
    caption_dropout: float
    replay_batch: int
    replay_images: int
    replay_weight: float
    ema_decay: float

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> "JointSettings":
        return cls(**{**{key: params[key] for key in cls.__dataclass_fields__}, **overrides})


def joint_prompt(form: str, token: str, category: str) -> str:
    """A class's prompt: ``token_category`` = "a photo of a <v_c> <category>" (AttnDreamBooth's and
    Diff-Mix's form); ``token`` = "a photo of a <v_c>", the token in the place of the category
    word of the base's own captions (and initialised from it, so the prompt starts as the
    base's caption)."""
    if form == "token_category":
        return concept_prompt(token, category)
    if form == "token":
        return category_prompt(token)
    raise LthashError(f"config key 'generate.personalize.joint.prompt': unknown form {form!r} (token, token_category)")


def balanced_batch(labels: np.ndarray, num_classes: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of one class-balanced batch: each entry a class drawn uniformly among the classes
    that have images, then one of that class's images uniformly (with replacement)."""
    present = [c for c in range(num_classes) if (labels == c).any()]
    members = [np.flatnonzero(labels == c) for c in present]
    classes = torch.randint(0, len(present), (batch_size,), generator=generator).tolist()
    picks = torch.rand(batch_size, generator=generator, dtype=torch.float64).tolist()
    return torch.tensor([int(members[c][min(int(p * len(members[c])), len(members[c]) - 1)])
                         for c, p in zip(classes, picks)])


def _trained_unet_parameters(unet: torch.nn.Module, trains: str) -> dict[str, torch.nn.Parameter]:
    unet.requires_grad_(False)
    if trains == "unet":
        chosen = dict(unet.named_parameters())
    elif trains == "cross_attention":
        chosen = {n: p for n, p in unet.named_parameters()
                  if any(part in n for part in CROSS_ATTENTION_PARTS) or n.startswith(TEXT_TIME_PARTS)}
    else:
        raise LthashError(f"config key 'generate.personalize.joint.trains': unknown parameter set {trains!r} "
                          f"(unet, cross_attention)")
    for parameter in chosen.values():
        parameter.requires_grad_(True)
    return chosen


def _trained_text_parameters(text_encoder: torch.nn.Module, train: bool) -> dict[str, torch.nn.Parameter]:
    """The text encoder's parameters trained with the tokens (all but its token-embedding table,
    whose rows stay the base's: the class tokens live in their own rows); none when not ``train``."""
    text_encoder.requires_grad_(False)
    if not train:
        return {}
    table = text_encoder.get_input_embeddings().weight
    chosen = {n: p for n, p in text_encoder.named_parameters() if p is not table}
    for parameter in chosen.values():
        parameter.requires_grad_(True)
    text_encoder.train()
    return chosen


def _replay_set(base_dir, class_names, words, replay_images: int, seed: int):
    """Corpus images of every distinct caption word (``replay_images`` each) and their word index."""
    from lthash.generate.corpus import read_corpus

    record, index = read_corpus(base_dir)
    if not record or index is None:
        raise LthashError(f"config key 'generate.personalize.joint.replay_batch' is > 0, but the base {base_dir} "
                          f"records no corpus outside the split to replay (a shipped base, or one trained with "
                          f"generate.base.corpus: outside_split, has one): set replay_batch: 0")
    distinct = sorted(set(words))
    pixels, labels = [], []
    for w, word in enumerate(distinct):
        images, _ = corpus_class_images(base_dir, class_names, words, words.index(word), replay_images, seed + w,
                                        "generate.personalize.joint.replay_images")
        pixels.append(images)
        labels.append(np.full(len(images), w))
    return np.concatenate(pixels), np.concatenate(labels), distinct


def _long_tail_set(split_path: str | os.PathLike):
    """(class names, the split's long-tail ``train`` group, images per class); a multi-label split
    or a class without a long-tail image is refused."""
    from lthash.io import read_attrs, read_image_set

    class_names = [str(n) for n in read_attrs(split_path)["class_names"]]
    train = read_image_set(split_path, "train")
    if train.labels.ndim != 1:
        raise LthashError("joint personalisation needs single-label classes (the split has one-hot labels)")
    counts = np.bincount(train.labels, minlength=len(class_names))
    if (counts == 0).any():
        empty = [class_names[c] for c in np.flatnonzero(counts == 0)]
        raise LthashError(f"{split_path}: class(es) {empty} have no long-tail training image: nothing to personalise on")
    return class_names, train, counts


def _losses(components: DiffusionComponents, x0: torch.Tensor, ids: torch.Tensor, n: int,
            generator: torch.Generator, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
    """(instance MSE over the first ``n`` rows, replay MSE over the rest, 0 when none) of one
    step: noise and timesteps drawn from ``generator``, eps- or v-prediction target."""
    scheduler = components.noise_scheduler
    context = components.text_encoder(ids)[0]
    noise, timesteps = noise_and_timesteps(components, x0, generator)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    target = prediction_target(scheduler, x0, noise, timesteps)
    with accelerator.autocast():
        pred = components.unet(noisy, timesteps, context.to(noisy.dtype)).sample.float()
    instance = torch.nn.functional.mse_loss(pred[:n], target[:n].float())
    replay = torch.nn.functional.mse_loss(pred[n:], target[n:].float()) if x0.shape[0] > n else torch.zeros(())
    return instance, replay


def _sample_grid(components: DiffusionComponents, prompts: Sequence[str], grid: Mapping[str, Any], seed: int,
                 path: Path) -> dict[str, Path]:
    """A grid of samples, one row per class prompt (``grid["images"]`` // 2 each); {} when off."""
    from lthash.generate.personalize.sampling import sample_images, save_grid

    if int(grid["images"]) <= 0:
        return {}
    per_class = max(1, int(grid["images"]) // 2)
    images = sample_images(components, [p for p in prompts for _ in range(per_class)], grid,
                           torch.Generator().manual_seed(seed))
    save_grid(images, path, columns=per_class)
    return {path.name: path}


class JointData:
    """What a step draws from: the long-tail images (model pixels), their labels and class prompt
    ids, the empty prompt's ids, the augmentation, and the corpus replay set when there is one."""

    def __init__(self, components: DiffusionComponents, images: np.ndarray, labels: np.ndarray,
                 prompts: Sequence[str], augmentation: Augmentation) -> None:
        self.pixels = images_to_pixels(images, components.image_size, components.channels)
        self.labels = labels
        self.prompt_ids = tokenize(components, prompts)
        self.empty_ids = tokenize(components, [""])
        self.augmentation = augmentation
        self.replay_pixels = self.replay_labels = self.replay_ids = None

    def add_replay(self, components: DiffusionComponents, images: np.ndarray, labels: np.ndarray,
                   words: Sequence[str]) -> None:
        self.replay_pixels = images_to_pixels(images, components.image_size, components.channels)
        self.replay_labels = labels
        self.replay_ids = tokenize(components, [category_prompt(w) for w in words])

    def batch(self, components: DiffusionComponents, settings: JointSettings, num_classes: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(model-space images, prompt ids, number of instance rows) of one step: a class-balanced
        augmented batch, each prompt emptied with probability ``caption_dropout``, then the replay rows."""
        index = balanced_batch(self.labels, num_classes, settings.batch_size, generator)
        x0 = to_model_space(components, self.augmentation(self.pixels[index], generator), generator)
        labels = torch.as_tensor(self.labels[index.numpy()])
        drop = torch.rand(len(index), generator=generator) < settings.caption_dropout
        ids = torch.where(drop[:, None].to(self.prompt_ids.device), self.empty_ids.expand(len(index), -1),
                          self.prompt_ids[labels])
        if self.replay_pixels is not None:
            r = torch.randint(0, len(self.replay_pixels), (settings.replay_batch,), generator=generator)
            x0 = torch.cat([x0, to_model_space(components, self.replay_pixels[r], generator)])
            ids = torch.cat([ids, self.replay_ids[torch.as_tensor(self.replay_labels[r.numpy()])]])
        return x0, ids, len(index)


def _freeze(components: DiffusionComponents, concepts: ConceptTokens, ema: ExponentialMovingAverage | None) -> None:
    """Training over: the moving average (if any) copied into the trained tensors, UNet and text
    encoder in eval mode, nothing requires gradients."""
    if ema is not None:
        ema.copy_to_parameters()
    for module in (components.unet, components.text_encoder):
        module.eval()
        module.requires_grad_(False)
    concepts.rows.requires_grad_(False)


def _optimizer(components: DiffusionComponents, concepts: ConceptTokens, settings: JointSettings,
               weight_decay: float):
    """AdamW over the trained UNet and text-encoder parameters (``lr``) and the token rows
    (``token_lr``, no weight decay); returns it with the two named parameter sets."""
    train_text = components.kind == "tiny" if settings.train_text_encoder is None else settings.train_text_encoder
    text_params = _trained_text_parameters(components.text_encoder, train_text)
    unet_params = _trained_unet_parameters(components.unet, settings.trains)
    concepts.rows.requires_grad_(True)
    optimizer = torch.optim.AdamW([
        {"params": list(unet_params.values()) + list(text_params.values()), "lr": settings.lr,
         "weight_decay": weight_decay},
        {"params": [concepts.rows], "lr": settings.token_lr, "weight_decay": 0.0},
    ])
    return optimizer, unet_params, text_params


def _trained_tensors(concepts: ConceptTokens, unet_params, text_params) -> dict[str, torch.nn.Parameter]:
    """Every trained tensor by one flat name (``tokens.rows``, ``unet.<name>``, ``text_encoder.<name>``)."""
    return {f"{TOKENS_GROUP}.rows": concepts.rows, **{f"{UNET_GROUP}.{n}": p for n, p in unet_params.items()},
            **{f"{TEXT_GROUP}.{n}": p for n, p in text_params.items()}}


def _resume(checkpoints: CheckpointFolder, concepts: ConceptTokens, unet_params, text_params, optimizer,
            generator: torch.Generator, ema: ExponentialMovingAverage | None) -> tuple[int, list]:
    """(first step, losses so far): the newest checkpoint's tensors (and moving average),
    optimiser and random state restored into the run, or (0, []) when there is none."""
    resume = checkpoints.latest()
    if resume is None:
        return 0, []
    with torch.no_grad():
        concepts.rows.copy_(resume.tensors[TOKENS_GROUP]["rows"])
        for name, value in resume.tensors[UNET_GROUP].items():
            unet_params[name].copy_(value)
        for name, value in resume.tensors.get(TEXT_GROUP, {}).items():
            text_params[name].copy_(value)
        if ema is not None:
            for name, value in resume.tensors[EMA_GROUP].items():
                ema.shadow[name].copy_(value)
    optimizer.load_state_dict(resume.optimizers["optimizer"])
    resume.restore_rng(generator)
    log.info("resuming %s at step %d", checkpoints.dir, int(resume.position[0]))
    return int(resume.position[0]), list(resume.state["losses"])


def _save_checkpoint(checkpoints: CheckpointFolder, done: int, concepts: ConceptTokens, unet_params, text_params,
                     ema: ExponentialMovingAverage | None, losses: list, optimizer, generator: torch.Generator) -> None:
    """Checkpoint after step ``done``: the trained tensors (and their moving average), the losses,
    the optimiser and the random state, what :func:`_resume` restores."""
    checkpoints.save([done], {TOKENS_GROUP: {"rows": concepts.rows}, UNET_GROUP: dict(unet_params),
                              **({TEXT_GROUP: dict(text_params)} if text_params else {}),
                              **({EMA_GROUP: ema.shadow} if ema is not None else {})},
                     {"losses": losses}, {"optimizer": optimizer.state_dict()}, generator)


def _install_tokens(components: DiffusionComponents, tokens: Sequence[str], words: Sequence[str],
                    settings: JointSettings, seed: int) -> ConceptTokens:
    """The class tokens, installed, their rows started from the category words (``seed`` + 3 spreads them)."""
    try:
        return ConceptTokens(components, tokens, words, settings.init_spread,
                             torch.Generator().manual_seed(seed + 3)).install()
    except LthashError as exc:
        raise LthashError(f"joint personalisation initialises each class token from its category word "
                          f"(config key 'generate.categories'): {exc}") from exc


def personalize_joint(base_dir: str | os.PathLike, split_path: str | os.PathLike, out_dir: str | os.PathLike,
                      generate_params: Mapping[str, Any], device: str = "cpu") -> Path:
    """Teach ``base_dir`` every class of the split's long-tail ``train`` group at once; write
    the joint concept folder ``out_dir`` (atomically) and return it."""
    from lthash.generate.concepts import write_joint_concepts
    from lthash.generate.personalize.runner import make_accelerator

    check_base_corpus(base_dir, split_path)
    params = generate_params["personalize"]
    settings = JointSettings.from_params(params["joint"])
    class_names, train, counts = _long_tail_set(split_path)
    accelerator = make_accelerator(device, params["mixed_precision"])
    components = load_components(base_dir, device=str(accelerator.device))
    if settings.text_time_embedding:
        components.unet = with_text_time_embedding(components.unet)
    words = prompt_words(components.info, class_names, generate_params["categories"],
                         generate_params.get("class_words"))
    tokens = [concept_token_name(c) for c in range(len(class_names))]
    seed = int(np.random.SeedSequence([int(generate_params["seed"]), METHOD.seed_id]).generate_state(1)[0])
    concepts = _install_tokens(components, tokens, words, settings, seed)
    prompts = [joint_prompt(settings.prompt, token, word) for token, word in zip(tokens, words)]
    out = Path(out_dir)
    partial = partial_folder(out)
    fingerprint = {"method": METHOD.name, "seed": seed, "settings": settings.__dict__, "params": params,
                   "counts": counts.tolist(), "words": words, "base": str(Path(base_dir).resolve())}
    checkpoints = CheckpointFolder(partial, fingerprint)
    checkpoints.prepare()
    data = JointData(components, train.images, train.labels, prompts, Augmentation.from_params(params["augment"]))
    replay_words: list[str] = []
    if settings.replay_batch:
        images, replay_labels, replay_words = _replay_set(base_dir, class_names, words, settings.replay_images, seed + 1)
        data.add_replay(components, images, replay_labels, replay_words)
    unet = components.unet
    optimizer, unet_params, text_params = _optimizer(components, concepts, settings, params["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    ema = (ExponentialMovingAverage(_trained_tensors(concepts, unet_params, text_params), settings.ema_decay)
           if settings.ema_decay > 0 else None)
    start, losses = _resume(checkpoints, concepts, unet_params, text_params, optimizer, generator, ema)
    began = time.perf_counter()
    unet.train()
    for step in range(start, settings.steps):
        factor = warmup_decay(step, settings.steps, settings.warmup_steps, "cosine")
        optimizer.param_groups[0]["lr"] = settings.lr * factor
        optimizer.param_groups[1]["lr"] = settings.token_lr * factor
        x0, ids, n = data.batch(components, settings, len(class_names), generator)
        instance, replay = _losses(components, x0, ids, n, generator, accelerator)
        accelerator.backward(instance + settings.replay_weight * replay)
        if params["max_grad_norm"]:
            torch.nn.utils.clip_grad_norm_(list(unet_params.values()) + list(text_params.values()) + [concepts.rows],
                                           params["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(step)
        losses.append([round(float(instance.detach()), 6), round(float(replay.detach()), 6)])
        done = step + 1
        if step % 100 == 0:
            log.info("joint step %d/%d: instance %.4f replay %.4f", done, settings.steps, *losses[-1])
        every = int(params["checkpoint_every"])
        if every and done % every == 0 and done < settings.steps:
            _save_checkpoint(checkpoints, done, concepts, unet_params, text_params, ema, losses, optimizer, generator)
    _freeze(components, concepts, ema)
    samples = _sample_grid(components, prompts, params["sample_grid"], seed + 17, partial / "samples" / "joint.png")
    tail = losses[-50:]
    record = {
        "method": METHOD.name, "seed": seed, "settings": settings.__dict__, "params": params,
        "base": str(base_dir), "base_kind": components.kind,
        "classes": [{"class_index": c, "class_name": class_names[c], "token": tokens[c], "category": words[c],
                     "prompt": prompts[c], "images": int(counts[c])} for c in range(len(class_names))],
        "replay": {"words": replay_words, "images_per_word": settings.replay_images} if replay_words else None,
        "steps": settings.steps, "resumed_from_step": start, "seconds": round(time.perf_counter() - began, 2),
        "final": {key: float(np.mean([t[i] for t in tail])) if tail else math.nan
                  for i, key in enumerate(("instance", "replay"))},
    }
    write_joint_concepts(out, record, {tokens[c]: concepts.rows[c] for c in range(len(tokens))},
                         unet, samples, losses, components.text_encoder if text_params else None)
    checkpoints.remove()
    concepts.remove()
    return out

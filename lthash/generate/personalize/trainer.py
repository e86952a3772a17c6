"""Trainer pieces shared by every personalisation method.

- :class:`ConceptToken`: the new [V] token. It is added to the tokenizer and its embedding row
  is a separate one-row parameter injected by a forward hook on the text encoder's token
  embedding, so training it touches no other row (the embedding table and the rest of the
  text encoder stay frozen, bit for bit).
- :func:`trainable_parameters`: the parameter set of a stage (``embedding``,
  ``cross_attention`` = every ``attn2`` q/k/v/out, ``unet``); everything else is frozen.
- :func:`denoising_loss`: eps-prediction (or v-prediction) MSE + prior-preservation MSE
  + the attention regulariser of eq. 1.
- :class:`StageTrainer`: runs one :class:`~lthash.generate.personalize.schedule.Stage` with
  AdamW (constant lr), gradient accumulation, mixed precision and several processes through
  accelerate, and checkpoints every N optimiser steps.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from lthash.errors import LthashError
from lthash.generate.attention import capture_cross_attention
from lthash.generate.models import DiffusionComponents, tokenize
from lthash.checkpointing import Checkpoint, CheckpointFolder
from lthash.generate.personalize.data import Augmentation, sample_batch
from lthash.generate.personalize.lora import merge_lora
from lthash.generate.personalize.schedule import Stage
from lthash.generate.regularizer import attention_regularizer
from lthash.runtime import memory_hint

log = logging.getLogger("lthash.personalize")

TOKEN_WEIGHT = "token_embedding"
UNET_PREFIX = "unet."
CROSS_ATTENTION_PARTS = ("attn2.to_q.", "attn2.to_k.", "attn2.to_v.", "attn2.to_out.")


def concept_token_name(class_index: int) -> str:
    """The placeholder token of a class, e.g. ``<v3>``."""
    return f"<v{class_index}>"


def concept_prompt(token: str, category: str) -> str:
    """AttnDreamBooth's training prompt: ``a photo of a [V] <category>``."""
    return f"a photo of a {token} {category}"


def add_token(components: DiffusionComponents, token: str) -> int:
    """Add ``token`` to the tokenizer (one token) and make sure the text encoder has a row for it."""
    tokenizer = components.tokenizer
    tokenizer.add_tokens([token])
    token_id = tokenizer.convert_tokens_to_ids(token)
    embeddings = components.text_encoder.get_input_embeddings()
    if token_id >= embeddings.weight.shape[0]:
        components.text_encoder.resize_token_embeddings(len(tokenizer))
    return int(token_id)


def category_token_id(components: DiffusionComponents, category: str) -> int:
    """First token of the category word (the reference matches the first when it splits)."""
    tokenizer = components.tokenizer
    ids = tokenizer(category, add_special_tokens=False).input_ids
    if not ids or ids[0] in (tokenizer.unk_token_id, tokenizer.eos_token_id):
        raise LthashError(f"category word {category!r} is unknown to the base model's tokenizer")
    return int(ids[0])


class EmbeddingHook(torch.nn.Module):
    """A module that rewrites the text encoder's token embedding output while installed
    (:meth:`install` registers :meth:`_inject` as a forward hook on ``self.embedding``)."""

    embedding: torch.nn.Module
    _handle: Any = None

    def _inject(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def install(self):
        if self._handle is None:
            self._handle = self.embedding.register_forward_hook(self._inject)
        return self

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class ConceptToken(EmbeddingHook):
    """The [V] token: its id, its category token, and its embedding row as a parameter.

    While installed (:meth:`install`), every occurrence of the token id in the text encoder's
    input gets ``row`` instead of the table's row: e(t) = row if t == [V] else E[t].
    """

    def __init__(self, components: DiffusionComponents, token: str, category: str,
                 init: torch.Tensor | None = None) -> None:
        super().__init__()
        self.token = token
        self.category = category
        self.token_id = add_token(components, token)
        self.category_id = category_token_id(components, category)
        self.embedding = components.text_encoder.get_input_embeddings()
        start = self.embedding.weight[self.category_id] if init is None else init
        self.row = torch.nn.Parameter(start.detach().clone().float().to(self.embedding.weight.device))

    def _inject(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        mask = (inputs[0] == self.token_id).unsqueeze(-1)
        return torch.where(mask, self.row.to(output.dtype), output)

    def write_back(self) -> None:
        """Store the learned row in the embedding table (for saving or plain sampling)."""
        with torch.no_grad():
            self.embedding.weight[self.token_id] = self.row.to(self.embedding.weight.dtype)

    def positions(self, components: DiffusionComponents, prompt: str) -> list[int]:
        """Prompt positions of [V] and of the category token that follows it."""
        ids = tokenize(components, [prompt])[0].tolist()
        if self.token_id not in ids:
            raise LthashError(f"prompt {prompt!r} does not contain the token {self.token}")
        v_pos = ids.index(self.token_id)
        if v_pos + 1 >= len(ids) or ids[v_pos + 1] != self.category_id:
            raise LthashError(f"prompt {prompt!r}: the category word {self.category!r} must follow {self.token}")
        return [v_pos, v_pos + 1]


def trainable_parameters(unet: torch.nn.Module, token: ConceptToken, trains: str, lora_rank: int = 0,
                         lora_generator: torch.Generator | None = None) -> dict[str, torch.nn.Parameter]:
    """Named parameters a stage trains; ``requires_grad`` is set on exactly those.

    With ``lora_rank`` r > 0 a UNet set (``cross_attention``, ``unet``) trains rank-r factors of
    its weights instead of the weights (:mod:`lthash.generate.personalize.lora`), installed here
    with A drawn from ``lora_generator`` unless the UNet has them already (a resumed stage)."""
    from lthash.generate.personalize.lora import add_lora, plain_name

    unet.requires_grad_(False)
    token.row.requires_grad_(False)
    if trains == "embedding":
        selected = {TOKEN_WEIGHT: token.row}
    elif trains == "cross_attention":
        selected = {UNET_PREFIX + name: p for name, p in unet.named_parameters()
                    if any(part in plain_name(name) for part in CROSS_ATTENTION_PARTS)}
    elif trains == "unet":
        selected = {UNET_PREFIX + name: p for name, p in unet.named_parameters()}
    else:
        raise ValueError(f"unknown parameter set {trains!r}")
    if lora_rank and trains != "embedding":
        weights = [plain_name(name[len(UNET_PREFIX):]) for name in selected]
        if lora_generator is None:
            raise ValueError("a LoRA stage needs the generator its factors start from")
        selected = {UNET_PREFIX + name: p for name, p in add_lora(unet, weights, lora_rank, lora_generator).items()}
    if not selected:
        raise LthashError(f"the model has no parameters of set {trains!r}")
    for parameter in selected.values():
        parameter.requires_grad_(True)
    return selected


def changed_weights(unet: torch.nn.Module, token: ConceptToken, stages_so_far: list[Stage]) -> dict[str, torch.Tensor]:
    """Every tensor the stages so far may have changed (always the [V] row; a LoRA stage's
    frozen weights and factors while it runs)."""
    from lthash.generate.personalize.lora import plain_name

    weights = {TOKEN_WEIGHT: token.row.detach()}
    trained = {stage.trains for stage in stages_so_far}
    for name, p in unet.named_parameters():
        if "unet" in trained or ("cross_attention" in trained
                                 and any(part in plain_name(name) for part in CROSS_ATTENTION_PARTS)):
            weights[UNET_PREFIX + name] = p.detach()
    return weights


def load_weights(unet: torch.nn.Module, token: ConceptToken, weights: Mapping[str, torch.Tensor]) -> None:
    """Copy checkpointed tensors back into the row and the UNet; a checkpoint taken inside a LoRA
    stage first gets its factors installed on the weights it names."""
    from lthash.generate.personalize.lora import add_lora, lora_rank_of, plain_name

    rank = lora_rank_of(weights)
    if rank:
        factored = {plain_name(name[len(UNET_PREFIX):]) for name in weights if name.endswith(".lora_a")}
        add_lora(unet, factored, rank, torch.Generator().manual_seed(0))
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            if name == TOKEN_WEIGHT:
                token.row.copy_(value)
            elif name.startswith(UNET_PREFIX) and name[len(UNET_PREFIX):] in params:
                params[name[len(UNET_PREFIX):]].copy_(value)
            else:
                raise LthashError(f"checkpoint holds an unknown tensor {name!r}")


def to_model_space(components: DiffusionComponents, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pixels in [-1, 1] -> what the UNet denoises (the pixels, or scaled VAE latents)."""
    vae = components.vae
    if vae is None:
        return pixels.to(components.device, components.dtype)
    with torch.no_grad():
        dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
        return dist.sample(generator=generator) * vae.config.scaling_factor


def noise_and_timesteps(components: DiffusionComponents, x0: torch.Tensor,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    timesteps = torch.randint(0, components.noise_scheduler.config.num_train_timesteps, (x0.shape[0],),
                              generator=generator).to(x0.device)
    return noise, timesteps


def prediction_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to predict: the noise for eps-prediction, v = sqrt(a) eps -
    sqrt(1-a) x0 for v-prediction (the scheduler's ``prediction_type``)."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(x0, noise, timesteps)
    return noise


def denoising_loss(components: DiffusionComponents, x0: torch.Tensor, context: torch.Tensor,
                   generator: torch.Generator, stage: Stage, store=None, prior_x0: torch.Tensor | None = None,
                   prior_context: torch.Tensor | None = None,
                   prior_generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """L = ||target - pred||^2 on the instances (+ prior_weight * the same on prior images)
    + L_reg (eq. 1) on the instances' attention maps.

    ``target`` is the noise for eps-prediction and v = sqrt(a) eps - sqrt(1-a) x0 for v-prediction.
    The prior images' noise and timesteps come from ``prior_generator``, so the instances'
    draws from ``generator`` are the same with and without prior preservation.
    """
    scheduler = components.noise_scheduler
    n = x0.shape[0]
    noise, timesteps = noise_and_timesteps(components, x0, generator)
    if prior_x0 is not None:
        prior_noise, prior_timesteps = noise_and_timesteps(components, prior_x0, prior_generator)
        x0 = torch.cat([x0, prior_x0])
        context = torch.cat([context, prior_context])
        noise = torch.cat([noise, prior_noise])
        timesteps = torch.cat([timesteps, prior_timesteps])
    noisy = scheduler.add_noise(x0, noise, timesteps)
    target = prediction_target(scheduler, x0, noise, timesteps)
    if store is not None:
        store.reset()
    pred = components.unet(noisy, timesteps, context.to(noisy.dtype)).sample
    mse = torch.nn.functional.mse_loss(pred[:n].float(), target[:n].float())
    loss = mse
    parts = {"mse": float(mse.detach())}
    if prior_x0 is not None and stage.prior_weight:
        prior = torch.nn.functional.mse_loss(pred[n:].float(), target[n:].float())
        loss = loss + stage.prior_weight * prior
        parts["prior"] = float(prior.detach())
    if store is not None and stage.regularized:
        reg = attention_regularizer({k: v[:n] for k, v in store.maps.items()}, stage.lambda_mean, stage.lambda_var)
        loss = loss + reg
        parts["reg"] = float(reg.detach())
    return loss, parts


@dataclass(frozen=True)
class TrainingOptions:
    """Optimiser and engineering options common to every stage (keys of validated ``generate.personalize``)."""

    weight_decay: float
    max_grad_norm: float
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    checkpoint_every: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> "TrainingOptions":
        """From validated ``generate.personalize``; ``overrides`` replace single fields."""
        return cls(**{**{key: params[key] for key in cls.__dataclass_fields__}, **overrides})


@dataclass
class TrainingData:
    """Instance pixels, their prompt, and optional prior-preservation pixels + prompt.

    The prior batch of each micro-step draws from its own generator, seeded by
    (``prior_seed``, stage, step, micro-step): a resumed run draws the same, and the instances'
    draws do not depend on whether prior preservation is on.
    """

    pixels: torch.Tensor
    prompt: str
    augmentation: Augmentation
    prior_pixels: torch.Tensor | None = None
    prior_prompt: str | None = None
    prior_seed: int = 0

    def prior_generator(self, stage_index: int, step: int, micro: int) -> torch.Generator:
        state = np.random.SeedSequence([self.prior_seed, stage_index, step, micro]).generate_state(1)[0]
        return torch.Generator().manual_seed(int(state))


@dataclass
class StageTrainer:
    """Runs stages of one personalisation, checkpointing through ``checkpoints``.

    ``generator`` drives every random draw of training (batches, augmentation, noise,
    timesteps), so its saved state makes a resumed run identical to an uninterrupted one.
    """

    components: DiffusionComponents
    token: ConceptToken
    data: TrainingData
    options: TrainingOptions
    accelerator: Any
    generator: torch.Generator
    checkpoints: CheckpointFolder
    stages: list[Stage]
    stage_log: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    on_step: Callable[[int, int, dict[str, float]], None] | None = None
    method: str = "<method>"

    def memory_settings(self, stage: Stage) -> list[str]:
        """The config keys that size a stage's memory, with their values (for :func:`memory_hint`)."""
        key = "generate.personalize"
        precision = "no" if self.accelerator.mixed_precision in (None, "no") else self.accelerator.mixed_precision
        return [f"{key}.{self.method}.stages.{stage.name}.batch_size (now {stage.batch_size}): lower it and raise "
                f"{key}.gradient_accumulation_steps (now {self.options.gradient_accumulation_steps}) to keep the "
                "effective batch",
                f"{key}.gradient_checkpointing (now {str(self.options.gradient_checkpointing).lower()}): true",
                f"{key}.mixed_precision (now {precision}): fp16 or bf16"]

    def _encode(self, prompt: str, grad: bool) -> torch.Tensor:
        ids = tokenize(self.components, [prompt])
        with torch.set_grad_enabled(grad), self.accelerator.autocast():
            return self.components.text_encoder(ids)[0]

    def _batch(self, pixels: torch.Tensor, batch_size: int, augment: bool, generator: torch.Generator) -> torch.Tensor:
        index = sample_batch(pixels.shape[0], batch_size, generator)
        x = pixels[index]
        if augment:
            x = self.data.augmentation(x, generator)
        return to_model_space(self.components, x, generator)

    def run(self, stage_index: int, resume: Checkpoint | None = None) -> None:
        """Train stage ``stage_index`` from its start or from ``resume`` (same stage)."""
        stage = self.stages[stage_index]
        accelerator, unet = self.accelerator, self.components.unet
        lora_start = np.random.SeedSequence([self.seed, stage_index, 120]).generate_state(1)[0]
        params = trainable_parameters(unet, self.token, stage.trains, stage.lora_rank,
                                      torch.Generator().manual_seed(int(lora_start)))
        if self.options.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        optimizer = torch.optim.AdamW(params.values(), lr=stage.lr, weight_decay=self.options.weight_decay)
        optimizer = accelerator.prepare(optimizer)
        start = 0
        resumed_stage, resumed_step = resume.position if resume is not None else (None, 0)
        if resumed_stage == stage_index and resumed_step > 0:
            optimizer.load_state_dict(resume.optimizers["optimizer"])
            if resume.state["scaler"] is not None and accelerator.scaler is not None:
                accelerator.scaler.load_state_dict(resume.state["scaler"])
            start = resumed_step
        positions = self.token.positions(self.components, self.data.prompt)
        embedding_stage = stage.trains == "embedding"
        fixed_context = None if embedding_stage else self._encode(self.data.prompt, grad=False).detach()
        prior_context = None
        if self.data.prior_pixels is not None and stage.prior_weight:
            prior_context = self._encode(self.data.prior_prompt, grad=False).detach()
        accum = self.options.gradient_accumulation_steps
        history: list[dict[str, float]] = []
        began = time.perf_counter()
        with memory_hint(f"personalisation stage {stage.name!r}", self.memory_settings(stage)), \
                capture_cross_attention(unet, positions) as store:
            store.enabled = stage.regularized
            for step in tqdm(range(start, stage.steps), initial=start, total=stage.steps, desc=stage.name,
                             disable=not accelerator.is_main_process, mininterval=5):
                for micro in range(accum):
                    context = fixed_context if fixed_context is not None else self._encode(self.data.prompt, grad=True)
                    x0 = self._batch(self.data.pixels, stage.batch_size, augment=True, generator=self.generator)
                    prior_x0 = pc = pg = None
                    if prior_context is not None:
                        pg = self.data.prior_generator(stage_index, step, micro)
                        prior_x0 = self._batch(self.data.prior_pixels, stage.batch_size, augment=False, generator=pg)
                        pc = prior_context.expand(prior_x0.shape[0], -1, -1)
                    with accelerator.autocast():
                        loss, parts = denoising_loss(
                            self.components, x0, context.expand(x0.shape[0], -1, -1), self.generator, stage,
                            store if stage.regularized else None, prior_x0, pc, pg)
                    accelerator.backward(loss / accum)
                    history.append(parts)
                self._sync_gradients(params.values())
                if self.options.max_grad_norm:
                    accelerator.clip_grad_norm_(list(params.values()), self.options.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if self.on_step is not None:
                    self.on_step(stage_index, step + 1, parts)
                done = step + 1
                if self.options.checkpoint_every and done % self.options.checkpoint_every == 0 and done < stage.steps:
                    self.save(stage_index, done, optimizer)
        store.reset()
        del optimizer
        if stage.lora_rank:
            merge_lora(unet)  # the stage's factors become the weights; the UNet is plain again
        accelerator.free_memory()  # drop this stage's optimiser state before the next stage
        if self.options.gradient_checkpointing:
            unet.disable_gradient_checkpointing()
        unet.eval()
        unet.requires_grad_(False)
        self.token.row.requires_grad_(False)
        tail = history[-10 * accum:]
        entry = stage.as_dict() | {
            "seconds": round(time.perf_counter() - began, 2),
            "resumed_from_step": start,
            "final": {key: sum(h.get(key, 0.0) for h in tail) / max(len(tail), 1) for key in (tail[-1] if tail else {})},
        }
        self.stage_log.append(entry)
        log.info("stage %s done: %s", stage.name, entry)

    def _sync_gradients(self, params, bucket: int = 2 ** 24) -> None:
        """Average gradients over processes in flat buckets of ~``bucket`` values (no-op for one process)."""
        if self.accelerator.num_processes == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        while grads:
            group, size = [], 0
            while grads and (not group or size + grads[0].numel() <= bucket):
                size += grads[0].numel()
                group.append(grads.pop(0))
            flat = self.accelerator.reduce(torch.cat([g.reshape(-1) for g in group]), reduction="mean")
            offset = 0
            for g in group:
                g.copy_(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()

    def save(self, next_stage_or_current: int, step: int, optimizer=None) -> None:
        """Checkpoint the run: at ``step`` of stage ``next_stage_or_current`` (step 0 = its start)."""
        stages_so_far = self.stages[: next_stage_or_current + (1 if step > 0 else 0)]
        scaler = self.accelerator.scaler.state_dict() if self.accelerator.scaler is not None else None
        self.checkpoints.save(
            [next_stage_or_current, step], {"weights": changed_weights(self.components.unet, self.token, stages_so_far)},
            {"scaler": scaler, "stage_log": self.stage_log},
            {"optimizer": optimizer.state_dict()} if optimizer is not None else None, self.generator)

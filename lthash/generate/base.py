"""Base training: the tiny text-to-image model learned from scratch with class-agnostic prompts.

Every training image is paired with "a photo of a <super-category>" (never its class name)
and, with probability ``cfg_dropout``, the empty prompt for classifier-free guidance. With
``balance_prompts`` batches draw every prompt equally often (a super-category made only of
tail classes, such as Fashion-MNIST's "accessory" = Bag, is otherwise barely learned). The UNet
and (for the tiny model) the text encoder are trained jointly with AdamW (warm-up, then cosine
decay); an exponential moving average of the weights is what gets saved.

Checkpoints (:class:`lthash.checkpointing.CheckpointFolder`, ``ckpt-<steps>/`` in the
partial folder) hold the weights, the EMA, the optimiser state, the RNG states and the loss
history; a resumed run replays the same batches and ends with bit-identical weights on the
same machine and thread count.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lthash.checkpointing import CheckpointFolder, partial_folder
from lthash.errors import LthashError
from lthash.generate.ema import ExponentialMovingAverage
from lthash.generate.models import DiffusionComponents, encode_images, tokenize
from lthash.io import canonical_json
from lthash.schedules import warmup_decay

log = logging.getLogger("lthash.base")

@dataclass
class BaseTrainingConfig:
    """Optimisation settings of the base stage: the keys of validated ``generate.base`` (their
    defaults live in the schema), the run's seed, and whether the text encoder trains (None: the
    tiny model's does, a Stable Diffusion one's does not; not a config key)."""

    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float
    ema_decay: float
    cfg_dropout: float
    balance_prompts: bool
    checkpoint_every: int
    seed: int
    train_text_encoder: bool | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any], seed: int, **overrides: Any) -> "BaseTrainingConfig":
        """From validated ``generate.base``; ``overrides`` replace single fields (benchmarks, tests)."""
        keys = set(cls.__dataclass_fields__) - {"seed", "train_text_encoder"}
        return cls(**{**{key: params[key] for key in keys}, "seed": seed, **overrides})


@dataclass
class TrainingState:
    """What a checkpoint restores besides tensors."""

    step: int = 0
    losses: list[float] | None = None
    seconds: float = 0.0


def trainable_parameters(components: DiffusionComponents, train_text_encoder: bool) -> dict[str, torch.nn.Parameter]:
    """Named parameters trained by the base stage (``unet.*`` and optionally ``text_encoder.*``)."""
    params = {f"unet.{name}": p for name, p in components.unet.named_parameters()}
    if train_text_encoder:
        params.update({f"text_encoder.{name}": p for name, p in components.text_encoder.named_parameters()})
    return params


# --- training ----------------------------------------------------------------------------


def _prompt_table(components: DiffusionComponents, prompts: Sequence[str], balance: bool):
    """Token ids of the distinct prompts (sorted) and of the empty prompt (last), each image's
    row among them, and each image's sampling weight (1 / its prompt's count when ``balance``)."""
    unique = sorted(set(prompts)) + [""]
    prompt_ids = tokenize(components, unique).cpu()
    prompt_index = torch.tensor([unique.index(p) for p in prompts])
    counts = torch.bincount(prompt_index, minlength=len(unique)).double()
    weights = 1.0 / counts[prompt_index] if balance else torch.ones(len(prompts), dtype=torch.double)
    return prompt_ids, prompt_index, weights


def _resume_base(folder: CheckpointFolder, params: dict[str, torch.nn.Parameter], ema: ExponentialMovingAverage,
                 optimizer: torch.optim.Optimizer, generator: torch.Generator) -> TrainingState:
    """Prepare the checkpoint folder; restore its newest checkpoint (weights, EMA, optimizer,
    random state) into the run and return its training state, or a fresh one."""
    folder.prepare()
    resume = folder.latest()
    if resume is None:
        return TrainingState(losses=[])
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(resume.tensors["param"][name])
            ema.shadow[name].copy_(resume.tensors["ema"][name])
    optimizer.load_state_dict(resume.optimizers["adamw"])
    resume.restore_rng(generator)
    state = TrainingState(**resume.state)
    log.info("resuming base training from %s (step %d)", resume.path, state.step)
    return state


def train_base(
    components: DiffusionComponents,
    images: np.ndarray,
    prompts: Sequence[str],
    config: BaseTrainingConfig,
    partial_dir: str | os.PathLike | None = None,
    fingerprint: str = "",
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainingState:
    """Train ``components`` in place on ``images`` (uint8 NHWC) paired with ``prompts``.

    At the end the EMA weights are copied into the modules. With ``partial_dir`` the run
    checkpoints every ``checkpoint_every`` steps and resumes from the newest checkpoint.
    """
    from tqdm.auto import tqdm

    if len(images) == 0:
        raise LthashError("base training needs at least one training image (group 'train' is empty)")
    if len(images) != len(prompts):
        raise ValueError("one prompt per image")
    train_text = components.kind == "tiny" if config.train_text_encoder is None else config.train_text_encoder
    device = components.device
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        data = torch.cat([encode_images(components, images[i:i + 256], sample=False)
                          for i in range(0, len(images), 256)]).float().cpu()
    prompt_ids, prompt_index, weights = _prompt_table(components, prompts, config.balance_prompts)
    empty = len(prompt_ids) - 1

    components.unet.train().requires_grad_(True)
    components.text_encoder.train(train_text).requires_grad_(train_text)
    if components.vae is not None:
        components.vae.requires_grad_(False)
    params = trainable_parameters(components, train_text)
    optimizer = torch.optim.AdamW(list(params.values()), lr=config.lr,
                                  weight_decay=config.weight_decay)
    ema = ExponentialMovingAverage(params, config.ema_decay)
    folder = CheckpointFolder(partial_dir, fingerprint) if partial_dir else None
    state = _resume_base(folder, params, ema, optimizer, generator) if folder is not None else TrainingState(losses=[])
    scheduler = components.noise_scheduler
    timesteps_total = scheduler.config.num_train_timesteps
    bar = tqdm(total=config.steps, initial=state.step, desc="base", disable=not progress, mininterval=5)
    started = time.perf_counter() - state.seconds
    while state.step < config.steps:
        step = state.step
        batch = torch.multinomial(weights, config.batch_size, replacement=True, generator=generator)
        x0 = data[batch]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(timesteps_total, (config.batch_size,), generator=generator)
        drop = torch.rand(config.batch_size, generator=generator) < config.cfg_dropout
        ids = prompt_ids[torch.where(drop, torch.full_like(batch, empty), prompt_index[batch])]
        noisy = scheduler.add_noise(x0, noise, t)
        target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
        for group in optimizer.param_groups:
            group["lr"] = warmup_decay(step, config.steps, config.warmup_steps, peak=config.lr)
        hidden = components.text_encoder(ids.to(device))[0]
        pred = components.unet(noisy.to(device, components.dtype), t.to(device), encoder_hidden_states=hidden).sample
        loss = torch.nn.functional.mse_loss(pred.float(), target.to(device).float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimizer.step()
        ema.update(step)
        state.step += 1
        state.losses.append(float(loss.detach()))
        state.seconds = time.perf_counter() - started
        bar.update(1)
        if on_step is not None:
            on_step(state.step, state.losses[-1])
        if folder is not None and config.checkpoint_every and state.step % config.checkpoint_every == 0 \
                and state.step < config.steps:
            folder.save([state.step], {"param": params, "ema": ema.shadow}, asdict(state),
                        {"adamw": optimizer.state_dict()}, generator)
    bar.close()
    ema.copy_to_parameters()
    components.unet.eval().requires_grad_(False)
    components.text_encoder.eval().requires_grad_(False)
    return state



# --- the stage ---------------------------------------------------------------------------


def model_image_size(height: int, width: int, levels: int, requested: int | None) -> int:
    """The tiny model's square resolution: ``requested``, else the split's size rounded up."""
    factor = 2 ** (levels - 1)
    size = requested or max(height, width)
    return int(math.ceil(size / factor) * factor)


def split_fingerprint(images: np.ndarray, index: np.ndarray) -> str:
    """Identity of the training data, so a checkpoint of another split is never resumed."""
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(index).tobytes())
    digest.update(repr(images.shape).encode())
    digest.update(np.ascontiguousarray(images[:: max(1, len(images) // 64)]).tobytes())
    return digest.hexdigest()[:16]


def write_loss_curve(folder: Path, losses: Sequence[float], config: BaseTrainingConfig) -> None:
    """loss.csv (step, loss, lr) and loss.png (raw and smoothed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["step,loss,lr"] + [f"{i + 1},{loss:.6f},{warmup_decay(i, config.steps, config.warmup_steps, peak=config.lr):.6g}"
                                          for i, loss in enumerate(losses)]
    (folder / "loss.csv").write_text("\n".join(rows) + "\n")
    values = np.asarray(losses)
    window = max(1, len(values) // 50)
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(1, len(values) + 1), values, alpha=0.3, lw=0.8, label="loss")
    ax.plot(np.arange(window, len(values) + 1), smooth, lw=1.5, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("denoising MSE")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "loss.png", dpi=100)
    plt.close(fig)


def sample_grid(components: DiffusionComponents, words: Sequence[str], per_word: int, seed: int,
                size: tuple[int, int, int]) -> np.ndarray:
    """One row per super-category of samples of "a photo of a <word>" (uint8 grid image)."""
    from lthash.generate.sampler import SamplerConfig, generate
    from lthash.generate.prompts import category_prompt

    prompts = [category_prompt(word) for word in words for _ in range(per_word)]
    images = generate(components, prompts, torch.Generator().manual_seed(seed),
                      SamplerConfig.for_model(components), size=size)
    height, width, channels = size
    rows = images.reshape(len(words), per_word, height, width, channels)
    return rows.transpose(0, 2, 1, 3, 4).reshape(len(words) * height, per_word * width, channels)


def save_png(path: str | os.PathLike, image: np.ndarray, scale: int = 2) -> None:
    """Write a uint8 H x W x C image as PNG (nearest-neighbour upscaled), atomically."""
    from PIL import Image

    from lthash.io import atomic_path

    picture = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    with atomic_path(path, suffix=".png") as tmp:
        picture.save(tmp, format="PNG")


def run_base(split_path: str | os.PathLike, out: str | os.PathLike, params: dict[str, Any],
             device: str = "cpu", samples_png: str | os.PathLike | None = None,
             progress: bool = True) -> dict[str, Any]:
    """The ``lthash base`` stage: train the tiny model on its corpus (:mod:`lthash.generate.corpus`).

    ``params`` is the validated ``generate`` section. Writes the model folder ``out``
    (diffusers format plus loss.csv, loss.png, samples.png, corpus.json and base.json) atomically.
    """
    from lthash.generate.corpus import caption_words, load_corpus, write_corpus
    from lthash.generate.models import TinyModelConfig, build_tiny_components, save_components
    from lthash.generate.prompts import category_prompt
    from lthash.io import read_attrs

    base = params["base"]
    if base["model"] != "tiny":
        raise LthashError(f"config key 'generate.base.model' is {base['model']!r}: the base stage trains only "
                          f"the tiny model; a Stable Diffusion folder is used as it is")
    out = Path(out)
    class_names = list(read_attrs(split_path)["class_names"])
    train = load_corpus(split_path, base["corpus"])
    if train.labels.ndim != 1:
        raise LthashError("the base stage needs single-label classes: its corpus has one-hot labels")
    categories = caption_words(class_names, base["captions"], params["categories"], params.get("class_words"))
    words = sorted(set(categories))
    arch = TinyModelConfig.from_dict(base["architecture"])
    longest = max(words, key=lambda word: len(word.split()))
    if len(category_prompt(f"<v0> {longest}").split()) + 2 > arch.max_length:  # + start and end tokens
        raise LthashError(f"the prompt words {longest!r} make personalisation prompts longer than "
                          f"config key 'generate.base.architecture.max_length' ({arch.max_length} tokens): "
                          f"raise it, or give shorter words in 'generate.class_words'")
    height, width, channels = train.images.shape[1:]
    size = model_image_size(height, width, len(arch.block_out_channels), base["image_size"])
    seed = int(params["seed"])
    components = build_tiny_components(words, size, channels, seed, arch).to(device)
    config = BaseTrainingConfig.from_params(base, seed=seed)
    fingerprint = canonical_json({"base": base, "categories": categories, "seed": seed,
                                  "data": split_fingerprint(train.images, train.index)})
    prompts = [category_prompt(categories[label]) for label in train.labels]
    partial = partial_folder(out)
    cpu_started = time.process_time()
    state = train_base(components, train.images, prompts, config, partial, fingerprint, progress)
    grid = sample_grid(components, words, base["samples_per_category"], seed, (height, width, channels))
    report = {
        "steps": state.step, "seconds": round(state.seconds, 1),
        "cpu_seconds_this_process": round(time.process_time() - cpu_started, 1),
        "final_loss": float(np.mean(state.losses[-50:])), "train_images": int(len(train.images)),
        "corpus": {key: value for key, value in train.record.items() if key != "split_params"},
        "categories": dict(zip(class_names, categories)), "prompts": sorted(set(prompts)),
        "model_image_size": size, "image_shape": [height, width, channels],
        "unet_parameters": sum(p.numel() for p in components.unet.parameters()),
        "text_encoder_parameters": sum(p.numel() for p in components.text_encoder.parameters()),
        "params": params,
    }

    def extras(folder: Path) -> None:
        write_loss_curve(folder, state.losses, config)
        save_png(folder / "samples.png", grid)
        write_corpus(folder, train)
        (folder / "base.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    components.info["categories"] = dict(zip(class_names, categories))
    save_components(components, out, extras)
    if samples_png is not None:
        save_png(samples_png, grid)
    shutil.rmtree(partial, ignore_errors=True)
    log.info("base model written to %s: %d steps in %.0f s, final loss %.4f", out, state.step,
             state.seconds, report["final_loss"])
    return report

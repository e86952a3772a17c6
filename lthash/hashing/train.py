"""``lthash train``: fit one hash model (method x backbone x bits) and write its run folder.

RUN_DIR/ model.safetensors (weights + metadata), history.csv, curves.png, run.json. Deep
methods checkpoint every epoch into RUN_DIR.partial/ and resume from there after a kill to
the same final weights; the finished folder is written beside RUN_DIR and renamed into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from lthash.checkpointing import CheckpointFolder, partial_folder
from lthash.errors import LthashError
from lthash.provenance import code_version
from lthash.hashing.curves import plot_curves, write_history
from lthash.hashing.data import (TrainingSet, augment, carve_validation, epoch_batches, load_training_set,
                                 ordered_batches, to_float)
from lthash.hashing.losses.synthetic import SyntheticLoss, mixed_batch_loss
from lthash.hashing.methods import HashMethod, check_balance, get_method
from lthash.hashing.metrics import hamming_map
from lthash.hashing.model import MODEL_FILE, build_model, init_from_run, job_choice, model_metadata
from lthash.io import atomic_dir, canonical_json, save_safetensors, write_json
from lthash.runtime import cpu_capability, seed_everything
from lthash.schedules import warmup_decay

log = logging.getLogger("lthash.hashing")
VALIDATION_DATABASE_MAX = 5000
EVAL_BATCH = 256


def effective_train(params: Mapping[str, Any], method: str, mode: str, init: str | None) -> dict[str, Any]:
    """``train``, then ``method_train[method]``, then ``pretrain`` (synthetic-only runs) or
    ``finetune`` (runs started with --init) overrides."""
    train = dict(params["train"])
    for name in params["method_train"]:
        get_method(name, "hashing.method_train")
    train.update(params["method_train"].get(method, {}))
    if mode == "synthetic":
        train.update(params["pretrain"])
    if init:
        train.update(params["finetune"])
    if train["select"] == "best" and train["validation_fraction"] <= 0:
        raise LthashError("config key 'hashing.train.select' is 'best' but hashing.train.validation_fraction is 0: "
                          "model selection needs a validation split carved from the training data")
    if train["balance"] == "logit_adjusted":
        check_balance([method], "hashing.train.balance")
    return train


def synthetic_rule(params: Mapping[str, Any], method: str, mode: str) -> SyntheticLoss:
    """How a ``mix`` run weights its synthetic images (``hashing.mix``); other modes train plainly."""
    if mode != "mix":
        return SyntheticLoss()
    rule = SyntheticLoss.from_mix(params["mix"])
    if rule.label_smoothing:
        check_balance([method], "hashing.mix.synthetic_label_smoothing", f"is {rule.label_smoothing}")
    return rule


def make_optimizer(model: HashMethod, train: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Two parameter groups: backbone at lr x backbone_lr_scale, head at lr (initial_lr keeps the base)."""
    lr, wd = float(train["lr"]), float(train["weight_decay"])
    groups = []
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    head = model.head_parameters()
    if backbone and train["backbone_lr_scale"] > 0:
        groups.append({"params": backbone, "lr": lr * train["backbone_lr_scale"], "initial_lr": lr * train["backbone_lr_scale"]})
    elif backbone:
        for p in backbone:
            p.requires_grad_(False)
    groups.append({"params": head, "lr": lr, "initial_lr": lr})
    name = train["optimizer"]
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, weight_decay=wd)
    return torch.optim.SGD(groups, lr=lr, weight_decay=wd, momentum=float(train["momentum"]))


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast in bf16/fp16 (``hashing.mixed_precision``) on the run's device type; a no-op for "no"."""
    if precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


@torch.no_grad()
def encode_images(model: HashMethod, images: np.ndarray, device: str, precision: str = "no",
                  batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Real-valued codes (float32 N x bits) of uint8 images, in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        with autocast(device, precision):
            out.append(model.encode(to_float(images[start: start + batch_size], device)).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, model.bits), np.float32)


def validation_map(model: HashMethod, train_set: TrainingSet, val_set: TrainingSet, device: str,
                   precision: str, seed: int) -> float:
    """mAP of validation images against (at most 5000 of) the training images."""
    db_index = np.arange(len(train_set))
    if len(db_index) > VALIDATION_DATABASE_MAX:
        db_index = np.sort(np.random.default_rng([seed, 404]).choice(len(db_index), VALIDATION_DATABASE_MAX, replace=False))
    database = encode_images(model, train_set.images[db_index], device, precision)
    query = encode_images(model, val_set.images, device, precision)
    return hamming_map(query, database, val_set.labels, train_set.labels[db_index])


def model_is_trainable(method: str) -> bool:
    return get_method(method).trainable


def file_fingerprint(paths: Sequence[str | Path]) -> list[list[Any]]:
    return [[str(Path(p).resolve()), Path(p).stat().st_size if Path(p).exists() else None] for p in paths]


def run_identity(tags: Mapping[str, str] | None, method: str, backbone: str, bits: int,
                 seed: int | None = None) -> dict[str, Any]:
    """The run's identity for run.json: the workflow's tags (arm, generator, synthesis; "" = not
    applicable, stored as None) with the job's method, backbone, bits and, when the workflow
    tags it, seed (``hashing.seed``), which a tag may not contradict."""
    identity: dict[str, Any] = {key: (value if value != "" else None) for key, value in (tags or {}).items()}
    fields = [("method", method), ("backbone", backbone), ("bits", bits)]
    if seed is not None and "seed" in identity:
        fields.append(("seed", seed))
    for key, value in fields:
        if key in identity and identity[key] is not None and str(identity[key]) != str(value):
            raise LthashError(f"--tag {key}={identity[key]} contradicts the params' hashing.{key} {value}")
        identity[key] = value
    return identity


def run_training(split: str | Path, group: str, shards: Sequence[str | Path], mode: str, init: str | None,
                 out: str | Path, params: Mapping[str, Any], device: str, threads: int | None = None,
                 tags: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Train (or fit) one model and write RUN_DIR; returns the run record (run.json)."""
    out = Path(out)
    method, backbone, bits = job_choice(params)
    seed = int(params["seed"])
    identity = run_identity(tags, method, backbone, bits, seed)
    train = effective_train(params, method, mode, init)
    rule = synthetic_rule(params, method, mode)
    if init and not (Path(init) / MODEL_FILE).exists():
        raise LthashError(f"--init {init}: no {MODEL_FILE} there (is the run finished?)")
    seed_everything(seed)
    data = load_training_set(split, group, mode, shards, params["mix"], seed)
    if not len(data):
        raise LthashError(f"no training images in {split}/{group} (mode {mode})")
    train_set, val_set = carve_validation(data, float(train["validation_fraction"]), seed)
    counts = train_set.counts()
    if (counts == 0).any():
        log.warning("classes with no training image: %s", [data.class_names[i] for i in np.flatnonzero(counts == 0)])
    if not model_is_trainable(method) and params["shallow"]["features"] == "backbone" \
            and not params["pretrained"].get(backbone) and not init:
        raise LthashError(f"config key 'hashing.shallow.features' is 'backbone' for {method}: name a weights file in "
                          f"hashing.pretrained.{backbone} or pass --init RUN_DIR of a run trained on the split")
    model = build_model(params, method, backbone, bits, data.num_classes, data.input_shape, counts, seed)
    init_info = init_from_run(model, init) if init else None
    if train["balance"] == "logit_adjusted":
        model.adjust_logits_by_prior(float(train["tau"]))
    record: dict[str, Any] = {
        "identity": identity,
        "method": method, "backbone": backbone, "bits": bits, "seed": seed, "mode": mode, "group": group,
        "split": str(split), "synthetic": [str(s) for s in shards], "init": str(init) if init else None,
        "init_info": init_info, "params": dict(params), "train": train, "device": device,
        "threads": threads or torch.get_num_threads(), "torch": torch.__version__,
        "cpu_capability": cpu_capability(), "code_version": code_version(),
        "num_classes": data.num_classes, "input_shape": list(data.input_shape),
        "train_counts": counts.tolist(), "validation_counts": val_set.counts().tolist() if val_set else None,
        "data": data.info,
    }
    started = time.time()
    if model.trainable:
        history, final_state, extra = _train_deep(model, train_set, val_set, train, params, device, out, seed,
                                                  _fingerprint(split, group, shards, mode, init, params, train), rule)
    else:
        history, final_state, extra = _fit_shallow(model, train_set, device, params["mixed_precision"])
    is_main = extra.pop("is_main", True)
    record.update(extra)
    record["seconds"] = round(time.time() - started, 3)
    if is_main:
        _write_run(out, model, final_state, history, record, backbone, data.input_shape, seed, params)
    return record


def _fingerprint(split, group, shards, mode, init, params, train) -> str:
    inputs = {"split": file_fingerprint([split]), "group": group, "shards": file_fingerprint(shards), "mode": mode,
              "init": file_fingerprint([Path(init) / MODEL_FILE]) if init else None, "params": params, "train": train}
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()


def _fit_shallow(model: HashMethod, train_set: TrainingSet, device: str, precision: str):
    model.to(device).eval()
    with torch.no_grad():
        feats = []
        for images, _ in ordered_batches(train_set.images, train_set.labels, EVAL_BATCH, device):
            with autocast(device, precision):
                feats.append(model.backbone(images).float().cpu())
    features = torch.cat(feats).numpy()
    started = time.time()
    stats = model.fit(features, train_set.labels)
    model.to(device)
    row = {"epoch": 1, "loss": stats.get("quantisation_error"), "lr": None, "val_map": None,
           "seconds": round(time.time() - started, 3), "images_per_second": None}
    return [row], model.state_dict(), {"fit": stats, "epochs_run": 0, "selected_epoch": None, "resumed_at_epochs": []}


def _accelerator(params: Mapping[str, Any], device: str):
    """The Accelerate handle and this process's (rank, world size), or (None, (0, 1)) when not distributed."""
    if params["distributed"] != "accelerate":
        return None, (0, 1)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=torch.device(device).type == "cpu")
    return accelerator, (accelerator.process_index, accelerator.num_processes)


def _run_summary(history: list[dict[str, Any]], epochs: int, selected: int | None, select: str,
                 best_val_map: float | None, resumed: list[int], is_main: bool) -> dict[str, Any]:
    """What the run record says of the training loop: epochs, selection, speed, final loss."""
    speeds = [row["images_per_second"] for row in history if row.get("images_per_second")]
    return {"epochs_run": epochs, "selected_epoch": selected, "select": select,
            "best_val_map": best_val_map, "resumed_at_epochs": resumed,
            "train_images_per_second": float(np.median(speeds)) if speeds else None,
            "final_loss": history[-1]["loss"] if history else None, "is_main": is_main}


def _schedule(train: Mapping[str, Any], n: int, batch_size: int, seed: int, shard: tuple[int, int],
              epochs: int) -> tuple[int, int, int, int]:
    """(steps per epoch, epochs, total steps, warmup steps); ``train.steps``, when set, sets the epochs."""
    steps_per_epoch = len(epoch_batches(n, batch_size, seed, 0, shard))
    if train.get("steps"):
        epochs = max(1, math.ceil(int(train["steps"]) / steps_per_epoch))
    return steps_per_epoch, epochs, max(steps_per_epoch * epochs, 1), int(train["warmup_epochs"]) * steps_per_epoch


def _cpu_copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in state.items()}


def _restore(restored, model: HashMethod, optimizer, scaler):
    """Load a checkpoint's model, optimizer, scaler and random state; returns the run's
    (start epoch, history, best score, best epoch, best state, epochs it resumed at)."""
    model.load_state_dict(restored.tensors["model"])
    optimizer.load_state_dict(restored.optimizers["optimizer"])
    state = restored.state
    start_epoch = restored.position[0]
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    restored.restore_rng()
    return (start_epoch, state["history"], state["best_score"], state["best_epoch"], restored.tensors.get("best"),
            state["resumed_at_epochs"] + [start_epoch])


def _train_step(model: HashMethod, wrapped, optimizer, scaler, accelerator, x: torch.Tensor, y: torch.Tensor,
                synthetic: torch.Tensor, rule: SyntheticLoss, train: Mapping[str, Any], device: str,
                precision: str) -> float:
    """One optimisation step on the batch (x, y) (synthetic images weighted by ``rule``, gradient
    scaling, optional clipping); returns its loss."""
    with autocast(device, precision):
        output = wrapped(x)
    loss = mixed_batch_loss(model, output, y, synthetic, rule)
    optimizer.zero_grad(set_to_none=True)
    if accelerator is not None:
        accelerator.backward(scaler.scale(loss))
    else:
        scaler.scale(loss).backward()
    if train["grad_clip"]:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), float(train["grad_clip"]))
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def _checkpoints(out: Path, fingerprint: str, train: Mapping[str, Any], shard: tuple[int, int], is_main: bool,
                 accelerator) -> CheckpointFolder:
    """The run's resumable checkpoint folder (``<out>.partial``), prepared: this process's shard
    ``shard[0]`` writes, the main process keeps ``train.keep_checkpoints``."""
    checkpoints = CheckpointFolder(partial_folder(out), fingerprint, keep=int(train["keep_checkpoints"]),
                                   process_index=shard[0], is_main_process=is_main,
                                   barrier=accelerator.wait_for_everyone if accelerator is not None else None)
    checkpoints.prepare()
    return checkpoints


def _train_deep(model: HashMethod, train_set: TrainingSet, val_set: TrainingSet | None, train: Mapping[str, Any],
                params: Mapping[str, Any], device: str, out: Path, seed: int, fingerprint: str, rule: SyntheticLoss):
    from tqdm import tqdm

    precision = params["mixed_precision"]
    model.to(device)
    optimizer = make_optimizer(model, train)
    epochs, batch_size = int(train["epochs"]), int(train["batch_size"])
    history: list[dict[str, Any]] = []
    best_state, best_score, best_epoch, start_epoch, resumed = None, -1.0, None, 0, []
    scaler = torch.amp.GradScaler(torch.device(device).type,
                                  enabled=precision == "fp16" and torch.device(device).type == "cuda")
    accelerator, shard = _accelerator(params, device)
    is_main = accelerator is None or accelerator.is_main_process
    checkpoints = _checkpoints(out, fingerprint, train, shard, is_main, accelerator)
    restored = checkpoints.latest()
    if restored is not None:
        start_epoch, history, best_score, best_epoch, best_state, resumed = _restore(restored, model, optimizer, scaler)
        log.info("resuming %s from %s (epoch %d of %d)", out, restored.path, start_epoch, epochs)
    wrapped = model
    if accelerator is not None:
        wrapped, optimizer = accelerator.prepare(model, optimizer)
        device = str(accelerator.device)

    balanced = train_set.labels if train["sampling"] == "class_balanced" else None
    replacement = (train_set.labels, train_set.synthetic, float(params["mix"]["replacement_probability"]))
    steps_per_epoch, epochs, total_steps, warmup = _schedule(train, len(train_set), batch_size, seed, shard, epochs)
    base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    images_all = torch.from_numpy(train_set.images)
    labels_all = torch.from_numpy(train_set.labels)
    synthetic_all = torch.from_numpy(train_set.synthetic)
    for epoch in range(start_epoch, epochs):
        tic = time.time()
        model.on_epoch_start(lambda: ordered_batches(train_set.images, train_set.labels, EVAL_BATCH, device))
        wrapped.train()
        generator = torch.Generator().manual_seed(int(np.random.default_rng([seed, epoch, 505]).integers(2**62)))
        batches = epoch_batches(len(train_set), batch_size, seed, epoch, shard, balanced, replacement)
        losses, seen = [], 0
        bar = tqdm(batches, desc=f"{model.name} epoch {epoch + 1}/{epochs}", file=sys.stderr, leave=False,
                   mininterval=2.0, disable=not is_main)
        for step, index in enumerate(bar):
            factor = warmup_decay(epoch * steps_per_epoch + step, total_steps, warmup, train["scheduler"])
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            x = to_float(images_all[index])
            if train["augment"]:
                x = augment(x, generator)
            losses.append(_train_step(model, wrapped, optimizer, scaler, accelerator, x.to(device),
                                      labels_all[index].to(device), synthetic_all[index].to(device), rule, train,
                                      device, precision))
            seen += len(index)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.close()
        seconds = time.time() - tic
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else None,
               "lr": optimizer.param_groups[-1]["lr"], "val_map": None, "seconds": round(seconds, 3),
               "images_per_second": round(seen / max(seconds, 1e-9), 1)}
        if val_set is not None and len(val_set):
            row["val_map"] = validation_map(model, train_set, val_set, device, precision, seed)
            if row["val_map"] > best_score:
                best_score, best_epoch, best_state = row["val_map"], epoch + 1, _cpu_copy(model.state_dict())
        history.append(row)
        log.info("%s epoch %d/%d loss %.4f%s (%.1f s)", model.name, epoch + 1, epochs, row["loss"] or float("nan"),
                 f" val mAP {row['val_map']:.4f}" if row["val_map"] is not None else "", seconds)
        state = {"history": history, "best_score": best_score, "best_epoch": best_epoch, "resumed_at_epochs": resumed,
                 "scaler": scaler.state_dict() if scaler.is_enabled() else None}
        keep_best = train["select"] == "best" and best_state is not None
        checkpoints.save([epoch + 1], {"model": model.state_dict(), **({"best": best_state} if keep_best else {})},
                         state, {"optimizer": optimizer.state_dict()})
    if train["select"] == "best" and best_state is not None:
        final_state, selected = best_state, best_epoch
    else:
        final_state, selected = model.state_dict(), epochs
    extra = _run_summary(history, epochs, selected, train["select"], best_score if best_epoch else None, resumed,
                         is_main)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return history, final_state, extra


def _write_run(out: Path, model: HashMethod, state: Mapping[str, torch.Tensor], history, record: dict[str, Any],
               backbone: str, input_shape, seed: int, params: Mapping[str, Any]) -> None:
    """Write the run folder through :func:`lthash.io.atomic_dir`; then drop the checkpoints."""
    with atomic_dir(out) as tmp:
        meta = model_metadata(model, backbone, input_shape, seed, params)
        save_safetensors(tmp / MODEL_FILE, {k: v.detach().cpu() for k, v in state.items()}, metadata=meta)
        write_history(tmp / "history.csv", history)
        plot_curves(tmp / "curves.png", history, f"{record['method']} / {backbone} / {record['bits']} bits ({record['mode']})")
        write_json(tmp / "run.json", record)
    shutil.rmtree(partial_folder(out), ignore_errors=True)

"""Every GPU stage of the paper's configuration at Stable Diffusion 1.5's true shapes, on CPU.

The model is a full-size RANDOM SD 1.5 folder (UNet 860 M, text encoder 123 M, VAE 84 M
parameters) written by :func:`lthash.generate.stable_diffusion.save_stable_diffusion` (``--write-model``,
about 4.3 GB; nothing is downloaded) and read through :func:`load_components`, the loader a real
checkpoint goes through. Each stage runs in a fresh subprocess (so its peak RSS is its own) through
the package's code paths: ``StageTrainer.run`` for each personalisation stage (512 px images,
64 x 64 latents, 77 tokens, gradient checkpointing on, the ``reference`` preset's stages with
``--steps`` steps at ``--batch`` images), ``sampler.generate`` for synthesis from noise and from
real images (s per UNet step of the guided batch, s per VAE decode), one training step of the
hashing model (OrthoHash on ResNet50 / ViT-B/16 at 224 px, random init, the paper's batch 64)
and encoding. ``resume`` kills a Textual Inversion ``personalize()`` after its first checkpoint
and checks that the rerun resumes from it.

Memory figures, per stage:

* ``peak RSS``: the subprocess's VmHWM (whole process: Python, torch, model, optimiser, activations);
  for ``resume``, the larger of the two ``lthash personalize`` processes'.
* ``act``: activation memory of one step, measured on CPU in fp32: the peak RSS during the
  last step (VmHWM reset through /proc/self/clear_refs after ``malloc_trim``) minus the RSS
  before it, minus the fp32 gradients of the trainable parameters (4 B each).
* ``fp16 GPU estimate`` (GB = 1e9 bytes), for CUDA with accelerate's fp16 autocast as lthash
  runs it (weights stay in the dtype they were loaded in, fp32)::

      GPU = 4 B x all parameters loaded (UNet + text encoder + VAE, fp32)
          + 14 B x trainable parameters (fp32 gradient 4 + AdamW m, v 8 + autocast's fp16 copy 2)
          + act / 2 x (GPU batch / CPU batch)       (fp16 activations; batch = the preset's)
          + 1 GB (CUDA context, cuDNN/cuBLAS workspaces, allocator slack)

  Synthesis and encoding train nothing (no gradient, no optimiser). Synthesis's activation term
  is the larger of its text encoding + VAE encoding + UNet part (rescaled to the batch) and its
  VAE decode (``act_fixed``, not rescaled: ``models.decode`` decodes one image per call). Hashing steps run at the
  paper's batch (64) on CPU, so their activation term is not rescaled. "fits" compares the
  estimate with 24 / 40 / 80 GB cards.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_true_shapes.py --write-model --model /tmp/sd15 --threads 1
    python benchmarks/bench_true_shapes.py --model /tmp/sd15 --stages adb_embedding,resume

Printed: one markdown table (README "Real-scale experiments") and, with ``--json``, the rows.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

GB = 1e9
SYNTHESIS_BATCH = 16  # workflow/configs/imagenette_if48.yaml generate.synthesis.batch_size
CATEGORY = "object"
# stage -> (kind, method, preset stage name, prior preservation)
PERSONALISE = {
    "adb_embedding": ("attndreambooth", "embedding", False),
    "adb_cross_attention": ("attndreambooth", "cross_attention", False),
    "adb_unet": ("attndreambooth", "unet", False),
    "dreambooth": ("dreambooth", "unet", False),
    "textual_inversion": ("textual_inversion", "embedding", False),
    "prior_preservation": ("dreambooth", "unet", True),
}
SYNTHESIS = ("synth_noise", "synth_img2img")
HASHING = ("train_resnet50", "train_vit_b_16", "encode_resnet50")
STAGES = (*PERSONALISE, *SYNTHESIS, *HASHING, "resume")  # the default run
GPU_CHECK_STAGES = (*STAGES, "synth_pipeline", "multi_gpu")  # benchmarks/gpu_check.sh
LABELS = {
    "adb_embedding": "AttnDreamBooth 1: embedding (+ reg.)",
    "adb_cross_attention": "AttnDreamBooth 2: cross-attention (+ reg.)",
    "adb_unet": "AttnDreamBooth 3: whole UNet (+ reg.)",
    "dreambooth": "DreamBooth: whole UNet",
    "textual_inversion": "Textual Inversion: embedding",
    "prior_preservation": "DreamBooth + prior preservation",
    "synth_noise": "synthesis from noise (guided)",
    "synth_img2img": "synthesis from real images (strength 0.5)",
    "train_resnet50": "hashing train step ResNet50",
    "train_vit_b_16": "hashing train step ViT-B/16",
    "encode_resnet50": "encoding ResNet50",
    "synth_pipeline": "synthesis: lthash against a plain diffusers pipeline",
    "resume": "resume after kill (Textual Inversion)",
    "multi_gpu": "DreamBooth step on every GPU (accelerate launch)",
}


# ---------------------------------------------------------------- memory measurement (child side)

class Memory:
    """Peak memory of this process and of single steps.

    CPU: VmHWM (reset through /proc/self/clear_refs after ``malloc_trim``) over the RSS before
    the step. CUDA: ``torch.cuda.max_memory_allocated`` (reset per step) over the allocated
    bytes before the step; ``peak`` is then the CUDA peak, not the host's.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.cuda = device.startswith("cuda")
        self.peak = 0
        self.step_peaks: list[int] = []
        self._before = 0
        self._libc = None if self.cuda else ctypes.CDLL("libc.so.6")

    @staticmethod
    def _status(key: str) -> int:
        text = Path("/proc/self/status").read_text()
        return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.M).group(1)) * 1024

    def _high(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated())
        return self._status("VmHWM")

    def mark(self) -> None:
        """Close the previous step (its peak over the memory before it) and open the next."""
        high = self._high()
        self.peak = max(self.peak, high)
        if self._before:
            self.step_peaks.append(high - self._before)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self._before = int(torch.cuda.memory_allocated())
        else:
            self._libc.malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self._before = self._status("VmRSS")

    def finish(self) -> int:
        self.peak = max(self.peak, self._high())
        return self.peak


def parameter_count(*modules) -> int:
    return int(sum(p.numel() for m in modules if m is not None for p in m.parameters()))


# ---------------------------------------------------------------- personalisation

def personalise_params(method: str, stage: str, steps: int, batch: int, prior: bool,
                       precision: str = "fp16") -> dict[str, Any]:
    """Validated ``generate.personalize`` of the paper's config (reference preset, checkpointing on)."""
    from lthash.config import validate_config

    section = {"stages": {stage: {"steps": steps, "batch_size": batch}}}
    if prior:
        section["prior_preservation"] = {"enabled": True, "source": "samples", "images": 4}
    generate = {"personalize": {"schedule": "reference", "mixed_precision": precision, "gradient_checkpointing": True,
                                "checkpoint_every": 0, method: section}}
    return validate_config({"dataset": {}, "generate": generate})["generate"]["personalize"]


def run_personalise(args, name: str, memory: Memory) -> dict[str, Any]:
    from lthash.checkpointing import CheckpointFolder
    from lthash.generate.models import images_to_pixels, load_components
    from lthash.generate.personalize.data import Augmentation
    from lthash.generate.personalize.runner import make_accelerator
    from lthash.generate.personalize.schedule import PRESETS, method_stages
    from lthash.generate.personalize.trainer import (ConceptToken, StageTrainer, TrainingData, TrainingOptions,
                                                     concept_prompt)

    method, stage_name, prior = PERSONALISE[name]
    preset_batch = next(s.batch_size for s in PRESETS["reference"][method] if s.name == stage_name)
    accelerator = make_accelerator(args.device, args.precision)
    components = load_components(args.model, device=str(accelerator.device))
    token = ConceptToken(components, "<v0>", CATEGORY).install()
    batch = args.batch or preset_batch
    params = personalise_params(method, stage_name, args.steps, batch, prior, args.precision)
    stages = method_stages(method, params, has_vae=True)
    index = next(i for i, s in enumerate(stages) if s.name == stage_name)
    rng = np.random.default_rng(0)
    size = components.image_size
    data = TrainingData(images_to_pixels(rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8), size, 3),
                        concept_prompt("<v0>", CATEGORY), Augmentation.from_params(params["augment"]))
    if prior:
        data.prior_pixels = images_to_pixels(rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8), size, 3)
        data.prior_prompt = f"a photo of a {CATEGORY}"
    marks: list[float] = []

    def on_step(_stage: int, _step: int, _parts: dict) -> None:
        marks.append(time.perf_counter())
        memory.mark()

    with tempfile.TemporaryDirectory() as tmp:
        trainer = StageTrainer(components, token, data, TrainingOptions.from_params(params), accelerator,
                               torch.Generator().manual_seed(0), CheckpointFolder(Path(tmp) / "p", {"bench": 1}),
                               stages, on_step=on_step)
        memory.mark()
        began = time.perf_counter()
        trainer.run(index)
    from lthash.generate.personalize.trainer import trainable_parameters

    trainable = sum(p.numel() for p in trainable_parameters(components.unet, token, stages[index].trains).values())
    step_times = np.diff([began] + marks)
    grads = 4 * trainable
    act = max(0, min(memory.step_peaks[1:] or memory.step_peaks) - grads)
    unet_batch = batch * (2 if prior else 1)
    return {"s_per_step": float(np.mean(step_times[1:] if len(step_times) > 1 else step_times)),
            "first_step_s": float(step_times[0]), "steps": len(step_times), "cpu_batch": unet_batch,
            "gpu_batch": preset_batch * (2 if prior else 1), "params": parameter_count(
                components.unet, components.text_encoder, components.vae), "trainable": trainable, "act": act,
            "note": f"batch {batch}{' + prior ' + str(batch) if prior else ''}, checkpointing"}


# ---------------------------------------------------------------- synthesis

def run_synthesis(args, name: str, memory: Memory) -> dict[str, Any]:
    from lthash.generate import models
    from lthash.generate.models import load_components
    from lthash.generate.sampler import SamplerConfig, generate

    components = load_components(args.model, device=args.device)
    sampler = SamplerConfig.for_model(components, {"steps": args.sampler_steps, "batch_size": args.images,
                                                   "mixed_precision": args.precision})
    prompts = [f"a photo of a {CATEGORY}"] * args.images
    init = None
    if name == "synth_img2img":
        size = components.image_size
        init = np.random.default_rng(0).integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)
    unet_times: list[float] = []
    decode_times: list[float] = []
    unet_forward = components.unet.forward

    def timed_unet(*a, **k):
        began = time.perf_counter()
        out = unet_forward(*a, **k)
        unet_times.append(time.perf_counter() - began)
        return out

    real_decode = models.decode

    def timed_decode(*a, **k):
        memory.mark()  # closes the encoding + UNet part
        began = time.perf_counter()
        out = real_decode(*a, **k)
        decode_times.append(time.perf_counter() - began)
        memory.mark()  # closes the VAE decode
        return out

    components.unet.forward = timed_unet
    import lthash.generate.sampler as sampler_module

    with torch.no_grad():  # page the mmapped weights in, so they count before the steps, not in them
        for module in (components.unet, components.text_encoder, components.vae):
            sum(float(p.float().sum()) for p in module.parameters())

    sampler_module.decode = timed_decode
    memory.mark()
    began = time.perf_counter()
    images = generate(components, prompts, torch.Generator().manual_seed(0), sampler, init_images=init, strength=0.5)
    total = time.perf_counter() - began
    assert images.shape == (args.images, components.image_size, components.image_size, 3), images.shape
    return {"s_per_step": float(np.mean(unet_times)), "steps": len(unet_times), "cpu_batch": 2 * args.images,
            "gpu_batch": 2 * SYNTHESIS_BATCH, "params": parameter_count(components.unet, components.text_encoder, components.vae),
            "trainable": 0, "act": max(0, memory.step_peaks[0]), "act_fixed": max(0, memory.step_peaks[1]),
            "note": (f"{args.images} images, {len(unet_times)} UNet steps (CFG batch {2 * args.images}), "
                     f"VAE decode {np.sum(decode_times) / args.images:.1f} s/image, {total:.0f} s total")}


# ---------------------------------------------------------------- hashing

def run_hashing(args, name: str, memory: Memory) -> dict[str, Any]:
    from lthash.config import validate_config
    from lthash.hashing.data import to_float
    from lthash.hashing.model import build_model
    from lthash.hashing.train import autocast, encode_images, make_optimizer

    backbone = name.split("_", 1)[1]
    params = validate_config({"dataset": {}, "hashing": {"image_size": args.hash_size,
                                                         "train": {"batch_size": args.hash_batch}}})["hashing"]
    batch, size = int(params["train"]["batch_size"]), args.hash_size
    model = build_model(params, "orthohash", backbone, 64, 10, (size, size, 3), np.full(10, 100), 0,
                        load_weights=False).to(args.device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    memory.mark()
    if name.startswith("encode"):
        began = time.perf_counter()
        encode_images(model, images, args.device, args.precision, batch_size=batch)
        seconds = time.perf_counter() - began
        memory.mark()
        return {"s_per_step": seconds, "steps": 1, "cpu_batch": batch, "gpu_batch": batch,
                "params": parameter_count(model), "trainable": 0, "act": memory.step_peaks[-1],
                "note": f"{batch} images per batch, {batch / seconds:.1f} images/s"}
    optimizer = make_optimizer(model, params["train"])
    model.train()
    x, y = to_float(images, args.device), torch.as_tensor(rng.integers(0, 10, batch)).to(args.device)
    times = []
    for _ in range(args.hash_steps):
        began = time.perf_counter()
        with autocast(args.device, args.precision):
            out = model(x)
        loss = model.loss(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        memory.mark()
        times.append(time.perf_counter() - began)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"s_per_step": float(np.mean(times[1:] or times)), "steps": len(times), "cpu_batch": batch,
            "gpu_batch": batch, "params": parameter_count(model), "trainable": trainable,
            "act": max(0, memory.step_peaks[-1] - 4 * trainable), "note": f"batch {batch}, OrthoHash 64 bits, Adam"}


# ---------------------------------------------------------------- synthesis against plain diffusers

def run_pipeline(args, name: str, memory: Memory) -> dict[str, Any]:
    """Images/s of lthash's sampler against a plain diffusers StableDiffusionPipeline loop on the same
    weights, scheduler (DPM-Solver multistep), steps, guidance and batch."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from lthash.generate.models import load_components
    from lthash.generate.sampler import SamplerConfig, generate

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.precision, torch.float32)
    batch = args.images
    prompts = [f"a photo of a {CATEGORY}"] * batch
    components = load_components(args.model, device=args.device)
    sampler = SamplerConfig.for_model(components, {"steps": args.sampler_steps, "batch_size": batch,
                                                   "mixed_precision": args.precision})
    generate(components, prompts, torch.Generator().manual_seed(0), sampler)  # warm-up
    began = time.perf_counter()
    generate(components, prompts, torch.Generator().manual_seed(1), sampler)
    ours = batch / (time.perf_counter() - began)
    del components
    pipe = StableDiffusionPipeline.from_pretrained(args.model, torch_dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False).to(args.device)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    run = dict(num_inference_steps=args.sampler_steps, guidance_scale=sampler.guidance, output_type="np")
    pipe(prompts, generator=torch.Generator().manual_seed(0), **run)
    began = time.perf_counter()
    pipe(prompts, generator=torch.Generator().manual_seed(1), **run)
    plain = batch / (time.perf_counter() - began)
    memory.mark()
    return {"s_per_step": None, "steps": args.sampler_steps, "cpu_batch": batch, "gpu_batch": None, "params": None,
            "trainable": None, "act": None,
            "note": f"lthash {ours:.3f} images/s, diffusers pipeline ({dtype}) {plain:.3f} images/s "
                    f"(ratio {ours / plain:.2f}; {batch} images, {args.sampler_steps} steps)"}


# ---------------------------------------------------------------- resume after a kill

def write_split(folder: Path, size: int) -> Path:
    """A one-class split of four random ``size`` px images (the concept's training images)."""
    from lthash.io import ImageSet, write_image_sets

    images = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    path = folder / "split.h5"
    write_image_sets(path, {"train": ImageSet(images, np.zeros(4, np.int64), np.arange(4))},
                     attrs={"class_names": [CATEGORY]})
    return path


def personalize_command(args, folder: Path, method: str, stage: str, batch: int, launcher: list[str]) -> list[str]:
    """``lthash personalize`` of ``method`` (3 steps, a checkpoint after each) on :func:`write_split`'s split."""
    params = {"generate": {"personalize": {
        "schedule": "reference", "gradient_checkpointing": True, "checkpoint_every": 1,
        "mixed_precision": args.precision, "sample_grid": {"images": 0},
        method: {"stages": {stage: {"steps": 3, "batch_size": batch}}}}}}
    return launcher + ["-m", "lthash.cli", "personalize", "--base", args.model, "--split",
                       str(write_split(folder, args.image_size)), "--class", "0", "--generator", method,
                       "--out", str(folder / "concept"), "--device", args.device, "--threads", str(args.threads),
                       "--params", json.dumps(params)]


def children_peak() -> int:
    """The largest peak RSS among this process's finished subprocesses (bytes)."""
    import resource

    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def run_resume(args, name: str, memory: Memory) -> dict[str, Any]:
    """``lthash personalize`` of Textual Inversion, killed after its first checkpoint, then rerun to the end."""
    from lthash.testing.faults import kill_when_exists

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        command = personalize_command(args, tmp, "textual_inversion", "embedding", args.batch or 8, [sys.executable])
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
        began = time.perf_counter()
        killed = kill_when_exists(command, tmp / "concept.partial" / "ckpt-000000-000001", env=env,
                                  timeout=3600)
        first = time.perf_counter() - began
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"rerun failed: {done.stderr[-2000:]}")
        stages = json.loads((tmp / "concept" / "concept.json").read_text())["stages"]
    resumed = stages[0]["resumed_from_step"]
    if killed != -9 or resumed < 1:
        raise RuntimeError(f"not killed mid-stage (rc {killed}) or the rerun did not resume: {stages}")
    return {"s_per_step": None, "steps": 3, "cpu_batch": args.batch, "gpu_batch": None, "params": None,
            "trainable": None, "act": None, "children_peak": children_peak(),
            "note": f"killed after checkpoint 1 ({first:.0f} s in), rerun resumed at step {resumed} of 3 "
                    f"and finished in {time.perf_counter() - began - first:.0f} s"}


def run_multi_gpu(args, name: str, memory: Memory) -> dict[str, Any]:
    """DreamBooth's whole-UNet stage for 3 steps through ``accelerate launch`` on every CUDA device."""
    devices = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    if devices < 2:
        return {"s_per_step": None, "steps": 0, "cpu_batch": None, "gpu_batch": None, "params": None,
                "trainable": None, "act": None, "note": f"skipped: {max(devices, 1)} device (needs 2 or more)"}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        launcher = ["accelerate", "launch", "--num_processes", str(devices), "--mixed_precision", args.precision]
        command = personalize_command(args, tmp, "dreambooth", "unet", args.batch or 4, launcher)
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=3600,
                              env=dict(os.environ, HF_HUB_OFFLINE="1"))
        if done.returncode != 0:
            raise RuntimeError(f"accelerate launch failed: {done.stderr[-2000:]}")
        record = json.loads((tmp / "concept" / "concept.json").read_text())
    stage = record["stages"][0]
    return {"s_per_step": stage["seconds"] / stage["steps"], "steps": stage["steps"], "cpu_batch": None,
            "gpu_batch": None, "params": None, "trainable": None, "act": None,
            "note": f"{record['processes']} processes x batch {stage['batch_size']}, "
                    f"{time.perf_counter() - began:.0f} s with start-up"}


RUNNERS: dict[str, Callable] = {**{n: run_personalise for n in PERSONALISE}, **{n: run_synthesis for n in SYNTHESIS},
                                **{n: run_hashing for n in HASHING}, "synth_pipeline": run_pipeline,
                                "resume": run_resume, "multi_gpu": run_multi_gpu}


# ---------------------------------------------------------------- parent: estimate and table

def gpu_estimate(row: dict[str, Any], measured_on_cuda: bool) -> float | None:
    """The docstring's fp16 formula, in GB (activations measured on CUDA are used as they are)."""
    if row.get("params") is None:
        return None
    scale = 1.0 if measured_on_cuda else 0.5
    act = max(row["act"] * scale * row["gpu_batch"] / row["cpu_batch"], row.get("act_fixed", 0) * scale)
    return (4 * row["params"] + 14 * row["trainable"] + act) / GB + 1.0


def table(rows: list[dict[str, Any]], args) -> str:
    cuda = args.device.startswith("cuda")
    where = f"{args.device} {args.precision}" if cuda else f"CPU, {args.threads} thread"
    peak = "peak CUDA memory (GB)" if cuda else "peak RSS (GB)"
    lines = [f"| stage | {peak} | s/step ({where}) | fp16 GPU estimate (GB) | fits 24 / 40 / 80 GB | notes |",
             "|---|---:|---:|---:|:---:|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {LABELS[row['stage']]} | | | | | FAILED: {row['error']} |")
            continue
        est = gpu_estimate(row, cuda)
        fits = "" if est is None else " / ".join("yes" if est <= card else "no" for card in (24, 40, 80))
        step = "" if row["s_per_step"] is None else f"{row['s_per_step']:.2f}"
        gpu = "" if est is None else f"{est:.1f} (batch {row['gpu_batch']})"
        lines.append(f"| {LABELS[row['stage']]} | {row['peak'] / GB:.1f} | {step} | {gpu} | {fits} | {row['note']} |")
    return "\n".join(lines)


def shapes(args) -> str:
    """The shapes the rows ran at, read from the model folder's configs."""
    unet = json.loads((Path(args.model) / "unet" / "config.json").read_text())
    text = json.loads((Path(args.model) / "text_encoder" / "config.json").read_text())
    vae = json.loads((Path(args.model) / "vae" / "config.json").read_text())
    side = unet["sample_size"]
    return (f"{args.model}: {side * 2 ** (len(vae['block_out_channels']) - 1)} px images, 4 x {side} x {side} "
            f"latents, text {text['max_position_embeddings']} x {text['hidden_size']}; hashing "
            f"{args.hash_size} px")


def run_stage(args, stage: str) -> dict[str, Any]:
    """One stage's row, measured in this process."""
    torch.set_num_threads(args.threads)
    memory = Memory(args.device)
    row = RUNNERS[stage](args, stage, memory)
    row.update(stage=stage, peak=max(memory.finish(), row.pop("children_peak", 0)))
    return row


def stage_row(args, stage: str) -> dict[str, Any]:
    """One stage's row: in a fresh subprocess (its own peak memory), or in this one with ``--in-process``."""
    if args.in_process:
        try:
            return run_stage(args, stage)
        except Exception as exc:  # a failed stage is a row of the table, not the end of the run
            return {"stage": stage, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    command = [sys.executable, __file__, "--child", stage] + [a for a in sys.argv[1:] if a != "--write-model"]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), HF_HUB_OFFLINE="1")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    found = [line[4:] for line in done.stdout.splitlines() if line.startswith("ROW ")]
    if found:
        return json.loads(found[-1])
    return {"stage": stage, "error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def rows_from(paths: list[str]) -> list[dict[str, Any]]:
    """Saved rows in the order of :data:`RUNNERS`; a later file's row of a stage wins."""
    rows: dict[str, dict[str, Any]] = {}
    for path in paths:
        rows.update({row["stage"]: row for row in json.loads(Path(path).read_text()) if "error" not in row})
    return [rows[stage] for stage in RUNNERS if stage in rows]


def parent(args) -> None:
    from lthash.generate.stable_diffusion import save_stable_diffusion

    if args.write_model and not Path(args.model).exists():
        began = time.perf_counter()
        save_stable_diffusion(args.model, args.write_model)
        print(f"wrote random {args.write_model} to {args.model} in {time.perf_counter() - began:.0f} s", flush=True)
    stages = [s for s in args.stages.split(",") if s] if args.stages else list(STAGES)
    unknown = sorted(set(stages) - set(RUNNERS))
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; known: {', '.join(RUNNERS)}")
    rows = []
    for stage in stages:
        rows.append(stage_row(args, stage))
        print(f"{stage}: {json.dumps(rows[-1])}", flush=True)
    print(f"\n{shapes(args)}; {args.device} {args.precision}, threads={args.threads}, "
          f"load={os.getloadavg()[0]:.1f}, torch {torch.__version__}\n")
    print(table(rows, args), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/tmp/lthash-sd15", help="random SD 1.5 folder (see --write-model)")
    parser.add_argument("--write-model", nargs="?", const="sd15", default=None, choices=["sd15", "tiny"],
                        help="write a random SD folder of this architecture at --model when it is missing")
    parser.add_argument("--stages", default="", help=f"comma-separated subset of {','.join(RUNNERS)}")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="no", choices=["no", "fp16", "bf16"], help="autocast on CUDA")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per personalisation stage")
    parser.add_argument("--batch", type=int, default=1,
                        help="personalisation batch, 0 = the reference preset's (the estimate rescales to it)")
    parser.add_argument("--images", type=int, default=1, help="images per synthesis stage")
    parser.add_argument("--sampler-steps", type=int, default=4)
    parser.add_argument("--hash-steps", type=int, default=2)
    parser.add_argument("--hash-size", type=int, default=224, help="hashing image size (the paper's 224)")
    parser.add_argument("--hash-batch", type=int, default=64, help="hashing batch (the paper config's 64)")
    parser.add_argument("--image-size", type=int, default=512, help="the resume stage's split images")
    parser.add_argument("--workdir", default=None, help="where the resume stage writes its concept")
    parser.add_argument("--in-process", action="store_true", help="every stage in this process (fast, shared peak)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--table-from", default=None,
                        help="print the table of rows saved with --json (comma-separated files; a later file's "
                             "row of a stage replaces an earlier one's, failed rows are skipped)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        print("ROW " + json.dumps(run_stage(args, args.child)), flush=True)
    elif args.table_from:
        print(table(rows_from(args.table_from.split(",")), args))
    else:
        parent(args)


if __name__ == "__main__":
    main()

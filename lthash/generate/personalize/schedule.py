"""Stage schedules: what each personalisation stage trains, for how long, with which loss.

A method is a list of :class:`Stage` run in order, each starting from the previous one's
weights. ``trains`` names the parameter set (see :func:`lthash.generate.personalize.trainer.
trainable_parameters`): ``embedding`` (the [V] row only), ``cross_attention`` (every UNet
``attn2`` q, k, v, out) or ``unet`` (all UNet weights). The per-step loss is

    L = || eps - eps_theta(x_t, t, c) ||^2  [+ prior_weight * prior MSE]
        + L_reg(lambda_mean, lambda_var)        (seed paper eq. 1, when a lambda is non-zero)

Presets, whose numbers live in the package data file ``presets.yaml``: ``reference``
(AttnDreamBooth's published schedule, for real checkpoints) and ``tiny`` (scaled for the tiny
pixel-space model on one CPU thread: ~15 s of training per class, the three stages in the
reference's order with fewer steps and larger learning rates, chosen by class fidelity on
Fashion-MNIST tail classes; see benchmarks/bench_personalize_quality.py). ``auto`` picks ``tiny``
for a base without a VAE and ``reference`` otherwise. ``tiny_known_class`` (AttnDreamBooth only) is
for a tiny base that knows the class names: ``tiny``'s lr / 10 for the embedding and
cross-attention stages and no whole-UNet stage, measured with prior preservation (corpus, 64
images) to keep the quality judge's class fidelity near the un-personalised base's (issue 18).
``tiny_novel_class`` (AttnDreamBooth only) is for a tiny base that knows only the super-category
(the silk paper's regime): longer embedding and cross-attention stages and a whole-UNet stage
of 300 steps at lr 1e-3, so that each class's own model learns to draw the class (issue 27).
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from lthash.config import load_yaml
from lthash.errors import LthashError

TRAINS = ("embedding", "cross_attention", "unet")
STAGE_KEYS = ("steps", "lr", "batch_size", "lambda_mean", "lambda_var", "lora_rank")


@dataclass(frozen=True)
class Stage:
    """One training stage: trained parameter set, steps, constant lr, batch, loss weights."""

    name: str
    trains: str
    steps: int
    lr: float
    batch_size: int
    lambda_mean: float = 0.0
    lambda_var: float = 0.0
    prior_weight: float = 0.0
    lora_rank: int = 0

    @property
    def regularized(self) -> bool:
        return self.lambda_mean != 0.0 or self.lambda_var != 0.0

    def as_dict(self) -> dict[str, Any]:
        """The stage's fields (``lora_rank`` only when the stage trains factors)."""
        fields = asdict(self)
        if not self.lora_rank:
            del fields["lora_rank"]
        return fields


PRESETS_FILE = Path(__file__).resolve().parent / "presets.yaml"
PRESET_STAGE_TYPES: dict[str, type] = {"name": str, "trains": str, "steps": int, "lr": float, "batch_size": int,
                                       "lambda_mean": float, "lambda_var": float}
PRESET_OPTIONAL_TYPES: dict[str, type] = {"lora_rank": int}


@functools.lru_cache(maxsize=None)
def load_presets(path: str | os.PathLike = PRESETS_FILE) -> dict[str, dict[str, tuple[Stage, ...]]]:
    """preset -> method -> stages read from ``path`` (package data ``presets.yaml``), each stage
    stating exactly the keys of :data:`PRESET_STAGE_TYPES` with values of those types; any other
    shape is an :class:`LthashError` naming the stage."""
    presets: dict[str, dict[str, tuple[Stage, ...]]] = {}
    for preset, methods in load_yaml(Path(path).read_text()).items():
        presets[preset] = {}
        for method, rows in methods.items():
            presets[preset][method] = tuple(_preset_stage(row, f"{path}: {preset}.{method}") for row in rows)
    return presets


def _preset_stage(row: Mapping[str, Any], where: str) -> Stage:
    if not set(PRESET_STAGE_TYPES) <= set(row) <= set(PRESET_STAGE_TYPES) | set(PRESET_OPTIONAL_TYPES):
        raise LthashError(f"{where}: a stage has keys {sorted(row)}, expected {sorted(PRESET_STAGE_TYPES)} "
                          f"(and optionally {sorted(PRESET_OPTIONAL_TYPES)})")
    types = {**PRESET_STAGE_TYPES, **PRESET_OPTIONAL_TYPES}
    wrong = [key for key in row if type(row[key]) is not types[key]]
    if wrong:
        raise LthashError(f"{where}.{row['name']}: {', '.join(f'{key}={row[key]!r}' for key in wrong)} "
                          f"not of type {', '.join(types[key].__name__ for key in wrong)} "
                          "(write floats with a decimal point: 1.0e-3)")
    if row["trains"] not in TRAINS:
        raise LthashError(f"{where}.{row['name']}: trains {row['trains']!r} is not one of {TRAINS}")
    return Stage(**row)


PRESETS: dict[str, dict[str, tuple[Stage, ...]]] = load_presets()


def resolve_preset(schedule: str, has_vae: bool) -> str:
    """``auto`` -> ``reference`` for a latent (VAE) base, ``tiny`` for a pixel-space one."""
    if schedule == "auto":
        return "reference" if has_vae else "tiny"
    if schedule not in PRESETS:
        raise LthashError(f"config key 'personalize.schedule': unknown schedule {schedule!r} "
                          f"(allowed: auto, {', '.join(PRESETS)})")
    return schedule


def method_stages(method: str, params: Mapping[str, Any], has_vae: bool) -> list[Stage]:
    """The stages of ``method`` from the preset, with the user's per-stage overrides applied.

    ``params`` is the validated ``personalize`` config section; overrides live in
    ``params[method]["stages"][stage_name]`` (any of steps, lr, batch_size, lambda_mean,
    lambda_var; null keeps the preset). With ``params[method]["prior_preservation"]`` enabled,
    every stage carries its weight.
    """
    preset = resolve_preset(params["schedule"], has_vae)
    if method not in PRESETS[preset]:
        raise LthashError(f"config key 'personalize.schedule': preset {preset!r} has no stages for {method!r}")
    method_params = params[method]
    overrides = method_params["stages"]
    stages = []
    known = {stage.name for stage in PRESETS[preset][method]}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise LthashError(f"config key 'personalize.{method}.stages': unknown stage(s) {unknown} "
                          f"(stages of {method}: {sorted(known)})")
    for stage in PRESETS[preset][method]:
        changes = {key: value for key, value in (overrides.get(stage.name) or {}).items()
                   if value is not None}
        bad = sorted(set(changes) - set(STAGE_KEYS))
        if bad:
            raise LthashError(f"config key 'personalize.{method}.stages.{stage.name}': unknown key(s) {bad}")
        stage = replace(stage, **changes)
        if stage.lora_rank and stage.trains == "embedding":
            raise LthashError(f"config key 'personalize.{method}.stages.{stage.name}.lora_rank': the stage trains "
                              f"the token row only; LoRA factors are for the UNet stages")
        prior = method_params["prior_preservation"]
        if prior["enabled"]:
            stage = replace(stage, prior_weight=float(prior["weight"]))
        stages.append(stage)
    return stages

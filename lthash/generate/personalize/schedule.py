"""Stage schedules: what each personalisation stage trains, for how long, with which loss.

A method is a list of :class:`Stage` run in order, each starting from the previous one's
weights. ``trains`` names the parameter set (see :func:`lthash.generate.personalize.trainer.
trainable_parameters`): ``embedding`` (the [V] row only), ``cross_attention`` (every UNet
``attn2`` q, k, v, out) or ``unet`` (all UNet weights). The per-step loss is

    L = || eps - eps_theta(x_t, t, c) ||^2  [+ prior_weight * prior MSE]
        + L_reg(lambda_mean, lambda_var)        (seed paper eq. 1, when a lambda is non-zero)

Presets: ``reference`` (AttnDreamBooth's published schedule, for real checkpoints) and
``tiny`` (scaled for the tiny pixel-space model on one CPU thread: ~15 s of training per class,
the three stages in the reference's order with fewer steps and larger learning rates, chosen
by class fidelity on Fashion-MNIST tail classes; see benchmarks/bench_personalize_quality.py). ``auto`` picks ``tiny``
for a base without a VAE and ``reference`` otherwise. ``tiny_known_class`` (AttnDreamBooth only) is
for a tiny base that knows the class names: ``tiny``'s lr / 10 for the embedding and
cross-attention stages and no whole-UNet stage, measured with prior preservation (corpus, 64
images) to keep the quality judge's class fidelity near the un-personalised base's (issue 18).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from lthash.errors import LthashError

TRAINS = ("embedding", "cross_attention", "unet")
STAGE_KEYS = ("steps", "lr", "batch_size", "lambda_mean", "lambda_var")


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

    @property
    def regularized(self) -> bool:
        return self.lambda_mean != 0.0 or self.lambda_var != 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PRESETS: dict[str, dict[str, tuple[Stage, ...]]] = {
    "reference": {
        "attndreambooth": (
            Stage("embedding", "embedding", 60, 1e-3, 8, 0.1, 0.0),
            Stage("cross_attention", "cross_attention", 100, 2e-5, 8, 2.0, 5.0),
            Stage("unet", "unet", 500, 2e-6, 8, 2.0, 5.0),
        ),
        "dreambooth": (Stage("unet", "unet", 400, 5e-6, 4),),
        "textual_inversion": (Stage("embedding", "embedding", 500, 5e-3, 8),),
    },
    "tiny": {
        "attndreambooth": (
            Stage("embedding", "embedding", 15, 1e-2, 16, 0.1, 0.0),
            Stage("cross_attention", "cross_attention", 15, 2e-3, 16, 2.0, 5.0),
            Stage("unet", "unet", 40, 5e-4, 16, 2.0, 5.0),
        ),
        "dreambooth": (Stage("unet", "unet", 50, 5e-4, 16),),
        "textual_inversion": (Stage("embedding", "embedding", 60, 1e-2, 16),),
    },
    "tiny_known_class": {
        "attndreambooth": (
            Stage("embedding", "embedding", 15, 1e-3, 16, 0.1, 0.0),
            Stage("cross_attention", "cross_attention", 15, 2e-4, 16, 2.0, 5.0),
        ),
    },
}


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
        prior = method_params["prior_preservation"]
        if prior["enabled"]:
            stage = replace(stage, prior_weight=float(prior["weight"]))
        stages.append(stage)
    return stages

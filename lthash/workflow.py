"""What the Snakefile needs from the package: the run matrix, paths and stage params.

Rules only wire; every decision about which runs exist and which config a stage reads is
made here, so it is testable without Snakemake.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from lthash.io import canonical_json

REAL_ARMS = ("balanced", "longtail")
SYNTHETIC_ARMS = ("augmented", "pretrain_only", "mix_only")
ARM_GROUP = {"balanced": "train_balanced", "longtail": "train"}


@dataclass(frozen=True)
class Run:
    """One trained hash model: arm (with its generator for synthetic arms) x method x backbone x bits."""

    arm: str
    method: str
    backbone: str
    bits: int
    generator: str | None = None

    @property
    def arm_label(self) -> str:
        return self.arm if self.generator is None else f"{self.arm}-{self.generator}"

    @property
    def model_label(self) -> str:
        return f"{self.method}-{self.backbone}-{self.bits}"

    def directory(self, results: str) -> str:
        return f"{results}/runs/{self.arm_label}/{self.model_label}"


def runs(config: Mapping[str, Any]) -> list[Run]:
    """Every hash model the experiment section asks for, in a stable order."""
    experiment = config["experiment"]
    out = []
    for arm in experiment["arms"]:
        generators = experiment["generators"] if arm in SYNTHETIC_ARMS else [None]
        for generator in generators:
            for method in experiment["methods"]:
                for backbone in experiment["backbones"]:
                    for bits in experiment["bits"]:
                        out.append(Run(arm, method, backbone, int(bits), generator))
    return out


def uses_synthetic(config: Mapping[str, Any]) -> bool:
    return any(arm in SYNTHETIC_ARMS for arm in config["experiment"]["arms"])


def hashing_params(config: Mapping[str, Any], method: str, backbone: str, bits: int | str) -> dict:
    """The hashing section with the job's method, backbone and code length filled in."""
    params = dict(config["hashing"])
    params.update({"method": method, "backbone": backbone, "bits": int(bits)})
    return params


def shell_json(**parts: Any) -> str:
    """Canonical JSON of a stage's config, quoted for a shell command line."""
    return shlex.quote(canonical_json(parts))


def read_plan(path: str | Path) -> dict:
    """The balancing plan written by ``lthash plan``."""
    return json.loads(Path(path).read_text())


GENERATE_READS: dict[str, tuple[str, ...]] = {
    "base": ("seed", "base", "categories"),
    "plan": ("seed", "synthesis"),
    "personalize": ("seed", "categories", "personalize"),
    "synthesize": ("seed", "categories", "synthesis"),
    "quality": ("seed", "categories", "quality"),
}


def generate_params(config: Mapping[str, Any], stage: str, generator: str | None = None) -> dict:
    """The parts of the ``generate`` section one generation stage reads (narrow, for reruns).

    Personalisation reads only its own generator's settings, so tuning DreamBooth never
    reruns AttnDreamBooth.
    """
    generate = config["generate"]
    picked = {key: generate[key] for key in GENERATE_READS[stage] if key in generate}
    if stage == "personalize" and generator is not None and "personalize" in picked:
        personalize = picked["personalize"]
        picked["personalize"] = {
            key: value for key, value in personalize.items()
            if not isinstance(value, Mapping) or key == generator or key not in _GENERATOR_KEYS
        }
    return {"generate": picked}


_GENERATOR_KEYS = ("attndreambooth", "dreambooth", "textual_inversion")

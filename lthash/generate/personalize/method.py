"""A personalisation method: a named list of stages (from the schedule) plus its data needs.

Methods register themselves by name (:func:`register`, refusing a second method of the same
name); :mod:`lthash.generate.personalize.methods` imports every method module, so the
registry is complete once it is imported. This module imports no method module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from lthash.errors import LthashError
from lthash.generate.personalize.schedule import Stage, method_stages

REGISTRY: dict[str, "Method"] = {}


@dataclass(frozen=True)
class Method:
    """``stages`` come from :mod:`~lthash.generate.personalize.schedule`; ``seed_id`` tells the
    method's runs apart in :func:`~lthash.generate.personalize.runner.run_seed`; a method that
    does not ``personalise`` (``base``) trains nothing: its generator draws from the base
    model itself with the base's own prompt for the class. A ``joint`` method teaches every
    class in one run (one job, one joint concept folder) instead of one concept per class."""

    name: str
    description: str
    seed_id: int
    personalises: bool = True
    joint: bool = False

    def stages(self, params: Mapping[str, Any], has_vae: bool) -> list[Stage]:
        return method_stages(self.name, params, has_vae)

    def prior_settings(self, params: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The validated ``<method>.prior_preservation`` block when enabled, else None."""
        prior = params[self.name]["prior_preservation"]
        return prior if prior["enabled"] else None


def register(method: Method) -> Method:
    """Add ``method`` to :data:`REGISTRY`; a name registered twice is a programming error."""
    if method.name in REGISTRY:
        raise ValueError(f"personalisation method {method.name!r} is registered twice")
    REGISTRY[method.name] = method
    return method


def method_names() -> list[str]:
    """Every registered personalisation method, in registration order."""
    import lthash.generate.personalize.methods  # noqa: F401  (fills the registry)

    return list(REGISTRY)


def personalised_names() -> list[str]:
    """The registered methods that train a concept (every one but ``base``)."""
    return [name for name in method_names() if REGISTRY[name].personalises]


def joint_names() -> list[str]:
    """The registered methods that teach every class in one run."""
    return [name for name in method_names() if REGISTRY[name].joint]


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name is a user error naming the choices."""
    names = method_names()
    if name not in REGISTRY:
        raise LthashError(f"unknown personalisation method {name!r} (allowed: {', '.join(names)})")
    return REGISTRY[name]

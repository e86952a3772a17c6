"""A personalisation method: a named list of stages (from the schedule) plus its data needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from lthash.generate.personalize.schedule import Stage, method_stages


@dataclass(frozen=True)
class Method:
    """``stages`` come from :mod:`~lthash.generate.personalize.schedule`; ``uses_prior``: the
    method can add prior-preservation images (``<method>.prior_preservation`` in the config)."""

    name: str
    description: str
    uses_prior: bool = False

    def stages(self, params: Mapping[str, Any], has_vae: bool) -> list[Stage]:
        return method_stages(self.name, params, has_vae)

    def prior_settings(self, params: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The prior-preservation block when enabled, else None."""
        if not self.uses_prior:
            return None
        prior = (params.get(self.name) or {}).get("prior_preservation") or {}
        return prior if prior.get("enabled") else None


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name is a user error naming the choices."""
    from lthash.errors import LthashError
    from lthash.generate.personalize import attndreambooth, dreambooth, textual_inversion

    methods = {module.METHOD.name: module.METHOD for module in (attndreambooth, dreambooth, textual_inversion)}
    if name not in methods:
        raise LthashError(f"unknown personalisation method {name!r} (allowed: {', '.join(methods)})")
    return methods[name]

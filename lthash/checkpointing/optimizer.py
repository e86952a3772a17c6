"""torch optimiser state as safetensors-ready tensors plus JSON (no pickle in checkpoints)."""

from __future__ import annotations

from typing import Any, Mapping

import torch


def flatten_optimizer_state(state_dict: Mapping[str, Any], prefix: str = "state",
                            ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` -> (tensors named ``<prefix>.<param>.<key>``, JSON-able rest:
    ``param_groups`` and the non-tensor entries as ``scalars``)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state_dict["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{param_id}.{key}"] = value
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                              prefix: str = "state") -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`; tensors without ``<prefix>.`` are ignored."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(prefix + "."):
            continue
        param_id, key = name[len(prefix) + 1:].split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, entries in meta.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}

"""What every hash method provides, and the registry that names them."""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable, ClassVar, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from lthash.errors import LthashError

REGISTRY: dict[str, type["HashMethod"]] = {}


def register(name: str) -> Callable[[type["HashMethod"]], type["HashMethod"]]:
    """Class decorator adding a method to :data:`REGISTRY` under ``name``."""

    def wrap(cls: type["HashMethod"]) -> type["HashMethod"]:
        if name in REGISTRY:
            raise ValueError(f"hash method {name!r} is registered twice")
        REGISTRY[name] = cls
        cls.name = name
        return cls

    return wrap


def get_method(name: str, key: str = "hashing.method") -> type["HashMethod"]:
    """The method class registered as ``name``; an unknown name lists the known ones (and ``key``)."""
    if name not in REGISTRY:
        raise LthashError(f"config key '{key}': unknown hash method '{name}' "
                          f"(known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def method_defaults(name: str) -> dict[str, Any]:
    """The schema's defaults of method ``name``'s options (``hashing.<section>``; {} for a method without options)."""
    return copy.deepcopy(_schema_defaults().get(method_section(name), {}))


def method_section(name: str) -> str:
    """The config section holding method ``name``'s options (``lthnet_sq`` shares ``lthnet``'s)."""
    from lthash.workflow import METHOD_SECTION

    return METHOD_SECTION.get(name, name)


@functools.lru_cache(maxsize=1)
def _schema_defaults() -> dict[str, Any]:
    from lthash.config import validate_config

    return validate_config({"dataset": {}})["hashing"]


class HashMethod(nn.Module):
    """A hashing model: images (N x C x H x W floats in [0,1]) -> real codes whose signs are the bits.

    Its options and their defaults live in ``hashing.schema.yaml`` under the method's section
    (:func:`method_defaults`); ``trainable`` is False for shallow methods fitted in closed form.
    """

    name: ClassVar[str] = ""
    trainable: ClassVar[bool] = True

    def __init__(self, backbone: nn.Module, bits: int, num_classes: int, options: Mapping[str, Any],
                 class_counts: np.ndarray, seed: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.bits = int(bits)
        self.num_classes = int(num_classes)
        self.options = {**method_defaults(self.name), **dict(options)}
        self.class_counts = np.asarray(class_counts, dtype=np.int64)
        self.rng = np.random.default_rng([int(seed), 7919])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return at least ``{"code": N x bits}``; other entries feed :meth:`loss`."""
        raise NotImplementedError

    def loss(self, out: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of a batch."""
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Real-valued codes; bit j is 1 where the value is > 0."""
        return self.forward(x)["code"]

    def on_epoch_start(self, features: Callable[[], Iterator[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Hook run before each training epoch with an iterator factory over (images, labels)
        of the whole training set in a fixed order, unaugmented (LTHNet rebuilds its memory)."""

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the backbone (trained at the head learning rate)."""
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone_ids]


def hash_head(in_dim: int, bits: int) -> nn.Linear:
    """The linear hash layer every deep method ends with."""
    return nn.Linear(in_dim, bits)

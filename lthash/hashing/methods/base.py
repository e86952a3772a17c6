"""What every hash method provides, and the registry that names them."""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from lthash.errors import LthashError
from lthash.hashing.losses.logit_adjustment import logit_offset

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


def check_balance(methods: Iterable[str], key: str = "hashing.train.balance", setting: str = "is 'logit_adjusted'") -> None:
    """Refuse a setting that needs class logits (the logit-adjusted loss, label smoothing) for
    methods without them: one error naming ``key`` and every such method (``methods``: the
    methods that would train with it)."""
    without = [name for name in methods if not get_method(name).has_class_logits]
    if without:
        with_logits = sorted(name for name, cls in REGISTRY.items() if cls.has_class_logits)
        raise LthashError(f"config key '{key}' {setting}, but {', '.join(without)} "
                          f"{'has' if len(without) == 1 else 'have'} no class logits "
                          f"(methods with class logits: {', '.join(with_logits)})")


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
    (:func:`method_defaults`); ``trainable`` is False for shallow methods fitted in closed form;
    ``has_class_logits`` is True where the loss is a softmax over class logits, which
    :meth:`adjust_logits_by_prior` shifts by the log class prior.
    """

    name: ClassVar[str] = ""
    trainable: ClassVar[bool] = True
    has_class_logits: ClassVar[bool] = False

    def __init__(self, backbone: nn.Module, bits: int, num_classes: int, options: Mapping[str, Any],
                 class_counts: np.ndarray, seed: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.bits = int(bits)
        self.num_classes = int(num_classes)
        self.options = {**method_defaults(self.name), **dict(options)}
        self.class_counts = np.asarray(class_counts, dtype=np.int64)
        self.rng = np.random.default_rng([int(seed), 7919])
        self.register_buffer("logit_offset", None, persistent=False)
        self.build()

    def build(self) -> None:
        """Create the method's layers and buffers (called once at the end of ``__init__``), from
        ``backbone``, ``bits``, ``num_classes``, ``options``, ``class_counts`` and the seeded ``rng``.
        The order of registration and of ``rng`` draws fixes the state_dict and the initial weights."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return at least ``{"code": N x bits}``; other entries feed :meth:`loss`."""
        raise NotImplementedError

    def loss(self, out: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of a batch. Methods with class logits also take
        ``label_smoothing`` (epsilon of the cross-entropy's targets; default 0)."""
        raise NotImplementedError

    def adjust_logits_by_prior(self, tau: float) -> None:
        """Train on class logits + tau * log(prior of ``class_counts``) (``hashing.train.balance:
        logit_adjusted``; :mod:`lthash.hashing.losses.logit_adjustment`). Not saved with the weights."""
        check_balance([self.name])
        self.logit_offset = logit_offset(self.class_counts, tau)

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

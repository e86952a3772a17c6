"""Hash methods, registered by name: deep (orthohash, csq, dpn, lthnet, lthnet_sq, adh) and
shallow on frozen features (lsh, pcah, itq, sdh)."""

from lthash.hashing.methods import adh, csq, dpn, itq, lsh, lthnet, orthohash, pcah, sdh  # noqa: F401
from lthash.hashing.methods.base import REGISTRY, HashMethod, check_balance, get_method, register

__all__ = ["REGISTRY", "HashMethod", "check_balance", "get_method", "register"]

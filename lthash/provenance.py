"""Where a number came from: the code version and a digest of the config that made it."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

from lthash import __version__
from lthash.io import canonical_json


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``lthash <version>`` plus the git commit of the checkout (``+dirty`` when edited)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"lthash {__version__}"
    return f"lthash {__version__} ({commit}{'+dirty' if dirty else ''})"


def config_digest(config: Any) -> str:
    """First 12 hex digits of the SHA-256 of the canonical JSON of ``config``."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]

"""Runtime helpers: device choice and the per-GPU lock a workstation job takes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lthash.errors import LthashError
from lthash.runtime import claim_gpu, select_device


def test_auto_and_env_device_resolve_to_cpu_without_cuda(monkeypatch):
    monkeypatch.setenv("LTHASH_DEVICE", "cpu")
    assert select_device("auto") == "cpu"
    monkeypatch.setenv("LTHASH_DEVICE", "auto")
    assert select_device("auto") == "cpu"


def test_cuda_without_cuda_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(LthashError, match="CUDA is not available"):
        select_device("cuda")


def test_concurrent_jobs_claim_different_gpus(tmp_path, monkeypatch):
    """Two processes on a 2-GPU workstation lock different GPUs."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert claim_gpu(2, lock_dir=str(tmp_path)) == 0
    code = ("import sys; from lthash.runtime import claim_gpu; "
            f"print(claim_gpu(2, lock_dir={str(tmp_path)!r}))")
    env = {"PATH": "/usr/bin:/bin"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert other.stdout.strip() == "1"

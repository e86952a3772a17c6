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


def test_thread_count_changes_after_numba_started_do_not_break_its_next_compilation():
    """Two in-process CLI calls with different --threads (as the warm job server and the tests
    make): the second must not change NUMBA_NUM_THREADS under a running pool, which made the
    next kernel compilation fail ("Cannot set NUMBA_NUM_THREADS ... once the threads have been
    launched")."""
    code = """
import numba, numpy as np
from lthash.runtime import configure_threads
from lthash.evaluate import search
from lthash.evaluate.codes import pack_codes

@numba.njit(parallel=True)
def total(x):
    s = 0.0
    for i in numba.prange(x.size):
        s += x[i]
    return s

configure_threads(2)
total(np.ones(10))
configure_threads(1)
search.NUMPY_PAIRS = 0
codes = pack_codes(np.random.default_rng(0).choice([-1, 1], (50, 64)))
search.search_codes(codes[:5], codes, 64, 10)
print(total(np.ones(10, np.int64)), numba.get_num_threads())
"""
    env = {"PATH": "/usr/bin:/bin", "NUMBA_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["10.0", "1"]


def test_cpu_isa_pins_x86_kernels_to_avx2_and_native_unpins_them():
    """cpu_isa: avx2 sets the variables torch, oneDNN and MKL read when they load; a process
    started with them runs torch's AVX2 kernels even on an AVX-512 CPU; native and non-x86
    machines set none and remove any left in the environment."""
    from lthash.runtime import cpu_isa_env

    pinned, removed = cpu_isa_env("avx2", machine="x86_64")
    assert pinned == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert removed == []
    for isa, machine in (("native", "x86_64"), ("avx2", "aarch64")):
        assert cpu_isa_env(isa, machine=machine) == ({}, sorted(pinned))
    import platform

    import torch

    native = torch.backends.cpu.get_cpu_capability()
    if platform.machine().lower() not in ("x86_64", "amd64") or native not in ("AVX2", "AVX512"):
        pytest.skip(f"an x86-64 CPU with AVX2 is needed (this one: {platform.machine()}, {native})")
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {"PATH": "/usr/bin:/bin", **cpu_isa_env("avx2")[0]}
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "AVX2"


def test_the_workflow_exports_cpu_isa_pins_with_the_runtime_keys_and_native_removes_inherited_ones():
    """What the Snakefile hands its jobs: the RUNTIME keys and, on x86-64, the AVX2 pins;
    cpu_isa: native removes pins inherited from the shell."""
    import platform

    from lthash.config import validate_config
    from lthash.runtime import cpu_isa_env
    from lthash.workflow import export_runtime_env

    environ = {"ATEN_CPU_CAPABILITY": "avx512", "PATH": "/usr/bin"}
    export_runtime_env(validate_config({"dataset": {}, "cpu_isa": "native"}), environ)
    assert "ATEN_CPU_CAPABILITY" not in environ and environ["LTHASH_ENCODE_BATCH_SIZE"]
    export_runtime_env(validate_config({"dataset": {}}), environ)
    assert {k: environ[k] for k in cpu_isa_env("avx2")[0]} == cpu_isa_env("avx2")[0]
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert environ["ATEN_CPU_CAPABILITY"] == "avx2"


ALLOCATION_FAULTS = """
import resource, sys, numpy as np, torch
from lthash.config import validate_config
from lthash.hashing.model import build_model
from lthash.hashing.train import encode_images
from lthash.runtime import configure_allocator
torch.set_num_threads(1)
took = configure_allocator() if sys.argv[1] == "configure" else None
model = build_model(validate_config({"dataset": {}, "hashing": {}})["hashing"], "orthohash", "cnn", 64, 10,
                    (28, 28, 1), np.full(10, 10), 0)
images = np.random.default_rng(0).integers(0, 256, (256 * 12, 28, 28, 1), dtype=np.uint8)
encode_images(model, images[:256], "cpu")
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
encode_images(model, images, "cpu")
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_configured_allocator_keeps_freed_memory_for_the_next_batch_and_can_be_turned_off():
    """The default hash model encoding 12 batches of 256 (as an encode job does 84): under glibc's
    defaults its activations (12.8 MB each) keep coming from fresh pages, faulted in anew; after
    configure_allocator freed memory is reused and it faults a small fraction of those pages.
    LTHASH_MALLOC=system leaves glibc's settings alone."""
    def faults(mode: str, **env: str) -> tuple[str, int]:
        done = subprocess.run([sys.executable, "-c", ALLOCATION_FAULTS, mode], capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", **env}, check=True)
        took, count = done.stdout.split()
        return took, int(count)

    default = faults("default")
    configured = faults("configure")
    opted_out = faults("configure", LTHASH_MALLOC="system")
    assert configured[0] == "True" and opted_out[0] == "False"
    assert configured[1] * 4 < default[1], (default, configured)
    assert configured[1] * 4 < opted_out[1], (opted_out, configured)

"""Process-level runtime: threads, devices, seeds, logging."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from typing import Iterator, Sequence

import numpy as np

log = logging.getLogger("lthash")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def configure_threads(threads: int | None) -> int:
    """Match the math libraries' threads to the job's share of cores (Snakemake ``threads``).

    Oversubscription is costly here: two jobs each using every core ran 4-5x slower. The
    count goes into OMP_NUM_THREADS / MKL_NUM_THREADS, which torch and numpy read when they
    load, so stages that never import torch do not pay for importing it; if torch is loaded
    already its thread pool is resized directly. Numba's pool size is fixed once it starts, and
    a later change to NUMBA_NUM_THREADS makes its next compilation fail, so once that pool runs
    only the number of threads it uses is set (a job that has not started it, as every forked
    job of the warm server, does not start it here).
    """
    n = threads or int(os.environ.get("LTHASH_THREADS", 0)) or os.cpu_count() or 1
    # numba.np.ufunc.parallel._is_initialized: whether numba's pool runs (no public query).
    pool_running = bool(getattr(sys.modules.get("numba.np.ufunc.parallel"), "_is_initialized", False))
    variables = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"]
    if not pool_running:
        variables.append("NUMBA_NUM_THREADS")
    for variable in variables:
        if threads or variable not in os.environ:
            os.environ[variable] = str(n)
    if pool_running:
        numba = sys.modules["numba"]
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n


#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Allocations up to this size come from the heap and freed memory up to it stays there.
HEAP_REUSE_BYTES = 1 << 30
#: ``LTHASH_MALLOC=system`` leaves glibc's allocator settings alone.
MALLOC_ENV = "LTHASH_MALLOC"


def configure_allocator() -> bool:
    """Keep freed tensor memory in the process for the next batch, instead of returning it to
    the kernel and faulting it in again (glibc: ``mallopt`` mmap and trim thresholds 1 GiB).

    torch's CPU allocator is plain ``malloc``; glibc serves blocks above its mmap threshold (at
    most 32 MiB when it adapts it) with fresh ``mmap`` pages, so every activation of a batch of
    256 paid page faults and zeroing: half the CPU of an encode job, a quarter of a synthesis job
    (benchmarks/bench_allocator.py). Where memory comes from changes no arithmetic: results are
    bit for bit the same. Returns whether the setting took (False off glibc, or with
    ``LTHASH_MALLOC=system``).
    """
    if os.environ.get(MALLOC_ENV, "reuse") == "system" or not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: glibc is loaded already
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_REUSE_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, HEAP_REUSE_BYTES))


#: What ``cpu_isa`` exports: the instruction set torch's own kernels (ATen), oneDNN's
#: convolutions and MKL's BLAS may dispatch to. Each reads its variable when it loads.
CPU_ISA_VARIABLES: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "native": {},
}


def cpu_isa_env(isa: str, machine: str | None = None) -> tuple[dict[str, str], list[str]]:
    """(variables to set, variables to remove) for ``cpu_isa``: ``avx2`` pins the kernels of an
    x86-64 CPU to AVX2, so floats match across CPUs; ``native`` (or a non-x86 CPU) removes the pins."""
    import platform

    machine = (machine or platform.machine()).lower()
    pinned = CPU_ISA_VARIABLES[isa] if machine in ("x86_64", "amd64") else {}
    every = {variable for variables in CPU_ISA_VARIABLES.values() for variable in variables}
    return dict(pinned), sorted(every - set(pinned))


def cpu_capability() -> str:
    """The instruction set torch's CPU kernels use in this process (AVX2, AVX512, DEFAULT, ...)."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass


def select_device(preference: str = "auto") -> str:
    """Resolve ``auto``/``cpu``/``cuda``/``cuda:N`` to a usable device string.

    ``auto`` first defers to LTHASH_DEVICE (the workflow sets it from the config's
    ``device``, outside the rules' params, so a device change reruns nothing).
    ``auto`` takes a GPU when one is visible. On a workstation with several GPUs, where
    Snakemake does not set CUDA_VISIBLE_DEVICES, a free GPU is picked and locked (see
    :func:`claim_gpu`) so concurrent jobs do not pile onto device 0.
    """
    import torch

    if preference == "auto":
        preference = os.environ.get("LTHASH_DEVICE", "auto") or "auto"
    if preference == "cpu":
        return "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            from lthash.errors import LthashError

            raise LthashError(f"device '{preference}' requested but CUDA is not available")
        if preference != "cuda":
            return preference
    elif not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{claim_gpu(torch.cuda.device_count())}"


_GPU_LOCKS: list = []


def claim_gpu(count: int, lock_dir: str | None = None) -> int:
    """Take an exclusive file lock on the first free GPU index in [0, count).

    The lock is held for the life of the process. If CUDA_VISIBLE_DEVICES is already set
    (SLURM does), index 0 of what is visible is used with no lock. If every GPU is taken,
    the one with the lowest index is shared.
    """
    import fcntl

    if os.environ.get("CUDA_VISIBLE_DEVICES") or count <= 1:
        return 0
    lock_dir = lock_dir or os.environ.get("LTHASH_GPU_LOCK_DIR", "/tmp/lthash-gpu-locks")
    os.makedirs(lock_dir, exist_ok=True)
    for index in range(count):
        handle = open(os.path.join(lock_dir, f"gpu{index}.lock"), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _GPU_LOCKS.append(handle)
        return index
    return 0


OUT_OF_MEMORY_MARKERS = ("out of memory", "DefaultCPUAllocator: can't allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator's out-of-memory error (CUDA, or the CPU allocator's)."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(marker in str(exc) for marker in OUT_OF_MEMORY_MARKERS)


@contextlib.contextmanager
def memory_hint(what: str, settings: Sequence[str]) -> Iterator[None]:
    """Re-raise an out-of-memory error inside the block as an LthashError naming the config
    keys that size ``what`` (``settings``: "key (now value): advice" strings, most effective
    first); any other error passes through unchanged."""
    from lthash.errors import LthashError

    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not (isinstance(exc, MemoryError) or is_out_of_memory(exc)):
            raise
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise LthashError(f"{what} ran out of memory ({first}). Settings that size it: "
                          + "; ".join(settings)) from exc

"""Fault injection for the reliability tests: a full disk, an unwritable folder, kills.

Everything here acts on a real ``lthash`` (or ``snakemake``) process run as a subprocess, so
the code under test is never replaced:

* :func:`run` with ``fsize_limit`` sets RLIMIT_FSIZE in the child (SIGXFSZ ignored, so a write
  past the limit fails with EFBIG the way a full quota does) -- works without privileges;
* :func:`tmpfs` mounts a tiny tmpfs (a real ENOSPC disk) or a read-only one (EROFS), when the
  process may mount (root in a container); tests skip that variant otherwise;
* :func:`unwritable_path` is an output path whose parent is a regular file (ENOTDIR), which
  even root cannot write under;
* :func:`snapshot` records every file of a folder with its bytes' digest, to prove that earlier
  artifacts were left exactly as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parents[2]


def lthash_command(*args: str) -> list[str]:
    """``lthash <args>`` through the current interpreter (no reliance on PATH)."""
    return [sys.executable, "-c", "import sys; from lthash.cli import main; sys.exit(main())", *args]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("LTHASH_THREADS", "1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    env.update(extra)
    return env


def run(command: Sequence[str], fsize_limit: int | None = None, cwd: str | os.PathLike | None = None,
        timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``command``; with ``fsize_limit`` no file it writes may grow past that many bytes."""

    def limit() -> None:
        if fsize_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_limit, fsize_limit))

    return subprocess.run(list(command), preexec_fn=limit, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env or child_env())


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN, as in the CI container)."""
    if os.geteuid() != 0:
        return False
    with tempfile.TemporaryDirectory() as where:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", where],
                                capture_output=True)
        if result.returncode != 0:
            return False
        subprocess.run(["umount", where], check=True)
    return True


@contextlib.contextmanager
def tmpfs(where: str | os.PathLike, size: str = "512k", read_only: bool = False) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``where`` (created) for the duration of the block."""
    where = Path(where)
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: str | os.PathLike, keep_free: int = 0) -> Path:
    """Fill the file system of ``folder`` up to ``keep_free`` bytes with one file; return it."""
    filler = Path(folder) / "filler.bin"
    chunk = b"\0" * 4096
    with open(filler, "wb") as handle:
        while True:
            stats = os.statvfs(folder)
            if stats.f_bavail * stats.f_frsize <= keep_free + len(chunk):
                break
            try:
                handle.write(chunk)
                handle.flush()
            except OSError:
                break
    return filler


def unwritable_path(tmp_path: Path, name: str = "out.h5") -> Path:
    """A path whose parent 'folder' is a regular file: any write under it fails (ENOTDIR)."""
    blocker = tmp_path / "results_is_a_file"
    blocker.write_text("not a folder\n")
    return blocker / "data" / name


def snapshot(folder: str | os.PathLike) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (hidden temporary files included)."""
    folder = Path(folder)
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def truncate_copy(source: str | os.PathLike, target: str | os.PathLike, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``source``'s bytes to ``target``: a file cut by a crash."""
    data = Path(source).read_bytes()
    target = Path(target)
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def copy_workflow(dest: str | os.PathLike) -> Path:
    """A runnable copy of the workflow (Snakefile, workflow/, envs/) in ``dest``.

    Its config.yaml holds schema defaults only (``dataset: {}``), not the repository's demo
    settings: Snakemake merges ``--configfile`` over config.yaml, and a test's config must
    mean what it says rather than inherit the demo's database size or step budget.
    """
    import shutil

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    (dest / "config.yaml").write_text("dataset: {}\n")
    for name in ("workflow", "envs"):
        shutil.copytree(REPO / name, dest / name)
    return dest


def snakemake_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args]


def start_in_new_group(command: Sequence[str], cwd: str | os.PathLike, log: str | os.PathLike,
                       env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``command`` as the leader of a new process group (so the whole tree can be killed)."""
    handle = open(log, "w")
    return subprocess.Popen(list(command), cwd=cwd, stdout=handle, stderr=subprocess.STDOUT,
                            env=env or child_env(), start_new_session=True)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL ``process`` and everything in its process group, as a pre-empted node would."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def wait_for(predicate, timeout: float, interval: float = 0.02, what: str = "condition") -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def kill_when_exists(command: Sequence[str], target: str | os.PathLike, env: dict[str, str] | None = None,
                     timeout: float = 120.0) -> int:
    """Run ``command``, SIGKILL it as soon as ``target`` exists (or it ends, or ``timeout``
    passes) and return its exit status (``-SIGKILL`` when the kill is what ended it)."""
    import time

    process = subprocess.Popen(list(command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not Path(target).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return process.returncode


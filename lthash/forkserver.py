"""A warm process that runs ``lthash`` commands with torch, diffusers and numba already imported.

A workflow's jobs are small: a synthesis shard draws for 10 s after 5-15 s of importing torch,
diffusers and transformers, and every one of a run's ~230 jobs pays its imports again. Where
the workflow runs its jobs on this machine, the Snakefile starts one server (:func:`serve`)
that imports those libraries once; the ``lthash`` command of each job then hands its argument
list, working folder, environment and its standard input, output and error (the job's log
file) over a Unix socket (:func:`run_in_server`), and the server forks a child that runs the
command exactly as the command line would (``lthash.cli.main``) and reports its exit status.

Contract:

* Same results: the child is a fork of a process that only imported modules (no thread, no
  random draw, no CUDA context), and every stage seeds what it draws from its params.
* The job's process stays the handle: a signal it gets (SIGTERM, SIGINT, SIGHUP) is passed on
  to the child; if it dies (SIGKILL), the server kills the child.
* Never required: when no server answers (none started, not ready yet, another machine, a
  cluster node), the command runs in its own process as usual.
* The server exits with its parent (the Snakemake process), after ``idle`` seconds without a
  job, or on SIGTERM, killing any child still running.

``LTHASH_FORKSERVER`` (:data:`ENV`) names the socket; a child runs with it unset.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Iterable, MutableMapping, Sequence

ENV = "LTHASH_FORKSERVER"
#: What the server imports before it forks: the heavy libraries of every model stage. The stage
#: modules import diffusers' and transformers' model classes inside functions, so those modules
#: are named here (importing them is most of a synthesis job's start-up); torch.optim's constructors
#: import ``torch._dynamo`` on first use (2-3 s of every training job).
PRELOAD = ("numpy", "h5py", "torch", "torch._dynamo", "matplotlib.pyplot",
           "diffusers.models.unets.unet_2d_condition", "diffusers.schedulers.scheduling_ddim", "diffusers.schedulers.scheduling_ddpm",
           "transformers.models.clip.modeling_clip", "transformers.models.clip.tokenization_clip",
           "lthash.hashing.train", "lthash.hashing.encode", "lthash.evaluate.score", "lthash.generate.synthesize",
           "lthash.generate.personalize.runner", "lthash.generate.quality", "lthash.generate.models",
           "lthash.generate.concepts", "lthash.report.report", "lthash.cli")
#: Math-library threads of the server: 1, so that importing numpy starts no thread pool
#: (a fork copies only the forking thread); each job sets its own through ``--threads``.
SERVER_THREADS = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_HEADER = struct.Struct("!I")


def _send_request(sock: socket.socket, payload: dict, fds: Sequence[int]) -> None:
    """A length-prefixed JSON request with the job's descriptors (SCM_RIGHTS)."""
    data = json.dumps(payload).encode()
    socket.send_fds(sock, [_HEADER.pack(len(data)) + data], list(fds))


def _receive_exact(sock: socket.socket, size: int) -> bytes:
    chunks = b""
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed")
        chunks += chunk
    return chunks


def run_in_server(argv: Sequence[str]) -> int | None:
    """Run ``lthash argv`` in the warm server named by :data:`ENV`; its exit status, or None
    when no server answers (the caller then runs the command itself)."""
    path = os.environ.get(ENV)
    if not path:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)
        sock.connect(path)
        sock.settimeout(None)
        request = {"argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ)}
        _send_request(sock, request, [0, 1, 2])
        started = _receive_exact(sock, 1) == b"+"
    except (OSError, ConnectionError):
        started = False
    if not started:  # the server forked nothing: run the command here
        sock.close()
        return None

    def forward(signum: int, frame: object) -> None:
        try:
            sock.sendall(bytes([signum]))
        except OSError:
            pass

    for signum in _FORWARDED:
        signal.signal(signum, forward)
    while True:
        try:
            status = _receive_exact(sock, 4)
            return struct.unpack("!i", status)[0]
        except InterruptedError:
            continue
        except (OSError, ConnectionError):
            print(f"lthash: the warm start server ({path}) went away while running the command", file=sys.stderr)
            return 1


def _exit_code(status: int) -> int:
    """A wait status as a shell would report it (128 + N for a child killed by signal N)."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _die_with_parent() -> None:
    """Linux: the kernel sends this process SIGKILL when the server dies (best effort elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_child(request: dict, fds: list[int], inherited: Sequence[socket.socket], mask: Iterable[int]) -> None:
    """In the forked child: become the job (its files, folder, environment) and run the command;
    ``mask`` is the signal mask to restore once the job's own handlers are in place."""
    _die_with_parent()
    for sock in inherited:
        sock.close()
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({key: value for key, value in request["env"].items() if key != ENV})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    sys.argv = ["lthash", *request["argv"]]
    code = 1
    try:
        from lthash.cli import main

        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        import logging

        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _threads() -> int:
    return len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1


def serve(path: str, parent: int | None = None, idle: float = 600.0, preload: Sequence[str] = PRELOAD) -> int:
    """Import ``preload``, then fork one child per request on the Unix socket ``path`` until the
    parent process is gone, ``idle`` seconds pass without a job, or SIGTERM. Returns an exit code."""
    import importlib

    for name in preload:
        importlib.import_module(name)
    threads = _threads()
    if threads != 1:
        print(f"lthash forkserver: {threads} threads after importing {', '.join(preload)}: "
              "forking would not be safe; not serving", file=sys.stderr)
        return 1
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(64)
    children: dict[int, socket.socket] = {}
    by_connection: dict[socket.socket, int] = {}
    commands: dict[int, str] = {}
    last_job = time.monotonic()
    print(f"lthash forkserver: serving on {path} (pid {os.getpid()})", file=sys.stderr, flush=True)
    try:
        while not stop:
            if parent is not None and os.getppid() != parent:
                break
            if not children and time.monotonic() - last_job > idle:
                break
            try:
                readable, _, _ = select.select([listener, *by_connection], [], [], 0.05)
            except InterruptedError:
                readable = []
            for ready in readable:
                if ready is listener:
                    connection, _ = listener.accept()
                    _accept(connection, children, by_connection, listener, commands)
                    last_job = time.monotonic()
                else:
                    data = b""
                    try:
                        data = ready.recv(16)
                    except OSError:
                        pass
                    pid = by_connection[ready]
                    try:
                        if not data:
                            os.kill(pid, signal.SIGKILL)
                        else:
                            for signum in data:
                                os.kill(pid, signum)
                    except ProcessLookupError:
                        pass
            _reap(children, by_connection, commands)
    finally:
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        listener.close()
        if os.path.exists(path):
            os.unlink(path)
    return 0


def _accept(connection: socket.socket, children: dict, by_connection: dict, listener: socket.socket,
            commands: dict) -> None:
    """Read one request with its three descriptors and fork its child."""
    try:
        connection.settimeout(5.0)
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        size = _HEADER.unpack(message[:4])[0]
        body = message[4:]
        if len(body) < size:
            body += _receive_exact(connection, size - len(body))
        request = json.loads(body)
        if len(fds) != 3:
            raise ValueError("a request carries three descriptors")
    except (OSError, ValueError, ConnectionError, struct.error):
        connection.close()
        return
    # The forwarded signals wait, blocked, until the child has its own handlers: one that came
    # between the fork and the reset would reach the server's on_term in the child and be lost.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
    pid = os.fork()
    if pid == 0:
        _run_child(request, fds, [connection, listener, *by_connection], mask)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for fd in fds:
        os.close(fd)
    connection.settimeout(None)
    connection.sendall(b"+")
    children[pid] = connection
    by_connection[connection] = pid
    commands[pid] = " ".join(["lthash", *request["argv"][:1], *_outputs(request["argv"])])


def _outputs(argv: Sequence[str]) -> list[str]:
    """The ``--out`` of a command line (what names the job in the server's log)."""
    return [f"--out {argv[i + 1]}" for i, arg in enumerate(argv[:-1]) if arg == "--out"]


def _reap(children: dict, by_connection: dict, commands: dict) -> None:
    """Report every child that ended to its job, log its CPU time and peak memory (Snakemake's
    benchmark of the job sees only the job's own process), and forget it."""
    while children:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        command = commands.pop(pid, "?")
        if connection is None:
            continue
        by_connection.pop(connection, None)
        code = _exit_code(status)
        print(f"lthash forkserver: job {pid} ({command}) exit {code}, {usage.ru_utime + usage.ru_stime:.2f} s CPU, "
              f"{usage.ru_maxrss / 1024:.0f} MB peak", file=sys.stderr, flush=True)
        try:
            connection.sendall(struct.pack("!i", code))
        except OSError:
            pass
        connection.close()


def start(path: str, log: str, parent: int) -> subprocess.Popen:
    """Start a server in the background (the Snakefile's ``onstart``); it serves once its imports are done."""
    env = {**os.environ, **SERVER_THREADS}
    env.pop(ENV, None)
    handle = open(log, "a")
    return subprocess.Popen([sys.executable, "-m", "lthash.forkserver", path, "--parent", str(parent)],
                            stdin=subprocess.DEVNULL, stdout=handle, stderr=handle, env=env)


def start_for_workflow(warm_start: bool, local_exec: bool, path: str, log: str, parent: int,
                       environ: MutableMapping[str, str] = os.environ) -> subprocess.Popen | None:
    """The Snakefile's ``onstart``: a server (:func:`start`, its log at ``log``) where the
    Snakemake process runs jobs itself (``warm_start`` and a local executor); None where every
    job is submitted elsewhere (a cluster executor: the login node would import torch for
    nothing), with :data:`ENV` removed from ``environ`` so that no job looks for a server."""
    if not (warm_start and local_exec):
        environ.pop(ENV, None)
        return None
    os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
    return start(path, log, parent)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="warm lthash job server (started by the Snakefile)")
    parser.add_argument("socket", help="Unix socket path to serve on")
    parser.add_argument("--parent", type=int, help="exit when this process (the workflow) is gone")
    parser.add_argument("--idle", type=float, default=600.0, help="exit after this many seconds without a job")
    args = parser.parse_args()
    sys.exit(serve(args.socket, args.parent, args.idle))

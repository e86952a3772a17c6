"""The warm job server (lthash.forkserver): same outputs as a plain command, the job's files,
exit codes and signals, and a plain run when no server answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from lthash import forkserver

SPLIT = {"dataset": {"name": "digits"},
         "split": {"seed": 3, "query_per_class": 5, "train_per_class": 40, "database_per_class": 60,
                   "longtail": {"profile": "zipf", "imbalance_factor": 8}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forkserver")
    path = str(folder / "s.sock")
    process = forkserver.start(path, str(folder / "server.log"), os.getpid())
    deadline = time.time() + 120
    while not os.path.exists(path):
        assert process.poll() is None and time.time() < deadline, (folder / "server.log").read_text()
        time.sleep(0.2)
    yield path, process
    process.terminate()
    process.wait(timeout=30)
    assert not os.path.exists(path)


def lthash(args, cwd, socket_path=None, **kwargs):
    env = {**os.environ}
    env.pop(forkserver.ENV, None)
    if socket_path:
        env[forkserver.ENV] = socket_path
    return subprocess.Popen([sys.executable, "-m", "lthash.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_main_hands_the_command_to_the_server_only_when_run_as_the_command(server, tmp_path):
    """``python -m lthash.cli`` passes argv=None like the installed ``lthash`` command does."""
    path, process = server
    params = json.dumps(SPLIT)
    outs = {}
    for name, socket_path in (("warm", path), ("plain", None)):
        job = lthash(["split", "--out", "split.h5", "--summary", "split.json", "--params", params, "--threads", "1"],
                     _folder(tmp_path / name), socket_path)
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err
        assert "split written" in err  # the job's own stderr carries the stage's log
        outs[name] = tmp_path / name / "split.h5"
    with h5py.File(outs["warm"]) as warm, h5py.File(outs["plain"]) as plain:
        for group in ("train", "query", "database"):
            assert np.array_equal(warm[group]["images"][:], plain[group]["images"][:])
            assert np.array_equal(warm[group]["index"][:], plain[group]["index"][:])
    assert psutil.Process(process.pid).children() == []


def test_errors_keep_their_exit_code_and_message(server, tmp_path):
    path, _ = server
    job = lthash(["encode", "--model", "nowhere", "--split", "x.h5", "--out", "c.h5"], tmp_path, path)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 2 and "nowhere is not a finished training run" in err
    job = lthash(["encode", "--no-such-flag"], tmp_path, path)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 2 and "the following arguments are required: --model" in err


def test_a_signal_to_the_job_stops_its_child_and_a_dead_job_takes_its_child_along(server, tmp_path):
    """The child blocks reading its params from a FIFO nobody writes: only a signal ends it."""
    path, process = server
    for how in (signal.SIGTERM, signal.SIGKILL):
        fifo = tmp_path / f"params-{how}.json"
        os.mkfifo(fifo)
        job = lthash(["split", "--out", "split.h5", "--params", f"@{fifo}", "--threads", "1"], tmp_path, path)
        deadline = time.time() + 60
        while not psutil.Process(process.pid).children() and time.time() < deadline:
            time.sleep(0.01)
        assert psutil.Process(process.pid).children(), "no child was forked"
        job.send_signal(how)
        job.wait(timeout=60)
        assert job.returncode in (-how, 128 + how)
        deadline = time.time() + 30
        while psutil.Process(process.pid).children() and time.time() < deadline:
            time.sleep(0.05)
        assert psutil.Process(process.pid).children() == []
        assert not (tmp_path / "split.h5").exists()


def test_no_server_means_a_plain_run(tmp_path):
    job = lthash(["encode", "--model", "nowhere", "--split", "x.h5", "--out", "c.h5"], tmp_path,
                 str(tmp_path / "no-server.sock"))
    _, err = job.communicate(timeout=120)
    assert job.returncode == 2 and "nowhere is not a finished training run" in err


def test_the_workflow_starts_a_server_only_where_it_runs_jobs_itself(tmp_path):
    """A cluster executor (every job submitted) gets no server and its jobs no socket to look for;
    a local one with warm_start gets a server that answers."""
    socket_path, log = str(tmp_path / "w.sock"), str(tmp_path / "logs" / "forkserver.log")
    for warm_start, local_exec in ((True, False), (False, True)):
        environ = {forkserver.ENV: socket_path}
        assert forkserver.start_for_workflow(warm_start, local_exec, socket_path, log, os.getpid(), environ) is None
        assert environ == {} and not Path(log).exists()
    environ = {forkserver.ENV: socket_path}
    server = forkserver.start_for_workflow(True, True, socket_path, log, os.getpid(), environ)
    try:
        assert environ == {forkserver.ENV: socket_path} and Path(log).exists()
        deadline = time.time() + 120
        while not os.path.exists(socket_path) and time.time() < deadline and server.poll() is None:
            time.sleep(0.1)
        assert os.path.exists(socket_path), Path(log).read_text()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path

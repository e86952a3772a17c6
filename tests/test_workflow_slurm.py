"""The cluster profile (workflow/profiles/slurm) through the real SLURM executor plugin.

Three tests:

* ``test_slurm_profile_sbatch_lines`` (CI, seconds): a folder of stand-in SLURM commands
  goes first on PATH. The stand-in ``sbatch`` appends its full argv (and stdin) to a JSON
  record, runs the job it was given synchronously with the environment a batch job has
  (``SLURM_JOB_ID``, ``SLURM_CPUS_PER_TASK``, ``SLURM_GPUS`` ...), writes the job's log to
  ``--output`` and stores COMPLETED or FAILED for ``sacct``/``squeue``. So the whole plugin
  path runs for real: snakemake -> plugin -> sbatch -> the plugin's job step
  (``--executor slurm-jobstep``) -> ``srun`` (stand-in, recorded) -> the rule's shell
  command -> status polling with ``squeue`` (the profile's status command) -> output
  checks; the login node's snakemake starts no warm server. ``sacctmgr`` answers the
  account check, ``scontrol``/``sinfo`` what the plugin asks about the cluster.
  The rule's own command is the only thing replaced: a stand-in ``lthash`` on the same PATH
  creates the paths given to ``--out``/``--summary``/``--figure`` (a file when the name has a
  suffix, else a folder), because this test is about the submission, not the stages (they
  have their own tests), and a CPU and a GPU rule must both be submitted in seconds.
  The target is one real-data run's model, so ``split`` (CPU) is submitted, then
  ``balanced`` (GPU) once split's outputs exist; the test asserts on both sbatch lines.

* ``test_a_cancelled_job_is_seen_and_retried_within_the_run`` (CI): the stand-in cancels the
  first ``split`` job before it runs, recording the state each command would show (sacct
  "CANCELLED by 0", squeue "CANCELLED"); the run resubmits it and finishes.

* ``test_slurm_profile_real_cluster`` (opt-in: ``LTHASH_TEST_SLURM=1 pytest -m slow``,
  root only, about 2 minutes): starts a real single-node SLURM with
  ``../shared/tools/slurm-up.sh`` beside the repository (or ``$LTHASH_SLURM_UP``; partitions
  cpu and gpu, account ``harness``; stopped
  again afterwards unless it was already up), runs ``split`` through the profile with the
  real ``lthash split``, then ``balanced`` with the stand-in ``lthash`` (its memory capped
  at the node's), and checks the outputs and what ``sacct`` recorded: COMPLETED, the
  partition, time limit, memory, CPUs, and ``gres/gpu=1`` for the GPU rule only.

The account is set the way the profile's header tells users to: in the profile itself
(a ``--default-resources`` on the command line would replace the profile's whole
default-resources block, dropping the partition, runtime and memory defaults).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("snakemake")
pytest.importorskip("snakemake_executor_plugin_slurm")
pytest.importorskip("snakemake_executor_plugin_slurm_jobstep")

from lthash.config import validate_config  # noqa: E402
import lthash.workflow as lw  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROFILE = "workflow/profiles/slurm"
ACCOUNT = "testacct"

# The sbatch options the profile plus the rules must produce (besides --job-name, --output,
# --comment, -D and --wrap, checked separately). split: rule declares threads 1, mem_mb 8000,
# runtime 60; partition from the profile's default-resources. balanced: everything from
# the profile's set-resources / set-threads (they override the rule's 8000 MB / 240 min).
EXPECTED = {
    "split": {
        "-A": ACCOUNT,
        "-p": "cpu",
        "-t": "60",
        "--mem": "8000",
        "--ntasks": "1",
        "--cpus-per-task": "1",
    },
    "balanced": {
        "-A": ACCOUNT,
        "-p": "gpu",
        "-t": "480",
        "--mem": "8000",  # mem_mb "8000 * attempt": the first attempt
        "--gpus": "1",
        "--cpus-per-task": "8",
    },
}
# Flags that would make a second GPU request, or ask for GPUs on a CPU job.
GPU_FLAGS = ("--gres", "--gpus", "--gpus-per-task", "--gpus-per-node", "--gpus-per-socket",
             "--cpus-per-gpu", "--mem-per-gpu", "-G")


# ------------------------------------------------------------------------------------
# stand-in SLURM
# ------------------------------------------------------------------------------------

FAKE_SLURM = r'''#!@PYTHON@
"""Stand-in SLURM command (sbatch, srun, sacct, squeue, sacctmgr, sshare, sinfo, scontrol,
scancel): dispatches on its own name, keeps state in STATE (JSON lines, flock-guarded)."""
import fcntl, json, os, shlex, subprocess, sys, time
from pathlib import Path

STATE = Path(@STATE@)
ACCOUNTS = @ACCOUNTS@
PARTITIONS = ("cpu", "gpu")


def locked(fn):
    with open(STATE / "lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return fn()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append(name, record):
    def write():
        with open(STATE / name, "a") as f:
            f.write(json.dumps(record) + "\n")
    locked(write)


def read(name):
    path = STATE / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def new_job_id():
    def bump():
        path = STATE / "next_id"
        job_id = int(path.read_text()) if path.exists() else 4001
        path.write_text(str(job_id + 1))
        return job_id
    return locked(bump)


def options(argv):
    """sbatch-style argv -> (dict of last value per option, positional args)."""
    takes_value = {"-A", "-p", "-t", "-D", "-J", "-o", "-e", "-c", "-n", "-N", "-C", "-G",
                   "--job-name", "--output", "--error", "--comment", "--mem", "--account",
                   "--partition", "--time", "--chdir", "--wrap", "--gres", "--gpus",
                   "--clusters", "-M", "--name", "--starttime", "--endtime"}
    opts, positional, i = {}, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
            opts[key] = value
        elif arg in takes_value and i + 1 < len(argv):
            opts[arg] = argv[i + 1]
            i += 1
        elif arg.startswith("-") and not positional:
            opts[arg] = True
        else:
            positional.append(arg)
        i += 1
    return opts, positional


def sbatch(argv):
    stdin = sys.stdin.read() if not sys.stdin.isatty() else ""
    job_id = new_job_id()
    opts, positional = options(argv)
    append("sbatch.jsonl", {"argv": argv, "stdin": stdin, "cwd": os.getcwd(), "jobid": job_id,
                            "t": time.time()})
    name = opts.get("--job-name") or opts.get("-J") or "sbatch"
    workdir = opts.get("-D") or opts.get("--chdir") or os.getcwd()
    log = opts.get("--output") or opts.get("-o") or f"slurm-{job_id}.out"
    log = Path(workdir, log.replace("%j", str(job_id)))
    log.parent.mkdir(parents=True, exist_ok=True)
    cpus = opts.get("--cpus-per-task") or opts.get("-c") or "1"
    env = dict(os.environ)
    env.update({
        "SLURM_JOB_ID": str(job_id), "SLURM_JOBID": str(job_id), "SLURM_JOB_NAME": name,
        "SLURM_CPUS_PER_TASK": str(cpus), "SLURM_NTASKS": str(opts.get("--ntasks", 1)),
        "SLURM_JOB_PARTITION": str(opts.get("-p", "cpu")),
        "SLURM_JOB_ACCOUNT": str(opts.get("-A", "")), "SLURM_SUBMIT_DIR": os.getcwd(),
        "SLURM_CLUSTER_NAME": "standin", "SLURM_JOB_NODELIST": "standin-node",
    })
    if opts.get("--gpus"):
        env["SLURM_GPUS"] = str(opts["--gpus"])
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(int(str(opts["--gpus"]).split(":")[-1])))
    if "--wrap" in opts:
        cmd, script = ["/bin/sh", "-c", opts["--wrap"]], None
    elif positional and positional[0] != "/dev/stdin":
        cmd, script = ["/bin/sh", positional[0]], None
    else:
        cmd, script = ["/bin/sh", "-s"], stdin
    append("jobs.jsonl", {"jobid": job_id, "name": name, "state": "RUNNING"})
    cancel = STATE / "cancel_first"  # a rule whose first job is cancelled before it runs
    comment = str(opts.get("--comment", ""))
    if cancel.exists() and comment.startswith(f"rule_{cancel.read_text().strip()}"):
        cancel.unlink()
        append("jobs.jsonl", {"jobid": job_id, "name": name, "state": "CANCELLED by 0", "t": time.time()})
        print(job_id if "--parsable" in opts else f"Submitted batch job {job_id}")
        return 0
    with open(log, "w") as out:
        rc = subprocess.run(cmd, input=script, text=True, cwd=workdir, env=env,
                            stdout=out, stderr=subprocess.STDOUT).returncode
    append("jobs.jsonl", {"jobid": job_id, "name": name,
                          "state": "COMPLETED" if rc == 0 else "FAILED", "exit": rc,
                          "t": time.time()})
    print(job_id if "--parsable" in opts else f"Submitted batch job {job_id}")
    return 0


def srun(argv):
    # options first (with or without =), then the command; "sh -s" reads the script on stdin
    takes_value = {"-n", "-c", "-N", "-J", "--jobid", "--ntasks", "--nodes", "-G", "--gpus"}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in takes_value else 1
    command = argv[i:]
    keep = {k: v for k, v in os.environ.items() if k.startswith("SLURM_")}
    append("srun.jsonl", {"argv": argv, "command": command, "slurm_env": keep, "t": time.time()})
    if not command:
        print("srun: fatal: no command given", file=sys.stderr)
        return 1
    return subprocess.run(command).returncode


def states():
    latest = {}
    for record in read("jobs.jsonl"):
        latest[record["jobid"]] = record
    return latest.values()


def sacct(argv):
    append("sacct.jsonl", {"argv": argv})
    opts, _ = options(argv)
    if "-o" in argv or "Account" in str(opts.get("--format", "")):
        print(ACCOUNTS[0])  # the plugin's account guess (sacct -nu USER -o Account)
        return 0
    if "-j" in argv:
        return 0  # failure reasons: nothing more to say
    return print_states(opts.get("--name"))


def squeue(argv):
    append("squeue.jsonl", {"argv": argv})
    opts, _ = options(argv)
    return print_states(opts.get("--name"), squeue=True)


def print_states(name, squeue=False):
    """``jobid|state`` of every job (of the one named ``name``, when given), as sacct and squeue
    print them: sacct says who cancelled a job ("CANCELLED by 0"), squeue's %T the state alone."""
    for job in states():
        if name is None or job["name"] == name:
            state = job["state"].split()[0] if squeue else job["state"]
            print(f"{job['jobid']}|{state}")
    return 0


def sacctmgr(argv):
    append("sacctmgr.jsonl", {"argv": argv})
    for account in ACCOUNTS:
        print(f"{account:>256}")
    return 0


def sinfo(argv):
    print("PARTITION")
    for i, partition in enumerate(PARTITIONS):
        print(partition + ("*" if i == 0 else ""))
    return 0


def scontrol(argv):
    if argv[:2] == ["show", "config"]:
        print("Configuration data as of 2026-01-01T00:00:00")
        print("ClusterName             = standin")
        print("MaxArraySize            = 1001")
        print("MinJobAge               = 300 sec")
        return 0
    if argv[:2] == ["show", "partition"]:
        for partition in PARTITIONS:
            print(f"PartitionName={partition}\n   MaxTime=UNLIMITED MaxNodes=UNLIMITED\n"
                  "   TotalCPUs=8 TotalNodes=1\n   TRES=cpu=8,mem=64000M,node=1"
                  + (",gres/gpu=2" if partition == "gpu" else "") + "\n")
        return 0
    return 0


def scancel(argv):
    append("scancel.jsonl", {"argv": argv})
    return 0


COMMANDS = {"sbatch": sbatch, "srun": srun, "sacct": sacct, "squeue": squeue,
            "sacctmgr": sacctmgr, "sshare": sacctmgr, "sinfo": sinfo, "scontrol": scontrol,
            "scancel": scancel}

if __name__ == "__main__":
    sys.exit(COMMANDS[Path(sys.argv[0]).name](sys.argv[1:]))
'''

# The rule commands' stand-in: creates what the rule asked for, records how it was called.
FAKE_LTHASH = r'''#!@PYTHON@
import json, os, sys, time
from pathlib import Path

STATE = Path(@STATE@)
argv = sys.argv[1:]
with open(STATE / "lthash.jsonl", "a") as f:
    f.write(json.dumps({"argv": argv, "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "t": time.time()}) + "\n")
for i, arg in enumerate(argv[:-1]):
    if arg in ("--out", "--summary", "--figure"):
        path = Path(argv[i + 1])
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"stand-in output of lthash " + " ".join(argv[:1]).encode())
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "stand-in").write_text(argv[0])
'''


def _render(template: str, state: Path, accounts: list[str]) -> str:
    return (template.replace("@PYTHON@", sys.executable)
            .replace("@STATE@", repr(str(state)))
            .replace("@ACCOUNTS@", repr(list(accounts))))


def make_fake_slurm(root: Path, accounts: list[str], with_lthash: bool = True,
                    with_slurm: bool = True) -> tuple[Path, Path]:
    """Write the stand-in commands into root/bin; return (bin folder, state folder)."""
    bin_dir, state = root / "bin", root / "state"
    bin_dir.mkdir(parents=True)
    state.mkdir(parents=True)
    if with_slurm:
        tool = bin_dir / "fake_slurm.py"
        tool.write_text(_render(FAKE_SLURM, state, accounts))
        tool.chmod(0o755)
        for name in ("sbatch", "srun", "sacct", "squeue", "sacctmgr", "sshare", "sinfo",
                     "scontrol", "scancel"):
            (bin_dir / name).symlink_to(tool.name)
    if with_lthash:
        lthash = bin_dir / "lthash"
        lthash.write_text(_render(FAKE_LTHASH, state, accounts))
        lthash.chmod(0o755)
    return bin_dir, state


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------
# workflow copy and helpers
# ------------------------------------------------------------------------------------

def copy_workflow(dest: Path, account: str, profile_overrides: dict | None = None) -> Path:
    """The workflow as a user checks it out, with the account filled into the slurm profile
    (as the profile's header asks) and optional top-level profile keys changed."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("workflow", "envs"):
        shutil.copytree(REPO / name, dest / name,
                        ignore=shutil.ignore_patterns("__pycache__", ".snakemake"))
    profile_file = dest / PROFILE / "config.yaml"
    profile = yaml.safe_load(profile_file.read_text())
    profile["default-resources"]["slurm_account"] = account
    profile.update(profile_overrides or {})
    profile_file.write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def first_real_run_model(workdir: Path) -> str:
    """The model folder of the first run of the balanced arm (real data, rule ``balanced``) the config asks for."""
    config = validate_config(yaml.safe_load((workdir / "config.yaml").read_text()))
    for run in lw.runs(config):
        if run.arm == "balanced":
            return f"{run.directory(config['results'])}/model"
    pytest.skip("the default config has no run of the balanced arm")


def clean_env(path_first: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SNAKEMAKE_PROFILE"))}
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_snakemake(workdir: Path, targets: list[str], env: dict, timeout: float,
                  extra: list[str] = ()) -> subprocess.CompletedProcess:
    # targets first: --default-resources/--set-resources style options take several values
    cmd = [sys.executable, "-m", "snakemake", *targets, "--profile", PROFILE,
           "--slurm-init-seconds-before-status-checks", "1", *extra]
    return subprocess.run(cmd, cwd=workdir, env=env, text=True, capture_output=True,
                          timeout=timeout)


def sbatch_options(argv: list[str]) -> tuple[dict, list[str]]:
    """The plugin's sbatch argv -> ({option: value}, every option name in order)."""
    with_value = {"--job-name", "--output", "--comment", "-A", "-p", "-t", "--mem", "-D",
                  "-C", "--clusters", "--mem-per-cpu", "-G", "--gres"}
    opts, names, i = {}, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            key, value = arg.split("=", 1)
        elif arg in with_value:
            key, value = arg, argv[i + 1]
            i += 1
        else:
            key, value = arg, True
        assert key not in opts, f"sbatch option {key} given twice: {argv}"
        opts[key] = value
        names.append(key)
        i += 1
    return opts, names


def submissions_by_rule(records: list[dict]) -> dict[str, tuple[dict, list[str], dict]]:
    out = {}
    for record in records:
        opts, names = sbatch_options(record["argv"])
        rule = str(opts["--comment"]).removeprefix("rule_").split("_wildcards_")[0]
        assert rule not in out, f"rule {rule} submitted twice: {records}"
        out[rule] = (opts, names, record)
    return out


def show(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-8000:]}"


# ------------------------------------------------------------------------------------
# 1. stand-in SLURM (CI)
# ------------------------------------------------------------------------------------

def test_slurm_profile_sbatch_lines(tmp_path):
    started = time.monotonic()
    workdir = copy_workflow(tmp_path / "wf", ACCOUNT)
    bin_dir, state = make_fake_slurm(tmp_path / "slurm", [ACCOUNT, "otheracct"])
    target = first_real_run_model(workdir)

    result = run_snakemake(workdir, [target], clean_env(bin_dir), timeout=180,
                           extra=["--latency-wait", "5"])
    assert result.returncode == 0, show(result)

    by_rule = submissions_by_rule(read_jsonl(state / "sbatch.jsonl"))
    assert set(by_rule) == {"split", "balanced"}, by_rule.keys()

    job_names = set()
    for rule, expected in EXPECTED.items():
        opts, names, record = by_rule[rule]
        line = shlex.join(["sbatch", *record["argv"]])
        # the resource options: exactly the expected values
        for key, value in expected.items():
            assert str(opts.get(key)) == value, f"{rule}: {key} should be {value}: {line}"
        # plumbing the plugin relies on
        assert opts["--parsable"] is True and opts["--export"] == "ALL", line
        assert Path(opts["-D"]).resolve() == workdir.resolve(), line
        assert f"/rule_{rule}/" in opts["--output"] and opts["--output"].endswith("%j.log"), line
        wrap = opts["--wrap"]
        assert "--executor slurm-jobstep" in wrap and f"{rule}:" in wrap, line
        job_names.add(opts["--job-name"])
        # nothing else snuck in (e.g. a qos, a constraint, slurm_extra)
        allowed = set(expected) | {"--parsable", "--job-name", "--output", "--export",
                                   "--comment", "-D", "--wrap"}
        assert set(names) <= allowed, f"{rule}: unexpected options {set(names) - allowed}: {line}"
        print(f"{rule}: {line[:line.index('--wrap')]}--wrap=...")

    # one GPU request for the GPU rule, none for the CPU rule
    gpu_opts, _, _ = by_rule["balanced"]
    assert [k for k in GPU_FLAGS if k in gpu_opts] == ["--gpus"], "double or missing GPU request"
    cpu_opts, _, _ = by_rule["split"]
    assert not [k for k in GPU_FLAGS if k in cpu_opts], "CPU rule asks for a GPU"
    # one workflow run: one job name (the plugin's run id, used by sacct --name)
    assert len(job_names) == 1, job_names

    # the jobs really ran: the plugin's job step called srun with the allocation's
    # resources inside the job, the rule's command ran there, sacct was asked
    srun_calls = read_jsonl(state / "srun.jsonl")
    assert len(srun_calls) == 2, srun_calls
    steps = {}
    for call in srun_calls:
        command = " ".join(call["command"])
        rule = "balanced" if "balanced:" in command else "split"
        steps[rule] = call
    assert "--gpus=1" in steps["balanced"]["argv"], steps["balanced"]["argv"]
    # inside the job, snakemake scales threads down to the cores the job's node shows it
    # (here the stand-in "node" is this machine), so the step asks for at most 8
    step_cpus = min(8, len(os.sched_getaffinity(0)))
    assert f"--cpus-per-task={step_cpus}" in steps["balanced"]["argv"], steps["balanced"]["argv"]
    assert not any(a.startswith("--gpus") for a in steps["split"]["argv"]), steps["split"]["argv"]
    ran = [c["argv"][0] for c in read_jsonl(state / "lthash.jsonl")]
    assert ran == ["split", "train"], ran
    job_ids = {r["jobid"] for r in read_jsonl(state / "sbatch.jsonl")}
    seen = {str(r["slurm_job_id"]) for r in read_jsonl(state / "lthash.jsonl")}
    assert seen == {str(j) for j in job_ids}, (seen, job_ids)
    # job states come from squeue (the profile's slurm-status-command)
    assert any("--name" in c["argv"] for c in read_jsonl(state / "squeue.jsonl")), "squeue never polled"
    # every job was submitted: the login node's snakemake started no warm server
    assert not (workdir / "results" / "logs" / "forkserver.log").exists()
    assert any(ACCOUNT in " ".join(c["argv"]) or "list" in c["argv"]
               for c in read_jsonl(state / "sacctmgr.jsonl")), "account never validated"
    assert (workdir / target).is_dir()
    print(f"stand-in SLURM run took {time.monotonic() - started:.1f} s")


def imported_modules(workdir: Path, *mode: str) -> set[str]:
    """Top-level modules a dry run of ``split`` imports while Snakemake reads the workflow
    in ``workdir`` (``mode``: extra Snakemake arguments, e.g. a cluster job's ``--mode remote``)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "snakemake", *mode, "--dry-run",
                             "--allowed-rules", "split", "--forcerun", "split", "results/data/split.h5"],
                            cwd=workdir, capture_output=True, text=True, env=clean_env(), timeout=120)
    assert result.returncode == 0, show(result)
    return {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()
            if line.startswith("import time:")}


def test_a_cluster_jobs_snakemake_reads_the_workflow_without_torch(tmp_path):
    """Each cluster job starts Snakemake twice (the batch script and its job step), and each
    reads the workflow: the checks that refuse a config before any job (the method registry's
    class logits, which import torch; the shipped base's file hashes) run where the run starts,
    not in every job. The default config asks for both (a logit-adjusted arm, a shipped base)."""
    workdir = copy_workflow(tmp_path / "wf", ACCOUNT)
    assert "torch" in imported_modules(workdir)
    assert "torch" not in imported_modules(workdir, "--mode", "remote")


def test_a_cancelled_job_is_seen_and_retried_within_the_run(tmp_path):
    """A job cancelled before it ran (sacct: "CANCELLED by 0", which plugin 2.8.0 never takes
    for an end) is seen through the profile's squeue status check and submitted again, with the
    next attempt's memory, in the same invocation."""
    set_resources = yaml.safe_load((REPO / PROFILE / "config.yaml").read_text())["set-resources"]
    set_resources["split"] = {"mem_mb": "2000 * attempt"}  # as the profile sizes its GPU rules
    workdir = copy_workflow(tmp_path / "wf", ACCOUNT, profile_overrides={"set-resources": set_resources})
    bin_dir, state = make_fake_slurm(tmp_path / "slurm", [ACCOUNT])
    (state / "cancel_first").write_text("split")
    result = run_snakemake(workdir, ["results/data/split.h5"], clean_env(bin_dir), timeout=240,
                           extra=["--latency-wait", "5"])
    assert result.returncode == 0, show(result)
    jobs = [sbatch_options(record["argv"])[0] for record in read_jsonl(state / "sbatch.jsonl")]
    assert [str(opts["--comment"]).split("_wildcards_")[0] for opts in jobs] == ["rule_split", "rule_split"]
    assert [opts["--mem"] for opts in jobs] == ["2000", "4000"]
    assert [c["argv"][0] for c in read_jsonl(state / "lthash.jsonl")] == ["split"]
    assert (workdir / "results" / "data" / "split.h5").exists()


def test_slurm_profile_rejects_unknown_account(tmp_path):
    """The plugin validates the profile's account with sacctmgr before submitting."""
    workdir = copy_workflow(tmp_path / "wf", "CHANGE_ME")
    bin_dir, state = make_fake_slurm(tmp_path / "slurm", [ACCOUNT])
    result = run_snakemake(workdir, ["results/data/split.h5"], clean_env(bin_dir), timeout=120,
                           extra=["--retries", "0"])
    assert result.returncode != 0, show(result)
    assert "appears to be invalid" in result.stdout + result.stderr, show(result)
    assert read_jsonl(state / "sbatch.jsonl") == []


# ------------------------------------------------------------------------------------
# 2. a real single-node SLURM (opt-in)
# ------------------------------------------------------------------------------------

#: the harness, found beside the repository (``../shared/tools``), not at a machine's path
SLURM_UP = Path(os.environ.get("LTHASH_SLURM_UP", REPO.parent / "shared" / "tools" / "slurm-up.sh"))


def sacct_row(job_id: str, env: dict) -> list[str]:
    """The finished job's accounting row (slurmdbd may lag a little behind slurmctld)."""
    fmt = ("--format=JobID,Partition,Account,State,ExitCode,Timelimit,ReqMem,ReqCPUS,"
           "AllocTRES%80")
    for _ in range(60):
        sacct = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, fmt],
                               capture_output=True, text=True, env=env)
        if "COMPLETED" in sacct.stdout or "FAILED" in sacct.stdout:
            break
        time.sleep(0.5)
    print(sacct.stdout.strip())
    rows = sacct.stdout.strip().splitlines()
    assert rows, f"sacct knows no job {job_id}: {sacct.stderr}"
    return rows[0].split("|")


def submitted(result: subprocess.CompletedProcess) -> dict[str, tuple[str, str]]:
    """rule -> (sbatch line without --wrap, SLURM job id), from snakemake --verbose output."""
    out, line = {}, None
    for text in (result.stdout + result.stderr).splitlines():
        if "sbatch call:" in text:
            line = text[text.index("sbatch call:") + len("sbatch call:"):text.index("--wrap")].split()
        elif "has been submitted with SLURM jobid" in text and line is not None:
            rule = line[line.index("--comment") + 1].removeprefix("rule_").split("_wildcards_")[0]
            out[rule] = (" ".join(line), text.split("SLURM jobid ")[1].split()[0])
            line = None
    return out


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("LTHASH_TEST_SLURM") != "1",
                    reason="real SLURM test: set LTHASH_TEST_SLURM=1 (root; installs and starts SLURM)")
def test_slurm_profile_real_cluster(tmp_path):
    """split (CPU, the real `lthash split`) and balanced (GPU, stand-in `lthash`) through
    the profile on a real single-node SLURM with partitions cpu and gpu, account harness."""
    if os.geteuid() != 0:
        pytest.skip("slurm-up.sh must run as root")
    if not SLURM_UP.exists():
        pytest.skip(f"{SLURM_UP} not found")
    was_up = _cluster_up()
    up = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, timeout=900)
    assert up.returncode == 0, up.stderr[-4000:]
    try:
        _run_on_real_cluster(tmp_path)
    finally:
        if not was_up:  # leave a cluster someone else started alone
            subprocess.run(["bash", str(SLURM_UP.with_name("slurm-down.sh"))],
                           capture_output=True, text=True, timeout=300)


def _cluster_up() -> bool:
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "is UP" in ping.stdout


def _run_on_real_cluster(tmp_path: Path) -> None:
    env = clean_env()
    if subprocess.run(["lthash", "split", "--help"], env=env, capture_output=True).returncode != 0:
        pytest.skip("`lthash split` does not exist yet")

    # The GPU rule asks for more memory than this one node may have: cap it at the
    # node's memory in the copy (everything else exactly as the profile says).
    node_mem = int(subprocess.run(["sinfo", "-h", "-p", "gpu", "-o", "%m"], env=env,
                                  capture_output=True, text=True).stdout.split()[0].rstrip("+"))
    profile = yaml.safe_load((REPO / PROFILE / "config.yaml").read_text())
    set_resources = profile["set-resources"]
    first_attempt = int(str(set_resources["balanced"]["mem_mb"]).replace("* attempt", ""))
    gpu_mem = min(first_attempt, node_mem)
    set_resources["balanced"]["mem_mb"] = gpu_mem
    workdir = copy_workflow(tmp_path / "wf", "harness", profile_overrides={
        "retries": 0, "latency-wait": 10, "set-resources": set_resources})

    # 1. split, CPU partition, the real command
    result = run_snakemake(workdir, ["results/data/split.h5"], env, timeout=900,
                           extra=["--verbose"])
    assert result.returncode == 0, show(result)
    for name in ("split.h5", "split.json", "class_distribution.png"):
        assert (workdir / "results/data" / name).stat().st_size > 0, name
    line, job_id = submitted(result)["split"]
    print(line, "--wrap=...")
    for option in ("-A harness", "-p cpu", "-t 60", "--mem 8000", "--cpus-per-task=1"):
        assert f" {option} " in f"{line} ", (option, line)
    assert "--gpus" not in line and "--gres" not in line, line
    row = sacct_row(job_id, env)
    assert row[:8] == [job_id, "cpu", "harness", "COMPLETED", "0:0", "01:00:00", "8000M", "1"], row
    assert "gres/gpu" not in row[8], row

    # 2. balanced, GPU partition; its command is the stand-in (training has its own tests)
    # only lthash is stood in; sbatch, sacct ... are the real ones
    bin_dir, state = make_fake_slurm(tmp_path / "standin", [], with_slurm=False)
    target = first_real_run_model(workdir)
    result = run_snakemake(workdir, [target], clean_env(bin_dir), timeout=900,
                           extra=["--verbose"])
    assert result.returncode == 0, show(result)
    assert (workdir / target).is_dir()
    line, job_id = submitted(result)["balanced"]
    print(line, "--wrap=...")
    for option in ("-A harness", "-p gpu", "-t 480", f"--mem {gpu_mem}", "--cpus-per-task=8",
                   "--gpus=1"):
        assert f" {option} " in f"{line} ", (option, line)
    assert "--gres" not in line, line
    row = sacct_row(job_id, env)
    assert row[:8] == [job_id, "gpu", "harness", "COMPLETED", "0:0", "08:00:00", f"{gpu_mem}M", "8"], row
    assert "gres/gpu=1" in row[8], row
    (call,) = read_jsonl(state / "lthash.jsonl")
    assert call["argv"][0] == "train" and call["slurm_job_id"] == job_id, call
    assert call["cuda_visible_devices"] not in (None, ""), "the job got no GPU"


# ------------------------------------------------------------------------------------
# 3. the reduced chain from the repository root: dry run, groups, threads (stand-in SLURM)
# ------------------------------------------------------------------------------------

REDUCED = "workflow/configs/reduced.yaml"
#: the CPUs a stand-in job's snakemake sees (its "node" is this machine), so the threads it runs with
JOB_CPUS = min(8, len(os.sched_getaffinity(0)))


def reduced_config() -> dict:
    from snakemake.utils import update_config

    merged = yaml.safe_load((REPO / "config.yaml").read_text())
    update_config(merged, yaml.safe_load((REPO / REDUCED).read_text()))
    return validate_config(merged)


def test_the_reduced_config_runs_from_the_repository_root_through_the_profile(tmp_path):
    """`snakemake -n --profile workflow/profiles/slurm --configfile workflow/configs/reduced.yaml`
    in a checkout's root, as the README says (tests/configs/tiny.yaml merged so was refused)."""
    workdir = copy_workflow(tmp_path / "wf", "CHANGE_ME")  # as shipped: a dry run checks no account
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", PROFILE,
                             "--configfile", REDUCED], cwd=workdir, env=clean_env(), text=True,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, show(result)
    stats = result.stdout + result.stderr
    for rule in ("split", "base", "plan", "balanced", "encode", "score", "report"):
        assert f"\n{rule} " in stats, (rule, show(result))
    assert "results/reduced/data/split.h5" in stats


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Path:
    """A checkout whose reduced chain has its real split and plan (a local run, one core)."""
    workdir = copy_workflow(tmp_path_factory.mktemp("planned") / "wf", ACCOUNT)
    plan = f"{reduced_config()['results']}/generate/plan.json"
    result = subprocess.run([sys.executable, "-m", "snakemake", plan, "--cores", "1", "--configfile",
                             REDUCED, "--config", "warm_start=False"], cwd=workdir, env=clean_env(),
                            text=True, capture_output=True, timeout=300)
    assert result.returncode == 0, show(result)
    return workdir


def safetensors_load(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def copy_planned(planned: Path, dest: Path) -> Path:
    shutil.copytree(planned, dest, symlinks=True)
    return dest


def test_a_local_run_with_the_cluster_profiles_threads_trains_the_clusters_bytes(planned, tmp_path):
    """The README's way to reproduce a cluster run's tables: the local profile with the SLURM
    profile's threads per rule. One training job through the SLURM profile (stand-in sbatch, the
    real `lthash train`, with the threads the job's node gives it) and through
    workflow/profiles/local-slurm-threads with those CPUs write the same weights, byte for byte."""
    cluster, local = copy_planned(planned, tmp_path / "cluster"), copy_planned(planned, tmp_path / "local")
    target = next(f"{run.directory(reduced_config()['results'])}/model" for run in lw.runs(reduced_config())
                  if run.arm == "balanced")
    bin_dir, _ = make_fake_slurm(tmp_path / "slurm", [ACCOUNT], with_lthash=False)
    result = run_snakemake(cluster, [target], clean_env(bin_dir), timeout=300,
                           extra=["--configfile", REDUCED, "--latency-wait", "5"])
    assert result.returncode == 0, show(result)
    result = subprocess.run([sys.executable, "-m", "snakemake", target, "--profile",
                             "workflow/profiles/local-slurm-threads", "--cores", str(JOB_CPUS),
                             "--configfile", REDUCED, "--config", "warm_start=False"],
                            cwd=local, env=clean_env(), text=True, capture_output=True, timeout=300)
    assert result.returncode == 0, show(result)
    for workdir in (cluster, local):
        assert json.loads((workdir / target / "run.json").read_text())["threads"] == JOB_CPUS
    # the tensors' bytes (the file's metadata header lists its keys in no fixed order)
    weights = [safetensors_load(workdir / target / "model.safetensors") for workdir in (cluster, local)]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert tensor.dtype == weights[1][name].dtype and tensor.tobytes() == weights[1][name].tobytes(), name

"""Start-up cost of every ``lthash`` stage command, against a bare interpreter in the same run.

Every row is a fresh process (lthash's CLI run by ``python -c``, so no launcher script is
timed), the run of ``--repeats`` with the least CPU time (user + system of the child: on a
shared machine what it would take alone), with its wall time. Reference: ``python -c pass``;
the ratio columns are each row's times over its times. Rows:

- ``<stage> --help`` for every stage: the parser alone (what every job pays before its work);
- floors: ``import torch`` and torch + the diffusers UNet + transformers CLIP classes, what a
  model-running stage cannot avoid paying (diffusers and transformers both import torch._dynamo);
- real small invocations on a temporary workspace built from Fashion-MNIST: ``split``, ``plan``,
  ``resample``, ``score`` and ``synthesize`` of one small image-to-image shard from a concept
  folder (the base's UNet as the concept's, so nothing is trained). For ``synthesize`` the
  drawing seconds it logs are subtracted: ``overhead`` = wall - drawing, the per-job cost;
- ``load_concept``: imports + rebuilding the personalised model, timed inside one process;
- ``warm:`` rows: ``score`` and ``synthesize`` again, each handed to a warm server
  (:mod:`lthash.forkserver`, what a local workflow run starts) that has the libraries imported:
  wall time only (the work is done in the server's child, so the client's CPU says nothing).

``heavy`` lists which of torch / diffusers / transformers / numba each command imported.

    python benchmarks/bench_startup.py [--repeats 3] [--images 32]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "diffusers", "transformers", "numba")
BASE = Path(__file__).resolve().parent.parent / "lthash" / "models" / "fashion-mnist-class-names"
# Runs lthash's CLI and records the heavy modules it imported (written at exit).
CLI = ("import atexit, json, os, sys\n"
       "atexit.register(lambda: open(os.environ['BENCH_MODULES'], 'w').write(json.dumps("
       f"[m for m in {HEAVY!r} if m in sys.modules])))\n"
       "from lthash.cli import main\n"
       "sys.argv[0] = 'lthash'\n"
       "sys.exit(main())\n")
LOAD = ("import sys, time\n"
        "start = time.perf_counter()\n"
        "from lthash.generate.concepts import load_concept\n"
        "load_concept(sys.argv[1], sys.argv[2])\n"
        "print(time.perf_counter() - start)\n")
DRAWN = re.compile(r"(\d+) images \(of \d+ candidates\) in ([0-9.]+) s")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str, list[str]]:
    """(wall s, CPU s, output, heavy modules imported) of one run; fails loudly on a non-zero exit."""
    modules = cwd / "modules.json"
    modules.unlink(missing_ok=True)
    cpu, start = children_cpu(), time.perf_counter()
    done = subprocess.run(command, env=dict(env, BENCH_MODULES=str(modules)), cwd=cwd, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall, cpu, done.stderr + done.stdout, json.loads(modules.read_text()) if modules.exists() else []


def best(command: list[str], env: dict[str, str], cwd: Path, repeats: int,
         before=None) -> tuple[float, float, str, list[str]]:
    """The run of ``repeats`` with the least CPU time (``before()`` runs ahead of each, untimed)."""
    runs = []
    for _ in range(repeats):
        if before is not None:
            before()
        runs.append(timed(command, env, cwd))
    return min(runs, key=lambda run: run[1])


def make_workspace(root: Path, env: dict[str, str], images: int) -> dict[str, str]:
    """Split, plan, codes file and a concept folder under ``root``; returns the --params texts."""
    import numpy as np

    from lthash.evaluate.codes import CodeSet, pack_codes, write_codes
    from lthash.generate.concepts import write_concept
    from lthash.generate.models import load_components
    from lthash.io import read_image_set

    params = {
        "split": json.dumps({"dataset": {"name": "fashion-mnist"},
                             "split": {"train_per_class": 100, "query_per_class": 20, "database_per_class": 200,
                                       "validation_per_class": 0}}),
        "plan": json.dumps({"generate": {"seed": 0, "synthesis": {"pretrain_per_class": images,
                                                                  "shard_size": images}}}),
        "resample": json.dumps({"generate": {"seed": 0}}),
        "score": json.dumps({"evaluate": {"topk": ["all", 100]}}),
        "synthesize": json.dumps({"generate": {"seed": 0, "synthesis": {"init": "real", "strength": 0.7}}}),
    }
    subprocess.run([sys.executable, "-c", CLI, "split", "--out", "split.h5", "--params", params["split"]],
                   env=dict(env, BENCH_MODULES=str(root / "modules.json")), cwd=root, check=True, capture_output=True)
    rng = np.random.default_rng(0)
    centres = rng.integers(0, 2, (10, 32)).astype(bool)
    sets = {}
    for group in ("database", "query"):
        members = read_image_set(root / "split.h5", group, load_images=False)
        bits = centres[members.labels] ^ (rng.random((len(members), 32)) < 0.25)
        sets[group] = CodeSet(codes=pack_codes(bits), labels=members.labels, index=members.index, bits=32)
    write_codes(root / "codes.h5", sets)
    components = load_components(BASE)
    category = "clothing"
    row = components.text_encoder.get_input_embeddings().weight[
        components.tokenizer(category, add_special_tokens=False).input_ids[0]]
    write_concept(root / "concept", {"method": "attndreambooth", "class_index": 3, "class_name": "Dress",
                                     "token": "<v3>", "category": category,
                                     "prompt": f"a photo of a <v3> {category}"}, row, components.unet)
    return params


def synthesis_rows(prefix: str, row, cli: list[str], params: dict[str, str], images: int,
                   shard: Path) -> tuple[str, float, float, list[str], str]:
    """Time one small image-to-image shard job (a row named ``<prefix>synthesize``); returns the
    row of its overhead: wall minus the drawing seconds the job logs."""
    wall, output = row(f"{prefix}synthesize ({images} images, img2img)", cli + [
        "synthesize", "--model", "concept", "--base", str(BASE), "--class", "3", "--purpose", "pretrain",
        "--shard", "0", "--plan", "plan.json", "--split", "split.h5", "--out", str(shard), "--device", "cpu",
        "--params", params["synthesize"], "--threads", "1"], before=lambda: shard.unlink(missing_ok=True))
    drawn = DRAWN.search(output)
    drawing = float(drawn.group(2)) if drawn else float("nan")
    return (f"{prefix}synthesize overhead (wall - drawing)", wall - drawing, float("nan"), [],
            f"drawing {drawing:.2f} s wall")


def warm_rows(root: Path, env: dict[str, str], cli: list[str], params: dict[str, str], args: argparse.Namespace,
              shard: Path, row) -> tuple[str, float, float, list[str], str]:
    """score and synthesize through a warm server started for them (rows named ``warm: ...``);
    returns the row of the synthesis job's overhead."""
    from lthash import forkserver

    socket_path = str(root / "warm.sock")
    server = forkserver.start(socket_path, str(root / "warm.log"), os.getpid())
    try:
        deadline = time.time() + 300
        while not os.path.exists(socket_path):
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"the warm server did not start: {(root / 'warm.log').read_text()[-2000:]}")
            time.sleep(0.1)
        env[forkserver.ENV] = socket_path
        row("warm: score (32 bits)", cli + ["score", "--codes", "codes.h5", "--split", "split.h5", "--out",
                                            "metrics.json", "--csv", "metrics.csv", "--params", params["score"],
                                            "--threads", "1"], note="wall; CPU is the server child's")
        return synthesis_rows("warm: ", row, cli, params, args.images, shard)
    finally:
        env.pop(forkserver.ENV, None)
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=32, help="images of the synthesize shard")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", LTHASH_THREADS="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONPATH=os.pathsep.join(filter(None, [
                   str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")])))
    python = sys.executable
    rows: list[tuple[str, float, float, list[str], str]] = []
    with tempfile.TemporaryDirectory(prefix="lthash-startup-") as tmp:
        root = Path(tmp)
        ref_wall, ref_cpu, _, _ = best([python, "-c", "pass"], env, root, args.repeats)

        def row(name: str, command: list[str], note: str = "", before=None) -> tuple[float, str]:
            wall, cpu, output, heavy = best(command, env, root, args.repeats, before)
            rows.append((name, wall, cpu, heavy, note))
            return wall, output

        from lthash.cli import build_parser

        stages = sorted(build_parser()._subparsers._group_actions[0].choices)
        for stage in stages:
            row(f"{stage} --help", [python, "-c", CLI, stage, "--help"])
        row("floor: import torch", [python, "-c", "import torch"])
        row("floor: torch + diffusers UNet + transformers CLIP",
            [python, "-c", "import torch\nfrom diffusers import UNet2DConditionModel, DDIMScheduler\n"
                           "from transformers import CLIPTextModel, CLIPTokenizer"])
        params = make_workspace(root, env, args.images)
        cli = [python, "-c", CLI]
        row("split (Fashion-MNIST, small)", cli + ["split", "--out", "split2.h5", "--params", params["split"],
                                                   "--threads", "1"])
        row("plan", cli + ["plan", "--split-summary", "split.json", "--out", "plan.json",
                           "--params", params["plan"], "--threads", "1"])
        row("resample (one shard)", cli + ["resample", "--split", "split.h5", "--plan", "plan.json", "--class", "3",
                                           "--purpose", "pretrain", "--shard", "0", "--out", "resampled.h5",
                                           "--params", params["resample"], "--threads", "1"])
        row("score (32 bits)", cli + ["score", "--codes", "codes.h5", "--split", "split.h5", "--out", "metrics.json",
                                      "--csv", "metrics.csv", "--params", params["score"], "--threads", "1"])
        shard = root / "shard.h5"
        rows.append(synthesis_rows("", row, cli, params, args.images, shard))
        rows.append(warm_rows(root, env, cli, params, args, shard, row))
        loads = [float(subprocess.run([python, "-c", LOAD, "concept", str(BASE)], env=env, cwd=root, check=True,
                                      capture_output=True, text=True).stdout.split()[-1]) for _ in range(args.repeats)]
        rows.append(("load_concept in-process (imports + load)", min(loads), float("nan"), [], "wall"))

    print(f"reference python -c pass: {ref_wall:.3f} s wall, {ref_cpu:.3f} s CPU (least CPU of {args.repeats}); "
          "1 thread")
    print(f"{'command':48s} {'wall s':>7s} {'ratio':>6s} {'CPU s':>7s} {'ratio':>6s}  heavy imports / note")
    for name, wall, cpu, heavy, note in rows:
        print(f"{name:48s} {wall:7.2f} {wall / ref_wall:6.1f} {cpu:7.2f} {cpu / ref_cpu:6.1f}  "
              f"{','.join(heavy) or '-'} {note}".rstrip())


if __name__ == "__main__":
    main()

# Helpers shared by all stages: run matrix, plan-driven shard lists, paths.

import os

RUNS = lw.runs(config)
GENERATORS = config["experiment"]["generators"] if lw.uses_synthetic(config) else []
BASE_IS_TINY = config["generate"].get("base", {}).get("model", "tiny") == "tiny"
BASE_DIR = f"{R}/generate/base" if BASE_IS_TINY else config["generate"]["base"]["model"]
HEAVY = {"gpu": 1} if DEVICE.startswith("cuda") else {}

if GENERATORS and not BASE_IS_TINY and not os.path.isdir(BASE_DIR):
    raise WorkflowError(
        f"config key 'generate.base.model': {BASE_DIR} is not a folder (a local Stable "
        "Diffusion checkpoint in diffusers format, or 'tiny')"
    )




def plan_file():
    """The balancing plan; a checkpoint, so shard lists are known once it exists."""
    return checkpoints.plan.get().output.plan


def shard_files(generator, purpose, cls=None):
    """Every shard the plan asks of one generator and purpose (one class, or all)."""
    plan = lw.read_plan(plan_file())
    files = []
    for entry in plan["classes"]:
        if cls is not None and int(entry["index"]) != int(cls):
            continue
        for shard in range(len(entry[purpose]["shards"])):
            files.append(
                f"{R}/generate/{generator}/shards/{purpose}/class{entry['index']}/shard{shard}.h5"
            )
    return files


def run_dir(w):
    """The run folder named by the wildcards of a run-level rule."""
    return f"{R}/runs/{w.arm}/{w.method}-{w.backbone}-{w.bits}"


def run_params(w):
    return lw.shell_json(**lw.hashing_params(config, w.method, w.backbone, w.bits))


def mix_shards(w):
    return shard_files(w.generator, "mix")


def pretrain_shards(w):
    return shard_files(w.generator, "pretrain")

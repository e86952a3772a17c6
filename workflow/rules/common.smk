# Helpers shared by all stages: run matrix, plan-driven shard lists, paths.

import os
from functools import partial

RUNS = lw.runs(config)
GENERATORS = config["experiment"]["generators"] if lw.uses_generators(config) else []
JOINT_GENERATORS = [g for g in GENERATORS if g in joint_names()]
BASE_DIR, BASE_IS_TINY = base_folder(config["generate"]["base"]["model"], R)
HEAVY = {"gpu": 1} if DEVICE.startswith("cuda") else {}


# A job that nothing else can run beside (the base every generator waits for, the filter
# judge every filtered shard waits for) takes all the cores the run was given; a cluster
# profile's set-threads wins.
def all_cores():
    """--cores of this run; 1 where Snakemake was given none (--report, --lint, a cluster)."""
    try:
        cores = workflow.cores
    except WorkflowError:
        return 1
    return cores if isinstance(cores, int) and cores > 0 else 1


ALL_CORES = all_cores()

if GENERATORS and not BASE_IS_TINY and not os.path.isdir(BASE_DIR):
    raise WorkflowError(
        f"config key 'generate.base.model': {BASE_DIR} is not a folder (a local Stable "
        "Diffusion checkpoint in diffusers format, 'tiny', or package:<name> for a shipped base)"
    )


def plan_file():
    """The balancing plan; a checkpoint, so shard lists are known once it exists."""
    return checkpoints.plan.get().output.plan


def plan_classes():
    """Every class index of the balancing plan, in order."""
    return [int(entry["index"]) for entry in lw.read_plan(plan_file())["classes"]]


def shard_files(source, purpose, cls=None):
    """Every shard the plan asks of one source (<generator>/<synthesis> or resampled) and purpose."""
    return lw.plan_shards(lw.read_plan(plan_file()), R, source, purpose, cls)


def arm_shards(arm, wildcards):
    """The shards a training job of ``arm`` trains on (none for real-only arms)."""
    if arm.shards is None:
        return []
    source = (
        wildcards.source
        if arm is lw.PRETRAIN
        else lw.shard_source(
            arm, wildcards.get("generator"), wildcards.get("synthesis")
        )
    )
    return shard_files(source, arm.shards)


def arm_init(arm, wildcards):
    return lw.init_folder(R, arm, wildcards)


def arm_params(arm, wildcards):
    return lw.params(config, arm.name, wildcards)


def arm_tags(arm, wildcards):
    return lw.identity_tags(lw.job_identity(arm, wildcards))


def run_tags(wildcards):
    """--tag options of a score job: the identity of its run in the experiment (never its path)."""
    run = lw.find_run(
        config,
        wildcards.label,
        wildcards.method,
        wildcards.backbone,
        wildcards.bits,
        wildcards.seed,
    )
    return lw.identity_tags(run.identity())

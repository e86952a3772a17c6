# lthash: long-tail deep hashing with personalised diffusion data.
# Run:  snakemake --cores all            (embedded default: Fashion-MNIST on CPU)
#       snakemake --cores all --configfile workflow/configs/<experiment>.yaml
# Rules only wire `lthash <stage>` commands; the logic lives in the lthash package.

import os
import tempfile

from snakemake.utils import min_version

min_version("8.0")

from lthash.config import validate_config
from lthash.errors import LthashError
from lthash import forkserver
from lthash.generate.corpus import check_prompt_words
from lthash.generate.shipped import base_folder, check_base_choice, materialise_base
from lthash.generate.personalize.method import joint_names
import lthash.workflow as lw
from lthash.report.home import home_page


configfile: "config.yaml"


try:
    lw.check_experiment(config)
    config = validate_config(config)
    config = check_prompt_words(config)
    # What refuses a config before any job runs once, where the run starts: a cluster job's
    # own Snakemake (remote mode, twice per job: the batch script and its job step) skips it,
    # since these checks import torch and hash the shipped base's files (seconds per job).
    if not workflow.remote_exec:
        lw.check_matrix(config)
        check_base_choice(config)
except LthashError as error:
    raise WorkflowError(str(error)) from None

R = config["results"]
try:
    os.makedirs(R, exist_ok=True)
except OSError as error:
    raise WorkflowError(
        f"config key 'results': cannot create the results folder {R}: {error.strerror}"
    ) from None
# Jobs read a shipped base from its verified copy in the results folder, never from the
# package: no input depends on where the package or the project lives.
try:
    materialise_base(config)
except LthashError as error:
    raise WorkflowError(str(error)) from None

ENV = "../../envs/lthash.yaml"  # relative to the rule files
DEVICE = config["device"]
# Jobs read the device and the other runtime-only keys (lthash.workflow.RUNTIME) from the
# environment, not params, so moving a run from CPU to GPU or changing an inference batch
# size does not invalidate finished results.
os.environ["LTHASH_DEVICE"] = DEVICE
# cpu_isa's kernel pins (the same floats on every x86-64 CPU) travel the same way.
lw.export_runtime_env(config)


# Local jobs hand their command to one warm server with torch, diffusers and numba imported
# (lthash.forkserver; started below when the first job is about to run, and only where this
# process runs jobs itself: not on a cluster's login node); a job that finds no server runs in
# its own process.
FORKSERVER = os.path.join(tempfile.gettempdir(), f"lthash-{os.getpid()}.sock")
WARM = []
if config["warm_start"]:
    os.environ[forkserver.ENV] = FORKSERVER
else:
    os.environ.pop(forkserver.ENV, None)


onstart:
    server = forkserver.start_for_workflow(
        config["warm_start"],
        workflow.local_exec,
        FORKSERVER,
        f"{R}/logs/forkserver.log",
        os.getpid(),
    )
    if server is not None:
        WARM.append(server)


onsuccess:
    for server in WARM:
        server.terminate()


onerror:
    for server in WARM:
        server.terminate()


envvars:
    "LTHASH_DEVICE",
    *lw.runtime_env(config),


# The report's first page is the abstract the report stage writes from the scored runs
# (lthash.report.home); before it exists, workflow/report/workflow.rst.
report: home_page(R, workflow.basedir)


GENERATOR_NAMES = "|".join(lw.field_values()["generator"])
SYNTHESIS_NAMES = "|".join(lw.field_values()["synthesis"])


wildcard_constraints:
    generator=GENERATOR_NAMES,
    synthesis=SYNTHESIS_NAMES,
    source=f"{lw.RESAMPLED}|(?:{GENERATOR_NAMES})/(?:{SYNTHESIS_NAMES})",
    purpose="pretrain|mix",
    cls=r"\d+",
    shard=r"\d+",
    label=r"[a-z0-9_-]+",
    method=r"[a-z0-9_]+",
    backbone=r"[a-z0-9_]+",
    bits=r"\d+",
    seed=r"\d+",


localrules:
    plan,
    report,


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/hashing.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# The base a run trains, and the filter judge, are targets of their own: everything that needs
# them lies behind the plan checkpoint, so they would join the DAG only after the plan, when
# 1-core jobs hold a core, and a job of all cores would not fit again until every real-data arm
# was done.
rule all:
    default_target: True
    input:
        f"{R}/report.md",
        rules.report.output.home,
        BASE_DIR if GENERATORS and BASE_IS_TINY else [],
        FILTER_JUDGE if GENERATORS and FILTERING else [],

"""What the Snakefile needs from the package: the arms, the run matrix, paths, and which
config keys every rule reads.

Rules only wire; every decision about which runs exist and which config a stage reads is
made here, so it is testable without Snakemake:

* :mod:`.arms`: :data:`ARMS` (and the shared pretraining stage :data:`PRETRAIN`), one entry
  per hashing arm with its kind and title, from which the training rules, the run folders
  and the report's run list come; :func:`runs`, the run matrix (seeds included).
* :mod:`.paths`: every path a rule or the report needs.
* :mod:`.reads`: :data:`READS`, the config paths each rule reads (a rule's ``params`` are
  exactly those paths, and each stage's CLI refuses keys no rule of that stage reads).
"""

from lthash.workflow.arms import (  # noqa: F401
    Arm,
    PRETRAIN_NAME,
    PRETRAIN,
    ARMS,
    TRAINING,
    RESAMPLED,
    ARM_KINDS,
    Run,
    shard_source,
    runs,
    find_run,
    check_experiment,
    check_matrix,
    uses_generators,
    shard_sources,
    generated_sources,
    job_identity,
    identity_tags,
)
from lthash.workflow.paths import (  # noqa: F401
    MODEL,
    SEED,
    RUN_MODEL,
    RUN_CODES,
    RUN_PROFILE,
    RUN,
    LABELLED_MODEL,
    model_folder,
    plan_path,
    concept_folder,
    generator_model,
    generator_models,
    joint_folder,
    knowledge_files,
    knowledge_path,
    quality_path,
    quality_files,
    shard_path,
    plan_shards,
    init_folder,
)
from lthash.generate.plan import read_plan  # noqa: F401,E402
from lthash.workflow.reads import (  # noqa: F401
    shell_json,
    SHALLOW_METHODS,
    METHOD_SECTION,
    SYNTHESIS_MODE_KEYS,
    READS,
    SETS,
    RUNTIME,
    STAGE_OF_RULE,
    STAGE_ONLY_READS,
    TOP_LEVEL,
    JOB_FIELDS,
    rule_params,
    params,
    runtime_env,
    export_runtime_env,
    runtime_setting,
    reads_key,
    param_jobs,
    generate_params,
    field_values,
    stage_jobs,
    stage_reads,
    stage_roots,
    nest_params,
    check_stage_params,
    parse_params,
    stage_config,
)

"""Every path a rule or the report needs, built in one place (rules use these or ``rules.x.output``).

Patterns hold Snakemake wildcards in braces (``{method}``, ``{seed}``, ...); functions fill
them for one job. Nothing here depends on where the project lives: every path is relative
to the results folder the config names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from lthash.workflow.arms import Arm

#: A seed's folder under a run's method-backbone-bits folder.
SEED = "seed{seed}"
#: A trained model's folder under its arm's folder: one per method x backbone x bits x seed.
MODEL = "{method}-{backbone}-{bits}/" + SEED
#: What a seed folder of a finished run holds: the trained model (``lthash train``) and the
#: codes of the split's sets by it (``lthash encode``), which ``lthash search --run`` reads.
RUN_MODEL = "model"
RUN_CODES = "codes.h5"
#: The search's nearest-neighbour profile of the codes (lthash.evaluate.neighbours.profile_path).
RUN_PROFILE = "codes.neighbours.npz"
#: A run's model folder under its label (``label`` = arm[-generator-synthesis]): logs and benchmarks.
LABELLED_MODEL = "{label}/" + MODEL
#: A run's folder under the results folder.
RUN = "runs/" + LABELLED_MODEL


def model_folder(method: str, backbone: str, bits: int | str, seed: int | str) -> str:
    """:data:`MODEL` filled for one model."""
    return MODEL.format(method=method, backbone=backbone, bits=bits, seed=seed)


def plan_path(results: str) -> str:
    """The balancing plan (``lthash plan``): how many shards each class and purpose gets."""
    return f"{results}/generate/plan.json"


def concept_folder(results: str, generator: str, class_index: int | str) -> str:
    """One class's personalised concept of a generator."""
    return f"{results}/generate/{generator}/concepts/class{class_index}"


def joint_folder(results: str, generator: str) -> str:
    """The joint concept folder of a generator that teaches every class in one run (``joint``)."""
    return f"{results}/generate/{generator}/joint"


def generator_model(results: str, generator: str, class_index: int | str, base_dir: str) -> str:
    """What synthesis draws a class from: the concept folder of a per-class personalising
    generator, the joint concept folder of a joint one (every class), the base folder itself
    for ``base`` (no personalise job)."""
    from lthash.generate.personalize.method import joint_names, personalised_names

    if generator in joint_names():
        return joint_folder(results, generator)
    return concept_folder(results, generator, class_index) if generator in personalised_names() else base_dir


def generator_models(results: str, generator: str, class_indices, base_dir: str) -> list[str]:
    """The distinct folders a generator draws its classes from, in class order (one for
    ``base`` and joint generators, one per class otherwise)."""
    models = [generator_model(results, generator, c, base_dir) for c in class_indices]
    return list(dict.fromkeys(models))


def knowledge_path(results: str, generator: str) -> str:
    """What a generator knows of the classes before synthesis (``lthash knowledge``)."""
    return f"{results}/generate/{generator}/knowledge.json"


def measures_knowledge(config: Mapping[str, Any]) -> bool:
    """Whether the run measures what its generators know: the quality stage is on and the split
    holds validation images to measure on (``split.validation_per_class`` > 0)."""
    return bool(config["experiment"]["quality"]) and int(config["split"]["validation_per_class"]) > 0


def knowledge_files(config: Mapping[str, Any]) -> list[str]:
    """The knowledge measure of every generator the experiment draws from (none when
    :func:`measures_knowledge` is false)."""
    from lthash.workflow.arms import generated_sources

    if not measures_knowledge(config):
        return []
    generators = list(dict.fromkeys(g for g, _ in generated_sources(config)))
    return [knowledge_path(config["results"], g) for g in generators]


def quality_path(results: str, generator: str, synthesis: str) -> str:
    """The quality stage's metrics of one generator x synthesis mode."""
    return f"{results}/generate/{generator}/{synthesis}/quality.json"


def quality_files(config: Mapping[str, Any]) -> list[str]:
    """The quality stage's metrics of every generator x synthesis mode the experiment draws."""
    from lthash.workflow.arms import generated_sources

    return [quality_path(config["results"], g, s) for g, s in generated_sources(config)]


def shard_path(results: str, source: str, purpose: str, class_index: int | str, shard: int | str) -> str:
    """Path of one shard file of a source (``<generator>/<synthesis>`` or ``resampled``)."""
    return f"{results}/generate/{source}/shards/{purpose}/class{class_index}/shard{shard}.h5"


def plan_shards(plan: Mapping[str, Any], results: str, source: str, purpose: str,
                class_index: int | str | None = None) -> list[str]:
    """Every shard file the plan asks of one source and purpose (one class, or all)."""
    files = []
    for entry in plan["classes"]:
        if class_index is not None and int(entry["index"]) != int(class_index):
            continue
        files += [shard_path(results, source, purpose, entry["index"], k) for k in range(len(entry[purpose]["shards"]))]
    return files


def init_folder(results: str, arm: "Arm", wildcards: Mapping[str, Any]) -> list[str]:
    """The model folder a job of ``arm`` starts from (``[]`` when it starts from scratch)."""
    from lthash.workflow.arms import TRAINING, shard_source

    if arm.init is None:
        return []
    source = shard_source(arm, wildcards.get("generator"), wildcards.get("synthesis"))
    model = model_folder(wildcards["method"], wildcards["backbone"], wildcards["bits"], wildcards["seed"])
    return [f"{results}/{TRAINING[arm.init].folder.format(source=source)}/{model}/{RUN_MODEL}"]

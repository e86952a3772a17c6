"""The workflow's config surface: experiment names match the registries and the arms table, shipped configs validate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lthash.config import load_config, validate_config
from lthash.workflow import runs

ROOT = Path(__file__).resolve().parents[1]


def test_experiment_enums_equal_the_registries():
    from lthash.hashing.backbones import BACKBONES
    from lthash.hashing.methods import REGISTRY

    schema = yaml.safe_load((ROOT / "lthash/schemas/experiment.schema.yaml").read_text())
    assert set(schema["properties"]["methods"]["items"]["enum"]) == set(REGISTRY)
    assert set(schema["properties"]["backbones"]["items"]["enum"]) == set(BACKBONES)
    hashing = yaml.safe_load((ROOT / "lthash/schemas/hashing.schema.yaml").read_text())
    assert set(hashing["$defs"]["method_name"]["enum"]) == set(REGISTRY)
    assert set(hashing["$defs"]["backbone_name"]["enum"]) == set(BACKBONES)


@pytest.mark.parametrize("path", sorted((ROOT / "workflow/configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_experiment_configs_validate(path):
    config = load_config(path)
    assert runs(config), f"{path.name} asks for no runs"


def test_default_config_asks_for_every_arm_at_32_and_64_bits_and_three_seeds():
    config = load_config(ROOT / "config.yaml")
    labels = {(run.label, run.bits, run.seed) for run in runs(config)}
    assert labels == {(arm, bits, seed) for arm in ("balanced", "longtail", "class_balanced", "logit_adjusted",
                                                    "resampled", "augmented-attndreambooth-noise",
                                                    "augmented-attndreambooth-real")
                      for bits in (32, 64) for seed in (0, 1, 2)}


def test_a_config_setting_hashing_seed_is_refused_naming_experiment_seeds():
    from lthash.errors import LthashError
    from lthash.workflow import check_experiment

    with pytest.raises(LthashError, match=r"'hashing.seed'.*experiment.seeds: \[3\]"):
        check_experiment({"hashing": {"seed": 3}})
    check_experiment({"hashing": {"lr": 1}})


def test_a_logit_adjusted_arm_with_a_method_without_class_logits_is_refused_naming_the_key():
    from lthash.errors import LthashError
    from lthash.workflow import check_matrix

    config = load_config(ROOT / "config.yaml")
    check_matrix(config)
    config["experiment"]["methods"] = ["orthohash", "csq"]
    with pytest.raises(LthashError, match=r"config key 'experiment.arms' is 'logit_adjusted', but csq has no class"):
        check_matrix(config)
    config["experiment"]["arms"] = ["longtail", "class_balanced"]
    check_matrix(config)


def test_each_seed_is_its_own_run_folder_and_sets_hashing_seed():
    config = load_config(ROOT / "config.yaml")
    folders = {run.directory("results") for run in runs(config)}
    assert len(folders) == len(runs(config))
    run = next(r for r in runs(config) if r.arm == "longtail" and r.seed == 2)
    assert run.directory("results").endswith("/seed2") and run.identity()["seed"] == 2
    from lthash.workflow import rule_params

    job = {"method": run.method, "backbone": run.backbone, "bits": str(run.bits), "seed": "2"}
    assert rule_params(config, "longtail", job)["hashing"]["seed"] == 2
    assert rule_params(config, "longtail", {**job, "seed": "0"})["hashing"]["seed"] == 0
    adjusted = rule_params(config, "logit_adjusted", job)["hashing"]["train"]
    assert adjusted["balance"] == "logit_adjusted" and rule_params(config, "longtail", job)["hashing"]["train"]["balance"] == "none"


def test_arms_table_equals_the_schema_enum():
    from lthash.workflow import ARMS

    schema = yaml.safe_load((ROOT / "lthash/schemas/experiment.schema.yaml").read_text())
    assert schema["properties"]["arms"]["items"]["enum"] == list(ARMS)


def test_the_slurm_profile_gives_every_training_rule_a_gpu_and_threads():
    """A new arm is a new rule: the cluster profile must say where it runs (docs/DEVELOPING.md)."""
    from lthash.workflow import TRAINING

    profile = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    for rule in TRAINING:
        assert profile["set-resources"][rule]["gpu"] == 1, rule
        assert profile["set-threads"][rule] >= 1, rule


def test_the_local_profile_for_cluster_tables_gives_each_rule_the_cluster_profiles_threads():
    """workflow/profiles/local-slurm-threads reproduces a cluster run's tables on a workstation
    (README, SLURM): a job's thread count decides its floats, so its set-threads must be the SLURM
    profile's, and its cores at least the widest of them (a rule's threads are capped at cores)."""
    slurm = yaml.safe_load((ROOT / "workflow/profiles/slurm/config.yaml").read_text())
    local = yaml.safe_load((ROOT / "workflow/profiles/local-slurm-threads/config.yaml").read_text())
    assert local["set-threads"] == slurm["set-threads"]
    assert local["cores"] == max(slurm["set-threads"].values())
    assert "executor" not in local


@pytest.mark.parametrize("path", sorted((ROOT / "workflow/configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_state_their_personalisation_instead_of_inheriting_the_default(path):
    """``--configfile`` is merged over config.yaml, so a shipped config that is silent on
    ``generate.personalize`` would run the default's (the known-class preset with a corpus prior,
    which a Stable Diffusion base with no corpus record refuses): each states its own."""
    import copy

    from snakemake.utils import update_config

    own = yaml.safe_load(path.read_text())
    merged = yaml.safe_load((ROOT / "config.yaml").read_text())
    update_config(merged, copy.deepcopy(own))
    assert load_config(path)["generate"]["personalize"] == validate_config(merged)["generate"]["personalize"]


@pytest.mark.parametrize("path", sorted((ROOT / "workflow/configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_pass_the_snakefiles_checks_as_snakemake_merges_them(path):
    """What the Snakefile checks before any job (seeds, schema, prompt words, run matrix), on the
    config ``snakemake --configfile <path>`` builds: the file merged over config.yaml."""
    from snakemake.utils import update_config

    from lthash.generate.corpus import check_prompt_words
    from lthash.generate.shipped import check_base_choice
    from lthash.workflow import check_experiment, check_matrix

    merged = yaml.safe_load((ROOT / "config.yaml").read_text())
    update_config(merged, yaml.safe_load(path.read_text()))
    check_experiment(merged)
    config = check_prompt_words(validate_config(merged))
    check_matrix(config)
    check_base_choice(config)  # tests/configs/tiny.yaml merged so was refused here (another split)


def test_the_reduced_config_is_the_end_to_end_tests_tiny_chain_as_snakemake_merges_it():
    """``--configfile workflow/configs/reduced.yaml`` from the repository root runs the chain the
    end-to-end test runs (tests/configs/tiny.yaml, alone), in its own results folder: so the
    README's times for the reduced chain are that chain's, and a profile tried on it is tried on
    what the tests run."""
    import copy

    from snakemake.utils import update_config

    merged = yaml.safe_load((ROOT / "config.yaml").read_text())
    update_config(merged, yaml.safe_load((ROOT / "workflow/configs/reduced.yaml").read_text()))
    reduced = validate_config(merged)
    tiny = validate_config(copy.deepcopy(yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())))
    assert reduced.pop("results") == "results/reduced"  # not the default's results folder
    tiny.pop("results")
    assert reduced == tiny

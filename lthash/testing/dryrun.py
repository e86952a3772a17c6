"""What Snakemake would rerun: a dry run through the Snakemake API, counted per rule.

``python -m lthash.testing.dryrun WORKDIR [CONFIGFILE ...] [--targets FILE ...]`` prints, as
JSON, the rule of every job a dry run of the workflow in WORKDIR would (re)run to make the
targets (the default target without them), with the outputs it would (re)create;
``WORKDIR --each CONFIGFILE ...`` one such dry run of the default target per config file.
Rules are named after what they do (``split``, ``synthesize``, an arm such as ``augmented``,
``pretrain``, ``encode``...), so no path is parsed. Run it in a subprocess: the API changes
the working directory and keeps global logging state.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence


def dry_run(workdir: str | Path, configfiles: Sequence[str | Path] = (), targets: Sequence[str] = ()) -> dict:
    """``{"rules": {rule: jobs}, "outputs": [...]}`` of a dry run in ``workdir`` (via a subprocess)."""
    command = [sys.executable, "-m", "lthash.testing.dryrun", str(workdir), *map(str, configfiles)]
    if targets:
        command += ["--targets", *targets]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"dry run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def rules_to_rerun_each(workdir: str | Path, configfiles: Sequence[str | Path]) -> list[Counter]:
    """:func:`rules_to_rerun` of one dry run per config file, all in one subprocess (Snakemake loads once)."""
    command = [sys.executable, "-m", "lthash.testing.dryrun", str(workdir), "--each", *map(str, configfiles)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300 + 60 * len(configfiles))
    if result.returncode != 0:
        raise RuntimeError(f"dry runs failed:\n{result.stderr[-3000:]}")
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    return [Counter({rule: n for rule, n in run["rules"].items() if rule != "all"}) for run in runs]


def rules_to_rerun(workdir: str | Path, configfiles: Sequence[str | Path] = (),
                   targets: Sequence[str] = ()) -> Counter:
    """How many jobs of each rule a dry run would (re)run to make ``targets`` (the ``all`` target not counted)."""
    return Counter({rule: n for rule, n in dry_run(workdir, configfiles, targets)["rules"].items()
                    if rule != "all"})


def _rules_and_outputs(workdir: Path, configfiles: Sequence[Path], targets: Sequence[str] = ()) -> dict:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
        StorageSettings,
    )

    updated: list[str] = []
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=list(configfiles)) if configfiles else ConfigSettings(),
            storage_settings=StorageSettings(),
            snakefile=workdir / "Snakefile",
            workdir=workdir,
        )
        dag = workflow.dag(DAGSettings(targets=frozenset(targets)))
        dag.execute_workflow(executor="local", pseudo_executor="dryrun", updated_files=updated)
        jobs = workflow._workflow.dag.needrun_jobs(exclude_finished=False)  # the dry run marks them finished
        rules = Counter(job.rule.name for job in jobs)
    return {"rules": dict(sorted(rules.items())), "outputs": sorted(set(updated))}


def _main(argv: Sequence[str]) -> None:
    workdir = Path(argv[0]).resolve()
    if argv[1:2] == ["--each"]:
        print(json.dumps([_rules_and_outputs(workdir, [Path(p).resolve()]) for p in argv[2:]]))
    else:
        configfiles, targets = argv[1:], []
        if "--targets" in configfiles:
            at = configfiles.index("--targets")
            configfiles, targets = configfiles[:at], configfiles[at + 1:]
        print(json.dumps(_rules_and_outputs(workdir, [Path(p).resolve() for p in configfiles], targets)))


if __name__ == "__main__":
    _main(sys.argv[1:])

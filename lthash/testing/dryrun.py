"""What Snakemake would rerun: a dry run through the Snakemake API, mapped to stages.

``python -m lthash.testing.dryrun WORKDIR [CONFIGFILE ...]`` prints, as JSON, the outputs a
dry run of the workflow in WORKDIR would (re)create. Run it in a subprocess: the API changes
the working directory and keeps global logging state.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

STAGE_PATTERNS = (
    ("split", r"/data/"),
    ("base", r"/generate/base(_samples\.png)?$"),
    ("plan", r"/generate/plan\.json$"),
    ("personalize", r"/generate/[^/]+/concepts/"),
    ("synthesize", r"/generate/[^/]+/shards/"),
    ("quality", r"/generate/[^/]+/(quality\.json|real_vs_synthetic\.png)$"),
    ("pretrain", r"/pretrain/"),
    ("train", r"/runs/[^/]+/[^/]+/model$"),
    ("encode", r"/codes\.h5$"),
    ("score", r"/runs/[^/]+/[^/]+/(metrics\.json|metrics\.csv|plots)$"),
    ("report", r"/(report\.md|tables/map\.csv)$"),
)


def stage_of(output: str) -> str:
    """The stage that writes ``output`` (a path under the results folder)."""
    for stage, pattern in STAGE_PATTERNS:
        if re.search(pattern, "/" + output):
            return stage
    raise ValueError(f"no stage writes {output}")


def dry_run_outputs(workdir: str | Path, configfiles: Sequence[str | Path] = ()) -> list[str]:
    """Outputs a dry run in ``workdir`` would create, via the Snakemake API in a subprocess."""
    command = [sys.executable, "-m", "lthash.testing.dryrun", str(workdir), *map(str, configfiles)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"dry run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def stages_to_rerun(workdir: str | Path, configfiles: Sequence[str | Path] = ()) -> Counter:
    """How many outputs of each stage a dry run would (re)create."""
    return Counter(stage_of(output) for output in dry_run_outputs(workdir, configfiles))


def _main(argv: Sequence[str]) -> None:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        Quietness,
        ResourceSettings,
        StorageSettings,
    )

    workdir = Path(argv[0]).resolve()
    configfiles = [Path(p).resolve() for p in argv[1:]]
    updated: list[str] = []
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=configfiles) if configfiles else ConfigSettings(),
            storage_settings=StorageSettings(),
            snakefile=workdir / "Snakefile",
            workdir=workdir,
        )
        workflow.dag(DAGSettings()).execute_workflow(
            executor="local", pseudo_executor="dryrun", updated_files=updated)
    print(json.dumps(sorted(set(updated))))


if __name__ == "__main__":
    _main(sys.argv[1:])

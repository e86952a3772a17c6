"""The whole chain through Snakemake on a reduced default, then what edits rerun.

One real run of ``tests/configs/tiny.yaml`` (Fashion-MNIST, tiny base model, AttnDreamBooth,
OrthoHash, the three arms) in a copy of the workflow; then dry runs through the Snakemake
API (``lthash.testing.dryrun``) after config edits, asserting the invalidation contract:
each rule's params carry only the config it reads.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lthash.testing.dryrun import stages_to_rerun
from lthash.testing.faults import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
HASHING_DOWNSTREAM = {"train", "pretrain", "encode", "score", "report"}


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    config = yaml.safe_load(TINY.read_text())
    configfile = write_config(workdir / "tiny.yaml", config)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(configfile)],
        cwd=workdir, capture_output=True, text=True, timeout=1500)
    if result.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-1500:]}" for p in (workdir / "results/logs").rglob("*.log"))
        pytest.fail(f"workflow failed:\n{result.stderr[-4000:]}\n{logs[-6000:]}")
    return workdir, config


def rerun_after(workdir: Path, config: dict, name: str) -> set[str]:
    return set(stages_to_rerun(workdir, [write_config(workdir / name, config)]))


def test_chain_writes_report_with_every_run(finished_run):
    workdir, config = finished_run
    results = workdir / "results"
    report = (results / "report.md").read_text()
    assert "Table 1" in report and "Head / medium / tail" in report
    rows = list(csv.DictReader((results / "tables" / "map.csv").open()))
    arms = {(row["arm"], row["generator"]) for row in rows}
    assert arms == {("balanced", ""), ("longtail", ""), ("augmented", "attndreambooth")}
    for row in rows:
        assert 0.0 < float(row["map"]) <= 1.0
    assert (results / "generate" / "attndreambooth" / "quality.json").exists()
    assert (results / "data" / "class_distribution.png").stat().st_size > 1000


def test_nothing_reruns_after_a_finished_run(finished_run):
    workdir, config = finished_run
    assert rerun_after(workdir, config, "same.yaml") == set()


def test_reordered_keys_rerun_nothing(finished_run):
    workdir, config = finished_run
    reordered = {key: (dict(reversed(list(value.items()))) if isinstance(value, dict) else value)
                 for key, value in reversed(list(config.items()))}
    assert rerun_after(workdir, reordered, "reordered.yaml") == set()


def test_hash_learning_rate_reruns_only_hashing_and_after(finished_run):
    workdir, config = finished_run
    edited = yaml.safe_load(yaml.safe_dump(config))
    edited["hashing"]["train"]["lr"] = 0.0005
    assert rerun_after(workdir, edited, "lr.yaml") == HASHING_DOWNSTREAM


def test_synthesis_count_reruns_synthesis_and_after_but_no_personalisation(finished_run):
    """The plan is a checkpoint: Snakemake knows the shard jobs only once it has rerun, so the
    (cheap) plan job runs for real before the dry run. Kept last: it changes the finished run."""
    workdir, config = finished_run
    edited = yaml.safe_load(yaml.safe_dump(config))
    edited["generate"]["synthesis"]["pretrain_per_class"] += 4
    configfile = write_config(workdir / "count.yaml", edited)
    assert "plan" in rerun_after(workdir, edited, "count.yaml")
    planned = subprocess.run([sys.executable, "-m", "snakemake", "results/generate/plan.json", "--cores", "1",
                              "--configfile", str(configfile)], cwd=workdir, capture_output=True, text=True,
                             timeout=300)
    assert planned.returncode == 0, planned.stderr[-3000:]
    stages = set(stages_to_rerun(workdir, [configfile]))
    assert {"synthesize", "pretrain", "train", "encode", "score", "report"} <= stages
    assert not stages & {"split", "base", "personalize"}


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

"""The whole chain through Snakemake on a reduced default, then what edits rerun.

One real run of ``tests/configs/tiny.yaml`` (Fashion-MNIST, tiny base model, AttnDreamBooth,
OrthoHash, every arm of the default experiment) in a copy of the workflow; then dry runs
through the Snakemake API (``lthash.testing.dryrun``) after config edits, one key of every
config section, asserting the invalidation contract: each rule's params carry only the
config it reads (lthash.workflow.READS), so an edit reruns the rules that read it and what
is downstream of them, and nothing else; and that moving the project or the package reruns
nothing.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lthash.workflow as lw
from lthash.testing.dryrun import rules_to_rerun, rules_to_rerun_each
from lthash.testing.faults import copy_workflow

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
HASHING = {"pretrain", "balanced", "longtail", "class_balanced", "resampled", "augmented"}
SCORING = {"encode", "score", "report"}


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
        cwd=workdir, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-1500:]}" for p in (workdir / "results/logs").rglob("*.log"))
        pytest.fail(f"workflow failed:\n{result.stderr[-4000:]}\n{logs[-6000:]}")
    (workdir / "snakemake.log").write_text(result.stderr)
    return workdir, config


def edited(config: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(config)
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def test_the_base_trained_in_the_run_starts_before_any_real_data_arm(finished_run):
    """The critical path first: the base (all cores, priority 40) is in the DAG from the start and
    starts when the split is done, not after the real-data arms have freed both cores at once."""
    workdir, _ = finished_run
    started = re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", (workdir / "snakemake.log").read_text(), re.M)
    arms = [started.index(arm) for arm in ("balanced", "longtail", "class_balanced") if arm in started]
    assert "base" in started and arms
    assert started.index("base") < min(arms), started[:12]


def test_chain_scores_every_run_with_its_identity(finished_run):
    workdir, config = finished_run
    from lthash.config import validate_config

    from lthash.runtime import cpu_isa_env

    results = workdir / "results"
    runs = lw.runs(validate_config(config))
    pinned = cpu_isa_env(validate_config(config)["cpu_isa"])[0]
    expected_capability = capability_under(pinned)
    assert {run.label for run in runs} == {"balanced", "longtail", "class_balanced", "resampled",
                                           "augmented-attndreambooth-noise"}
    assert {run.seed for run in runs} == {0, 1}
    for run in runs:
        folder = results / "runs" / run.label / run.model_label / f"seed{run.seed}"
        metrics = json.loads((folder / "metrics.json").read_text())
        identity = {k: ("" if v is None else str(v)) for k, v in run.identity().items() if k != "bits"}
        assert metrics["tags"] == identity and metrics["bits"] == run.bits
        record = json.loads((folder / "model" / "run.json").read_text())
        assert record["identity"] == run.identity() and record["seed"] == run.seed
        assert record["cpu_capability"] == expected_capability
        assert 0.0 < metrics["results"][0]["map"] <= 1.0
    resampled = json.loads((results / "runs/resampled/orthohash-cnn-16/seed1/model/run.json").read_text())
    assert resampled["mode"] == "mix" and resampled["init"].endswith("pretrain/resampled/orthohash-cnn-16/seed1/model")
    assert all("/generate/resampled/shards/mix/" in s for s in resampled["synthetic"])
    balanced = json.loads((results / "runs/class_balanced/orthohash-cnn-16/seed0/model/run.json").read_text())
    assert balanced["train"]["sampling"] == "class_balanced" and balanced["group"] == "train"
    seeds = [json.loads((results / f"runs/longtail/orthohash-cnn-16/seed{s}/metrics.json").read_text())
             for s in (0, 1)]
    assert seeds[0]["results"][0]["map"] != seeds[1]["results"][0]["map"]
    assert (results / "report.md").stat().st_size > 0
    assert (results / "generate" / "attndreambooth" / "noise" / "quality.json").exists()


def test_html_report_shows_every_run_figure_table_and_picture(finished_run):
    """``snakemake --report``: each run's PR / P@k / training curves labelled with its identity,
    the report's tables (arms as its score tags say) and the retrieval pictures."""
    import csv
    import re

    from lthash.config import validate_config

    workdir, config = finished_run
    built = subprocess.run([sys.executable, "-m", "snakemake", "--report", "report.html", "--configfile",
                            str(workdir / "tiny.yaml")], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    html = (workdir / "report.html").read_text()
    entries = json.loads(re.search(r"var results = (\{.*?\});\n", html, re.S).group(1)).values()
    shown = {(e["name"], tuple(sorted((e["labels"] or {}).items()))) for e in entries}
    runs = lw.runs(validate_config(config))
    for run in runs:
        labels = tuple(sorted((k, "–" if v is None else str(v)) for k, v in run.identity().items()))
        for figure in ("pr_radius.png", "precision_at_k.png", "curves.png"):
            assert (figure, labels) in shown, (figure, labels)
    names = {name for name, _ in shown}
    assert {"verdict.html", "arms.html", "generator_adds.html", "per_class.html", "timing.html", "report.md"} <= names
    assert "retrieval-orthohash-cnn-16.png" in names and "per_class_ap-orthohash-cnn-16.png" in names
    assert "seeds-orthohash-cnn-16.png" in names
    assert "does synthetic data make the tail classes" in html
    # the first page is the report stage's abstract: the matrix in words, the verdict with its numbers
    assert "<strong>Controls</strong>: longtail" in html and "{'arms'" not in html
    assert "Against the best control of each setting" in html and "95 % CI" in html
    arms = list(csv.DictReader((workdir / "results" / "tables" / "arms.csv").open()))
    # one row per arm and setting, each over every seed of the config
    assert sorted(row["arm_label"] for row in arms) == sorted({run.label for run in runs})
    seeds = " ".join(str(seed) for seed in config["experiment"]["seeds"])
    assert {row["seeds"] for row in arms} == {seeds}


def readme_search_command() -> str:
    """The README's search example, joined into one line."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"### Search by image\n\n```bash\n(.*?)```", readme, re.S).group(1)
    return block.replace("\\\n", " ")


def test_the_readme_search_command_runs_on_a_finished_run(finished_run):
    """As written, with the reduced run's generated arm (16 bits) for the default's: the run folder,
    the first seed said, every answer with how far it is, an inverted query image flagged."""
    from PIL import Image

    from lthash.io import read_image_set

    workdir, _ = finished_run
    command = readme_search_command()
    assert command.startswith("lthash search --run results/runs/augmented-attndreambooth-real/orthohash-cnn-64 ")
    command = command.replace("augmented-attndreambooth-real/orthohash-cnn-64", "augmented-attndreambooth-noise/"
                              "orthohash-cnn-16")
    photos = workdir / "my_photos"
    photos.mkdir()
    query = read_image_set(workdir / "results" / "data" / "split.h5", "query").images
    Image.fromarray(query[0, ..., 0]).save(photos / "clothing.png")
    Image.fromarray(255 - query[1, ..., 0]).save(photos / "inverted.png")
    ran = subprocess.run(["bash", "-c", command], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    run = "results/runs/augmented-attndreambooth-noise/orthohash-cnn-16"
    assert ran.stdout.startswith(f"run {run}: seed 0 ({run}/seed0; seeds 0, 1 here, --seed N picks another)")
    answers = json.loads((workdir / "answers.json").read_text())
    assert answers["run"] == {"folder": run, "seed": 0, "seeds": [0, 1]}
    flags = {Path(q["source"]).name: q["out_of_distribution"] for q in answers["queries"]}
    assert flags == {"clothing.png": False, "inverted.png": True}
    assert all(len(q["results"]) == 10 and all(0 <= r["closer"] <= 1 for r in q["results"]) for q in answers["queries"])
    assert (workdir / "sheet.png").stat().st_size > 0
    assert (workdir / run / "seed0" / "codes.neighbours.npz").exists()


def test_nothing_reruns_after_a_finished_run_or_with_reordered_keys(finished_run):
    workdir, config = finished_run
    reordered = {key: (dict(reversed(list(value.items()))) if isinstance(value, dict) else value)
                 for key, value in reversed(list(config.items()))}
    same, shuffled = rules_to_rerun_each(workdir, [write_config(workdir / "same.yaml", config),
                                                   write_config(workdir / "reordered.yaml", reordered)])
    assert same == {} and shuffled == {}


def test_nothing_reruns_when_the_project_or_the_package_moves(finished_run, tmp_path, monkeypatch):
    """The finished run copied elsewhere (its .snakemake metadata and results with it), and then read
    by lthash installed at another path, has nothing to rerun: no input, param or log names where
    the project or the package lives. A shipped base is read from its verified copy in the results
    folder; one personalisation job on it (the default config's split, the one its corpus is the
    complement of) is checked the same way, and the reinstalled package leaves that copy as it was."""
    import shutil

    from lthash.testing.faults import snapshot

    def times(folder: Path) -> dict[Path, int]:
        return {path.relative_to(folder): path.stat().st_mtime_ns for path in folder.rglob("*")}

    workdir, config = finished_run
    project = tmp_path / "project"
    shutil.copytree(workdir, project, symlinks=True)
    shipped = {**edited(config, "generate.base.model", "package:fashion-mnist-class-names"), "results": "shipped",
               "split": yaml.safe_load((ROOT / "config.yaml").read_text())["split"]}
    write_config(project / "shipped.yaml", shipped)
    concept = "shipped/generate/attndreambooth/concepts/class0"
    ran = subprocess.run([sys.executable, "-m", "snakemake", concept, "--cores", "2", "--configfile", "shipped.yaml"],
                         cwd=project, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    base = Path("shipped/generate/shipped-base/fashion-mnist-class-names")
    assert snapshot(project / base) == snapshot(ROOT / "lthash" / "models" / base.name)

    moved = tmp_path / "moved"
    shutil.copytree(project, moved, symlinks=True)
    copied = times(moved / base)
    assert rules_to_rerun(moved, [moved / "tiny.yaml"]) == {}
    assert rules_to_rerun(moved, [moved / "shipped.yaml"], targets=[concept]) == {}

    site = tmp_path / "site"
    shutil.copytree(ROOT / "lthash", site / "lthash", copy_function=shutil.copyfile,
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.chdir(tmp_path)  # python -c / -m import from the working directory first: not the checkout
    imported = subprocess.run([sys.executable, "-c", "import lthash; print(lthash.__file__)"],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert imported == str(site / "lthash" / "__init__.py")
    assert rules_to_rerun(moved, [moved / "tiny.yaml"]) == {}
    assert rules_to_rerun(moved, [moved / "shipped.yaml"], targets=[concept]) == {}
    assert times(moved / base) == copied


def capability_under(variables: dict[str, str]) -> str:
    """torch's CPU capability in a fresh process with ``variables`` set (the jobs' environment)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                                         "MKL_ENABLE_INSTRUCTIONS")}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env={**env, **variables}, capture_output=True,
                          text=True, check=True).stdout.strip()


#: One key of every config section, and the rules its edit must rerun (downstream included).
EDITS = [
    ("device", "auto", set()),
    ("cpu_isa", "native", set()),
    ("dataset.on_corrupt", "skip", "everything"),
    ("split.seed", 1, "everything"),
    ("generate.personalize.weight_decay", 0.02,
     {"personalize", "synthesize", "quality", "pretrain", "augmented"} | SCORING),
    ("generate.synthesis.strength", 0.5, set()),
    ("hashing.csq.quant_weight", 0.5, set()),
    ("hashing.encode.batch_size", 7, set()),
    ("hashing.train.lr", 0.0005, HASHING | SCORING),
    ("hashing.finetune.lr", 0.0005, {"augmented", "resampled"} | SCORING),
    ("hashing.train.sampling", "class_balanced", HASHING - {"class_balanced"} | SCORING),
    ("evaluate.radius", 1, {"score", "report"}),
    ("experiment.quality", False, {"report"}),
    ("report.title", "another title", {"report"}),
]


def test_each_edit_reruns_what_reads_it_and_nothing_else(finished_run):
    workdir, config = finished_run
    files = [write_config(workdir / f"edit{i}.yaml", edited(config, key, value))
             for i, (key, value, _) in enumerate(EDITS)]
    everything = set(rules_to_rerun(workdir, [write_config(workdir / "fresh.yaml", {**config, "results": "fresh"})]))
    wrong = []
    for (key, value, expected), reran in zip(EDITS, rules_to_rerun_each(workdir, files)):
        expected = everything if expected == "everything" else expected
        if set(reran) != expected:
            wrong.append(f"{key}={value!r}: reran {sorted(reran)}, expected {sorted(expected)}")
    assert not wrong, "\n".join(wrong)


def test_synthesis_count_reruns_synthesis_and_after_but_no_personalisation(finished_run):
    """The plan is a checkpoint: Snakemake knows the shard jobs only once it has rerun, so the
    (cheap) plan job runs for real before the dry run. Kept last: it changes the finished run."""
    workdir, config = finished_run
    count = config["generate"]["synthesis"]["pretrain_per_class"] + 4
    changed = edited(config, "generate.synthesis.pretrain_per_class", count)
    configfile = write_config(workdir / "count.yaml", changed)
    assert "plan" in rules_to_rerun(workdir, [configfile])
    planned = subprocess.run([sys.executable, "-m", "snakemake", "results/generate/plan.json", "--cores", "1",
                              "--configfile", str(configfile)], cwd=workdir, capture_output=True, text=True,
                             timeout=300)
    assert planned.returncode == 0, planned.stderr[-3000:]
    rules = set(rules_to_rerun(workdir, [configfile]))
    assert {"synthesize", "resample", "pretrain", "augmented", "resampled", "encode", "score", "report"} <= rules
    assert not rules & {"split", "base", "personalize", "balanced", "longtail", "class_balanced"}


def test_lint_is_clean_and_every_rule_is_in_the_table():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rules = {line.strip() for line in listed.stdout.splitlines() if line.strip()}
    assert rules == set(lw.READS) | {"all"}

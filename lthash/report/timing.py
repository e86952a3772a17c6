"""How long each stage took, from Snakemake's ``benchmark:`` files.

Every ``*.tsv`` under the benchmarks folder is one job (Snakemake writes one row per repeat;
the rows are summed). The stage is the file's first folder below the benchmarks folder, or
its name for a file directly inside it (``split.tsv`` -> split, ``train/longtail/x.tsv`` ->
train). Wall seconds are Snakemake's ``s`` column, peak memory its ``max_rss`` (MB).

Snakemake writes a benchmark file when its job ends, so a job ran from (file mtime − s) to
its mtime: the run's elapsed time is the last end minus the first start (over the jobs whose
files are there: a partial rerun spans the older jobs too). The critical path is bounded by
:data:`CHAIN`: the longest job of each stage a trained model of the method waits for, summed.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

from lthash.errors import LthashError
from lthash.report.tables import Section, Table


#: The stages one generated-arm model waits for, in order (a stage with no job is skipped).
CHAIN = ("split", "base", "personalize", "synthesize", "train", "encode", "score")


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_benchmarks(folder: str | os.PathLike | None) -> dict[str, dict[str, float]]:
    """stage -> jobs, wall seconds (sum), longest job (s), CPU seconds (sum), peak RSS (MB), and
    the first job's start and the last job's end (epoch seconds); empty when there is no such folder."""
    stages: dict[str, dict[str, float]] = {}
    if folder is None or not Path(folder).is_dir():
        return stages
    root = Path(folder)
    for path in sorted(root.rglob("*.tsv")):
        relative = path.relative_to(root)
        stage = relative.parts[0] if len(relative.parts) > 1 else path.stem
        try:
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle, delimiter="\t"))
        except (OSError, UnicodeDecodeError) as exc:
            raise LthashError(f"{path}: cannot read the benchmark file ({exc})") from exc
        wall = sum(_float(row.get("s")) or 0.0 for row in rows)
        cpu = sum(_float(row.get("cpu_time")) or 0.0 for row in rows)
        rss = max((_float(row.get("max_rss")) or 0.0 for row in rows), default=0.0)
        entry = stages.setdefault(stage, {"jobs": 0, "wall_s": 0.0, "longest_s": 0.0, "cpu_s": 0.0, "max_rss_mb": 0.0,
                                          "first_start": float("inf"), "last_end": 0.0})
        end = path.stat().st_mtime
        entry["first_start"] = min(entry["first_start"], end - wall)
        entry["last_end"] = max(entry["last_end"], end)
        entry["jobs"] += 1
        entry["wall_s"] += wall
        entry["longest_s"] = max(entry["longest_s"], wall)
        entry["cpu_s"] += cpu
        entry["max_rss_mb"] = max(entry["max_rss_mb"], rss)
    return stages


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


SERVER_LINE = re.compile(r"job \d+ \(lthash (\S+)[^)]*\) exit -?\d+, ([0-9.]+) s CPU, (\d+) MB peak")


def add_server_jobs(stages: dict[str, dict[str, float]], log: str | os.PathLike | None) -> int:
    """Add the CPU time and peak memory of the jobs the warm server ran (its log, one line a
    job: :mod:`lthash.forkserver`) to their stages: Snakemake's benchmark of such a job measures
    only the job's own process. Returns how many jobs the log names."""
    if log is None or not Path(log).is_file():
        return 0
    count = 0
    for match in SERVER_LINE.finditer(Path(log).read_text(errors="replace")):
        stage = match.group(1).replace("-", "_")
        if stage in stages:
            stages[stage]["cpu_s"] += float(match.group(2))
            stages[stage]["max_rss_mb"] = max(stages[stage]["max_rss_mb"], float(match.group(3)))
            count += 1
    return count


def timing_table(folder: str | os.PathLike | None, server_log: str | os.PathLike | None = None) -> Table:
    """The stages, longest first, with a total (job time summed, not elapsed: jobs overlap)."""
    stages = read_benchmarks(folder)
    warm = add_server_jobs(stages, server_log)
    table = Table(
        name="timing", title="How long each stage took",
        intro=("From Snakemake's benchmark files: wall time of every job of a stage, summed (jobs "
               "that ran side by side count each), the longest single job, CPU time and peak memory. "
               "Jobs of rules without a benchmark directive (the report itself among them) are not "
               "listed. Jobs run by the warm server (config warm_start) add the CPU time and peak memory "
               f"its log records for them ({warm} such jobs)."),
        csv_columns=["stage", "jobs", "wall_s", "longest_s", "cpu_s", "max_rss_mb"],
        empty="_no benchmark files under the results folder_")
    order = sorted(stages, key=lambda s: -stages[s]["wall_s"])
    columns = ("jobs", "wall_s", "longest_s", "cpu_s", "max_rss_mb")
    for stage in order:
        table.records.append({"stage": stage, **{key: round(stages[stage][key], 3) for key in columns}})
    if order:
        total = sum(stages[s]["wall_s"] for s in order)
        cpu = sum(stages[s]["cpu_s"] for s in order)
        elapsed = max(stages[s]["last_end"] for s in order) - min(stages[s]["first_start"] for s in order)
        chain = [s for s in CHAIN if s in stages]
        critical = sum(stages[s]["longest_s"] for s in chain)
        table.records.append({"stage": "all stages", "jobs": sum(int(stages[s]["jobs"]) for s in order),
                              "wall_s": round(total, 3), "cpu_s": round(cpu, 3)})
        table.records.append({"stage": "elapsed (first job start to last job end)", "wall_s": round(elapsed, 3)})
        table.records.append({"stage": "critical path bound (" + " > ".join(chain) + ")", "wall_s": round(critical, 3)})
        rows = [[stage, int(stages[stage]["jobs"]), _clock(stages[stage]["wall_s"]),
                 _clock(stages[stage]["longest_s"]), _clock(stages[stage]["cpu_s"]),
                 f"{stages[stage]['max_rss_mb']:.0f}"] for stage in order]
        rows.append(["all stages", sum(int(stages[s]["jobs"]) for s in order), _clock(total), "", _clock(cpu), ""])
        rows.append(["elapsed: first job start to last job end", "", _clock(elapsed), "", "", ""])
        rows.append([f"critical path bound: longest job of {' > '.join(chain)}", "", _clock(critical), "", "", ""])
        table.sections.append(Section(heading="", rows=rows,
                                      header=["stage", "jobs", "wall time (sum)", "longest job", "CPU time",
                                              "peak memory (MB)"]))
    return table

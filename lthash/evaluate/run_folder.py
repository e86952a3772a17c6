"""Run folders of the workflow as ``lthash search --run`` reads them.

A run folder is ``<results>/runs/<arm>/<method>-<backbone>-<bits>`` (:data:`lthash.workflow.RUN`
without the seed); its seeds live in ``seed0``, ``seed1``, ... (:data:`lthash.workflow.SEED`),
each holding the trained model (:data:`lthash.workflow.RUN_MODEL`) and the codes file
(:data:`lthash.workflow.RUN_CODES`). A path that is not there is reported with what its nearest
existing folder holds.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lthash.errors import LthashError


def near_existing(path: str | os.PathLike) -> str:
    """For a path that does not exist: the nearest folder above it that does and what it holds
    (folders first, at most 20 names), and, when that folder is a run folder (it holds seed
    folders), the ``--run`` that reads it."""
    from lthash.workflow import RUN_CODES

    path = Path(path)
    folder = path.parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return "no folder of it exists"
    entries = sorted(folder.iterdir(), key=lambda e: (not e.is_dir(), e.name))
    names = [e.name + ("/" if e.is_dir() else "") for e in entries if not e.name.startswith(".")]
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    text = f"{folder} holds: {shown}" if names else f"{folder} is empty"
    if seed_folders(folder):
        text += f" (a run folder: lthash search --run {folder} reads its seeds' model and {RUN_CODES})"
    return text


def seed_folders(run: str | os.PathLike) -> dict[int, Path]:
    """The seed folders of a run folder (``seed0``, ``seed1``, ...), by seed."""
    from lthash.workflow import SEED

    pattern = re.compile(re.escape(SEED).replace(re.escape("{seed}"), r"(\d+)"))
    run = Path(run)
    if not run.is_dir():
        return {}
    found = {int(m.group(1)): e for e in run.iterdir() if e.is_dir() and (m := pattern.fullmatch(e.name))}
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class RunChoice:
    """The seed of a run folder a search reads: its folder, its seed and the run's other seeds."""

    run: Path
    seed: int | None
    seeds: tuple[int, ...]
    folder: Path

    @property
    def model(self) -> Path:
        from lthash.workflow import RUN_MODEL

        return self.folder / RUN_MODEL

    @property
    def codes(self) -> Path:
        from lthash.workflow import RUN_CODES

        return self.folder / RUN_CODES

    def describe(self) -> str:
        """The line a search prints first: which seed it reads and which others there are."""
        if self.seed is None:
            return f"run {self.folder}"
        others = [s for s in self.seeds if s != self.seed]
        rest = (f"; seeds {', '.join(map(str, self.seeds))} here, --seed N picks another" if others
                else "; the only seed here")
        return f"run {self.run}: seed {self.seed} ({self.folder}{rest})"


def resolve_run(run: str | os.PathLike, seed: int | None = None) -> RunChoice:
    """The seed folder of a run folder (``runs/<arm>/<method>-<backbone>-<bits>``) that a search
    reads: ``seed``, or the first (lowest) when None. A seed folder itself is taken as it is.
    A wrong path, a missing seed or an unfinished seed is an error naming what does exist."""
    from lthash.workflow import RUN_CODES, RUN_MODEL

    run = Path(run)
    if not run.is_dir():
        raise LthashError(f"run folder not found: {run}; {near_existing(run)}")
    if (run / RUN_CODES).exists() or (run / RUN_MODEL).exists():  # a seed folder given as the run
        siblings = seed_folders(run.parent)
        own = next((s for s, f in siblings.items() if f.name == run.name), None)
        if seed is not None and own != seed:
            raise LthashError(f"{run} is a seed folder itself; give its run folder {run.parent} with --seed {seed}")
        choice = RunChoice(run.parent, own, tuple(siblings), run) if own is not None else RunChoice(run, None, (), run)
    else:
        seeds = seed_folders(run)
        if not seeds:
            listed = near_existing(run / "seed0")
            raise LthashError(f"{run} is not a run folder: it holds no seed folders (seed0, seed1, ...); {listed}. "
                              f"A run folder is <results>/runs/<arm>/<method>-<backbone>-<bits>")
        if seed is None:
            seed = next(iter(seeds))
        if seed not in seeds:
            raise LthashError(f"{run} has no seed {seed}: its seeds are {', '.join(map(str, seeds))}")
        choice = RunChoice(run, seed, tuple(seeds), seeds[seed])
    missing = [p.name for p in (choice.model, choice.codes) if not p.exists()]
    if missing:
        raise LthashError(f"{choice.folder} is not a finished run: {' and '.join(missing)} missing "
                          f"(snakemake makes them: snakemake {choice.codes}); {near_existing(choice.codes)}")
    return choice

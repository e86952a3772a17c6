"""Base models shipped inside the package, as users download Stable Diffusion rather than train it.

``generate.base.model: package:<name>`` names the folder ``lthash/models/<name>/``: a tiny
base in the diffusers folder format written by ``lthash base``, with ``SHIPPED.json`` beside
it recording the SHA-256 of every file, the corpus it learned from (the dataset and the split
parameters whose groups it never saw) and the command that trained it.

:func:`check_base_choice` runs before any job: it refuses a missing shipped model, a file that
is missing or does not match its checksum, and a config whose split is not the one the corpus
is the complement of (a different split may put images the base has seen into the query set,
the database or a training set). :func:`materialise_base` then copies the shipped folder into
the results folder (``<results>/generate/shipped-base/<name>``), where jobs read it: their
inputs name that copy, relative to the working directory, so a run whose project folder is
moved, or whose package is reinstalled at another path, has nothing to rerun. An identical
verified copy is left untouched (its modification times too); a missing, partial or changed
one is replaced whole.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Mapping

from lthash.errors import LthashError
from lthash.io import atomic_dir, canonical_json

PREFIX = "package:"
MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
MANIFEST = "SHIPPED.json"
COPIES = "generate/shipped-base"


def shipped_names() -> list[str]:
    """Names of the base models shipped in this installation."""
    return sorted(p.parent.name for p in MODELS_DIR.glob(f"*/{MANIFEST}"))


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def base_folder(model: str, results: str) -> tuple[str, bool]:
    """(folder jobs read the base model from, whether the workflow trains it) for ``generate.base.model``.

    A shipped base is read from its copy in the results folder (:func:`materialise_base`),
    never from the package, so no job's input depends on where the package is installed.
    """
    if model == "tiny":
        return f"{results}/generate/base", True
    if model.startswith(PREFIX):
        return f"{results}/{COPIES}/{model[len(PREFIX):]}", False
    return model, False


def read_manifest(name: str) -> dict[str, Any]:
    folder = MODELS_DIR / name
    path = folder / MANIFEST
    if not path.exists():
        available = ", ".join(PREFIX + n for n in shipped_names()) or "none"
        raise LthashError(f"config key 'generate.base.model': no shipped base {PREFIX}{name} "
                          f"(shipped: {available})")
    return json.loads(path.read_text())


def verify_files(name: str, manifest: Mapping[str, Any]) -> None:
    """Every file the manifest lists exists with its recorded SHA-256."""
    folder = MODELS_DIR / name
    for relative, expected in sorted(manifest["files"].items()):
        path = folder / relative
        if not path.exists():
            raise LthashError(f"config key 'generate.base.model': {PREFIX}{name} is incomplete: {path} is missing "
                              f"(reinstall lthash, or rebuild it with the command in {folder / MANIFEST})")
        if file_digest(path) != expected:
            raise LthashError(f"config key 'generate.base.model': {path} does not match its checksum in "
                              f"{folder / MANIFEST}: the shipped weights are damaged or were changed")


def _is_verified_copy(copy: Path, shipped: Path, manifest: Mapping[str, Any]) -> bool:
    """Whether ``copy`` holds exactly the manifest's files with their SHA-256, and the same manifest."""
    if not (copy / MANIFEST).is_file() or (copy / MANIFEST).read_bytes() != (shipped / MANIFEST).read_bytes():
        return False
    present = {str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()}
    if present != set(manifest["files"]) | {MANIFEST}:
        return False
    return all(file_digest(copy / relative) == expected for relative, expected in manifest["files"].items())


def materialise_base(config: Mapping[str, Any]) -> None:
    """Copy the shipped base ``generate.base.model`` names to :func:`base_folder`, where jobs read it.

    Run before any job, after :func:`check_base_choice` verified the shipped files. A copy
    already there that matches the manifest is left as it is, so its modification times stay
    older than the outputs made from it; anything else there is replaced whole, atomically,
    by a copy verified against the manifest before it is renamed into place.
    """
    model = config["generate"]["base"]["model"]
    if not model.startswith(PREFIX):
        return
    name = model[len(PREFIX):]
    shipped, manifest = MODELS_DIR / name, read_manifest(name)
    copy = Path(base_folder(model, config["results"])[0])
    try:
        if _is_verified_copy(copy, shipped, manifest):
            return
        with atomic_dir(copy) as tmp:
            for relative in [*manifest["files"], MANIFEST]:
                (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shipped / relative, tmp / relative)
            if not _is_verified_copy(tmp, shipped, manifest):
                raise LthashError(f"config key 'generate.base.model': the copy of {model} in {copy} does not "
                                  f"match {shipped / MANIFEST} (was {shipped} changed while it was copied?)")
    except OSError as error:
        raise LthashError(f"config key 'generate.base.model': cannot copy {model} from {shipped} to {copy}: "
                          f"{error.strerror or error}") from error


def _differences(recorded: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(recorded) | set(current)):
        a, b = recorded.get(key), current.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differences(a, b, f"{prefix}{key}.")
        elif canonical_json(a) != canonical_json(b):
            out.append(f"{prefix}{key} ({a!r} for the shipped base, {b!r} here)")
    return out


def recorded_split_params(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The ``dataset`` and ``split`` sections a base's manifest records, completed with today's schema
    defaults: a key added to the schema after the base was trained reads as its default."""
    from lthash.config import validate_config

    config = validate_config({"dataset": recorded["dataset"], "split": recorded["split"]})
    return {"dataset": config["dataset"], "split": config["split"]}


def check_base_choice(config: Mapping[str, Any]) -> None:
    """Refuse, before any job, a shipped base that is damaged or whose corpus may meet this config's split."""
    model = config["generate"]["base"]["model"]
    if not model.startswith(PREFIX):
        return
    name = model[len(PREFIX):]
    manifest = read_manifest(name)
    verify_files(name, manifest)
    recorded = recorded_split_params(manifest["corpus"]["split_params"])
    differences = _differences(recorded, {"dataset": config["dataset"], "split": config["split"]})
    if differences:
        raise LthashError(
            f"config key 'generate.base.model': {model} learned from the {manifest['corpus']['dataset']} images "
            f"outside the split its manifest records; this config draws another split, which may put images the "
            f"base has seen into the query set, the database or a training set. Differences: "
            + "; ".join(differences)
            + ". Train a base for this split instead (generate.base.model: tiny, generate.base.corpus: "
              "outside_split)")


def write_manifest(folder: Path, command: str) -> dict[str, Any]:
    """Write ``SHIPPED.json`` for a finished base folder written by ``lthash base`` (its corpus.json included)."""
    corpus = json.loads((folder / "corpus.json").read_text())
    if corpus.get("kind") != "outside_split":
        raise LthashError(f"{folder} did not learn from an outside_split corpus: nothing to ship")
    files = {str(p.relative_to(folder)): file_digest(p) for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name != MANIFEST}
    manifest = {"files": files, "corpus": corpus, "command": command}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest

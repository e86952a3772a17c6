"""Concept folders: what one personalisation changed in a base model, and how to rebuild it.

A concept folder (``lthash personalize --out CONCEPT_DIR``) holds

- ``concept.json``: method, class index and name, token (``<v3>``), category word, prompt
  (``a photo of a <v3> <category>``), seed, params, the stage log and the base it was made from;
- ``token_embedding.safetensors``: the [V] embedding row (key = the token);
- ``unet/`` (diffusers format, safetensors) when a stage trained UNet weights
  (AttnDreamBooth stages 2-3, DreamBooth);
- ``samples/``: a PNG grid of samples at the end of each stage.

:func:`load_concept` rebuilds the personalised model from the base folder and the concept.

A joint concept folder (``lthash personalize-joint``: every class taught in one run) holds
``joint.json`` (method, seed, settings, and per class its index, name, token, category and
prompt), ``token_embeddings.safetensors`` (one row per class token), ``unet/`` (the UNet all
classes share), ``text_encoder/`` (when the run trained it), ``loss.csv`` and ``samples/``. :func:`load_joint_concept` rebuilds the model
with every class token in place and returns the prompt of the class asked for.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from lthash.errors import LthashError
from lthash.generate.models import DiffusionComponents, load_components
from lthash.io import atomic_dir, canonical_json, load_safetensors, read_json, save_safetensors

CONCEPT_FILE = "concept.json"
EMBEDDING_FILE = "token_embedding.safetensors"
UNET_FOLDER = "unet"
TEXT_ENCODER_FOLDER = "text_encoder"
SAMPLES_FOLDER = "samples"
CONCEPT_FORMAT = 1
JOINT_FILE = "joint.json"
JOINT_EMBEDDINGS_FILE = "token_embeddings.safetensors"


def write_concept(out_dir: str | os.PathLike, record: Mapping[str, Any], token_row: torch.Tensor,
                  unet: torch.nn.Module | None, samples: Mapping[str, str | os.PathLike] | None = None) -> Path:
    """Write a concept folder atomically (:func:`lthash.io.atomic_dir`: temporary sibling, renamed).

    ``record`` becomes concept.json; ``unet`` is saved only when given (it changed);
    ``samples`` maps a file name under samples/ to an existing PNG to copy.
    """
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        token = record["token"]
        save_safetensors(tmp / EMBEDDING_FILE, {token: token_row.detach().float()},
                         {"token": token, "category": record["category"]})
        if unet is not None:
            unet.save_pretrained(tmp / UNET_FOLDER, safe_serialization=True)
        if samples:
            (tmp / SAMPLES_FOLDER).mkdir()
            for name, source in samples.items():
                shutil.copyfile(source, tmp / SAMPLES_FOLDER / name)
        full = dict(record, format=CONCEPT_FORMAT, has_unet=unet is not None)
        (tmp / CONCEPT_FILE).write_text(canonical_json(full) + "\n")
    return out


def write_joint_concepts(out_dir: str | os.PathLike, record: Mapping[str, Any], rows: Mapping[str, torch.Tensor],
                         unet: torch.nn.Module, samples: Mapping[str, str | os.PathLike] | None = None,
                         losses: list[list[float]] | None = None,
                         text_encoder: torch.nn.Module | None = None) -> Path:
    """Write a joint concept folder atomically: joint.json (``record``), one embedding row per
    token (``rows``), the shared ``unet`` (and ``text_encoder`` when it trained), the sample
    grids and the per-step losses (loss.csv)."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        if text_encoder is not None:
            text_encoder.save_pretrained(tmp / TEXT_ENCODER_FOLDER, safe_serialization=True)
        save_safetensors(tmp / JOINT_EMBEDDINGS_FILE, {token: row.detach().float() for token, row in rows.items()},
                         {"tokens": ",".join(rows)})
        unet.save_pretrained(tmp / UNET_FOLDER, safe_serialization=True)
        if samples:
            (tmp / SAMPLES_FOLDER).mkdir()
            for name, source in samples.items():
                shutil.copyfile(source, tmp / SAMPLES_FOLDER / name)
        if losses is not None:
            lines = ["step,instance,replay"] + [f"{i + 1},{a},{b}" for i, (a, b) in enumerate(losses)]
            (tmp / "loss.csv").write_text("\n".join(lines) + "\n")
        full = dict(record, format=CONCEPT_FORMAT, has_unet=True)
        (tmp / JOINT_FILE).write_text(canonical_json(full) + "\n")
    return out


def is_joint_concept(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a joint concept folder (holds joint.json)."""
    return (Path(folder) / JOINT_FILE).exists()


def read_joint_concept(folder: str | os.PathLike) -> dict[str, Any]:
    """joint.json of a joint concept folder, checked for the keys synthesis relies on."""
    path = Path(folder) / JOINT_FILE
    record = read_json(path)
    classes = record.get("classes")
    if not isinstance(classes, list) or not all(
            isinstance(c, dict) and {"class_index", "token", "prompt"} <= set(c) for c in classes):
        raise LthashError(f"{path} is not a joint concept record: no 'classes' list with index, token and prompt")
    return record


def joint_class_prompt(record: Mapping[str, Any], class_index: int, folder: str | os.PathLike) -> str:
    """The prompt of class ``class_index`` in a joint record; an absent class names the folder."""
    for entry in record["classes"]:
        if int(entry["class_index"]) == int(class_index):
            return str(entry["prompt"])
    raise LthashError(f"joint concept {folder} has no class {class_index} "
                      f"(it holds {len(record['classes'])} classes)")


def load_joint_concept(folder: str | os.PathLike, base_dir: str | os.PathLike, device: str = "cpu",
                       dtype: torch.dtype | None = None) -> tuple[DiffusionComponents, dict[str, Any]]:
    """Base model + joint concept -> (components with every class token and the shared UNet, record)."""
    folder = Path(folder)
    record = read_joint_concept(folder)
    components = load_components(base_dir, device="cpu", unet=_load_concept_unet(folder))
    tensors, _ = load_safetensors(folder / JOINT_EMBEDDINGS_FILE)
    tokens = [entry["token"] for entry in record["classes"]]
    text_weights = folder / TEXT_ENCODER_FOLDER / "model.safetensors"
    if text_weights.exists():  # the joint run trained the text encoder: its weights replace the base's
        from lthash.generate.personalize.trainer import add_token

        for token in tokens:
            add_token(components, token)
        trained, _ = load_safetensors(text_weights)
        missing, unexpected = components.text_encoder.load_state_dict(trained, strict=False)
        if unexpected or [key for key in missing if "position_ids" not in key]:
            raise LthashError(f"{text_weights} does not fit the base's text encoder {base_dir}: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    _write_rows(components, tensors, tokens, folder / JOINT_EMBEDDINGS_FILE, base_dir)
    return components.to(device, dtype), record


def _write_rows(components: DiffusionComponents, tensors: Mapping[str, torch.Tensor], tokens: list[str],
                source: Path, base_dir: str | os.PathLike) -> None:
    """Add each token to the tokenizer (growing the embedding table if it has no spare row) and
    write its learned row from ``tensors`` (read from ``source``) into the table."""
    from lthash.generate.personalize.trainer import add_token

    for token in tokens:
        if token not in tensors:
            raise LthashError(f"{source} has no row for token {token}")
        token_id = add_token(components, token)
        weight = components.text_encoder.get_input_embeddings().weight
        if tensors[token].shape != weight[token_id].shape:
            raise LthashError(f"{source.parent} was made from another base: its embedding has shape "
                              f"{tuple(tensors[token].shape)}, {base_dir} expects {tuple(weight[token_id].shape)}")
        with torch.no_grad():
            weight[token_id] = tensors[token].to(weight.dtype)


def read_concept(concept_dir: str | os.PathLike) -> dict[str, Any]:
    """concept.json of a concept folder, checked for the keys synthesis relies on."""
    path = Path(concept_dir) / CONCEPT_FILE
    record = read_json(path)
    missing = [key for key in ("method", "class_index", "token", "category", "prompt") if key not in record]
    if missing:
        raise LthashError(f"{path} is not a concept record: missing {', '.join(missing)}")
    return record


def load_concept(concept_dir: str | os.PathLike, base_dir: str | os.PathLike, device: str = "cpu",
                 dtype: torch.dtype | None = None) -> tuple[DiffusionComponents, str]:
    """Base model + concept -> (personalised components, the concept's prompt).

    Adds the token to the tokenizer (growing the embedding table if it has no spare row),
    writes the learned row, and uses the concept's UNet when it has one (the base's UNet
    weights are then never read).
    """
    concept_dir = Path(concept_dir)
    record = read_concept(concept_dir)
    unet = _load_concept_unet(concept_dir) if record.get("has_unet") else None
    components = load_components(base_dir, device="cpu", unet=unet)
    tensors, _ = load_safetensors(concept_dir / EMBEDDING_FILE)
    _write_rows(components, tensors, [record["token"]], concept_dir / EMBEDDING_FILE, base_dir)
    return components.to(device, dtype), record["prompt"]


def _load_concept_unet(concept_dir: Path) -> torch.nn.Module:
    """The concept's own UNet (eval mode, frozen), loaded in place of the base's."""
    from diffusers import UNet2DConditionModel

    unet_dir = concept_dir / UNET_FOLDER
    if not (unet_dir / "diffusion_pytorch_model.safetensors").exists():
        raise LthashError(f"concept {concept_dir} is incomplete: missing {unet_dir}/diffusion_pytorch_model.safetensors")
    try:
        unet = UNet2DConditionModel.from_pretrained(unet_dir, use_safetensors=True)
    except Exception as exc:  # diffusers raises many types for a corrupt folder
        raise LthashError(f"cannot load the concept UNet from {unet_dir}: {exc}") from exc
    unet.eval()
    unet.requires_grad_(False)
    return unet

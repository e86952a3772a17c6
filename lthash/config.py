"""Configuration: schema validation with defaults, clear errors.

The schema is split by stage group under ``lthash/schemas/`` (package data, so an installed lthash validates from any folder) (``config.schema.yaml`` refers
to ``data``, ``generate``, ``hashing``, ``evaluate`` and ``report`` parts by ``urn:lthash:<part>``).
Validation fills every default, so a stage reads a complete section; any unknown key, wrong
type or out-of-range value stops with one message per problem naming the dotted key and
what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from lthash.errors import LthashError

def load_yaml(text: str) -> Any:
    """YAML text -> Python objects with a safe loader (no arbitrary tags): libyaml's where PyYAML
    was built with it (6x faster on the schemas), else the pure-Python one."""
    if hasattr(yaml, "CSafeLoader"):
        return yaml.load(text, Loader=yaml.CSafeLoader)
    return yaml.load(text, Loader=yaml.SafeLoader)


SCHEMA_DIR = Path(os.environ.get("LTHASH_SCHEMA_DIR", Path(__file__).resolve().parent / "schemas"))
ROOT_SCHEMA = "config.schema.yaml"


@functools.lru_cache(maxsize=None)
def _load_schemas(schema_dir: str) -> tuple[dict, Any]:
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    directory = Path(schema_dir)
    if not (directory / ROOT_SCHEMA).exists():
        raise LthashError(f"config schema not found: {directory / ROOT_SCHEMA} (set LTHASH_SCHEMA_DIR)")
    resources = []
    root = None
    for path in sorted(directory.glob("*.schema.yaml")):
        schema = load_yaml(path.read_text())
        if path.name == ROOT_SCHEMA:
            root = schema
        resources.append((schema.get("$id", path.name), DRAFT202012.create_resource(schema)))
        _DOCUMENTS.append(schema)
    return root, Registry().with_resources(resources)


def _validator_class():
    from jsonschema import Draft202012Validator, validators

    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" not in subschema and "$ref" in subschema:  # a shared definition's default
                    subschema = _resolve_ref(subschema["$ref"]) or subschema
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": fill_defaults})


def _dotted(path) -> str:
    return ".".join(str(part) for part in path) or "<top level>"


#: Config keys renamed to one spelling per concept: an old name is refused naming the new one
#: (where the new one is allowed at that place).
RENAMED = {"learning_rate": "lr", "precision": "mixed_precision"}


def _suggest(extra: str, allowed: list[str]) -> str | None:
    """The key meant by ``extra``: its new name when it was renamed, else the closest allowed key."""
    if RENAMED.get(extra) in allowed:
        return RENAMED[extra]
    hint = difflib.get_close_matches(extra, allowed, n=1)
    return hint[0] if hint else None


def _describe(error, schema_root) -> str:
    key = _dotted(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extras = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        parts = []
        for extra in extras:
            full = f"{key}.{extra}" if error.absolute_path else extra
            hint = _suggest(extra, allowed)
            suggestion = f"; did you mean '{hint}'?" if hint else ""
            parts.append(f"unknown config key '{full}'{suggestion} (allowed here: {', '.join(allowed)})")
        return "\n".join(parts) or error.message
    if error.validator == "enum":
        return f"config key '{key}': {error.instance!r} is not one of {error.validator_value}"
    if error.validator == "type":
        return f"config key '{key}': {error.instance!r} is not of type {error.validator_value}"
    if error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"config key '{key}': {error.instance!r} violates {error.validator} {error.validator_value}"
    if error.validator == "required":
        return f"config key '{key}': {error.message}"
    if error.validator in ("anyOf", "oneOf"):
        options = [_form(sub) for sub in error.validator_value]
        return f"config key '{key}': {error.instance!r} must be one of: {'; or '.join(options)}"
    if error.validator in ("minItems", "maxItems"):
        bound = "at least" if error.validator == "minItems" else "at most"
        return f"config key '{key}': {error.instance!r} must have {bound} {error.validator_value} item(s)"
    if error.validator == "pattern":
        return f"config key '{key}': {error.instance!r} does not match the pattern {error.validator_value!r}"
    if error.validator == "uniqueItems":
        return f"config key '{key}': {error.instance!r} has repeated items"
    return f"config key '{key}': {error.message}"


def _form(subschema: Mapping[str, Any], depth: int = 0) -> str:
    """A short human form of one alternative: 'integer in [8, 1024]', 'non-empty list of (...)'."""
    if "$ref" in subschema and depth < 4:
        subschema = _resolve_ref(subschema["$ref"]) or subschema
    if "const" in subschema:
        return repr(subschema["const"])
    if "enum" in subschema:
        return "one of " + ", ".join(repr(v) for v in subschema["enum"])
    kind = subschema.get("type", "value")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array":
        items = subschema.get("items")
        inner = f" of ({_form(items, depth + 1)})" if isinstance(items, Mapping) else ""
        return f"{'non-empty ' if subschema.get('minItems') == 1 else ''}list{inner}"
    low = subschema.get("minimum", subschema.get("exclusiveMinimum"))
    high = subschema.get("maximum", subschema.get("exclusiveMaximum"))
    if low is not None and high is not None:
        left = "(" if "exclusiveMinimum" in subschema else "["
        right = ")" if "exclusiveMaximum" in subschema else "]"
        return f"{kind} in {left}{low}, {high}{right}"
    if low is not None:
        return f"{kind} {'>' if 'exclusiveMinimum' in subschema else '>='} {low}"
    if high is not None:
        return f"{kind} {'<' if 'exclusiveMaximum' in subschema else '<='} {high}"
    description = subschema.get("description", "")
    return f"{kind} ({description})" if description and depth == 0 else kind


def _resolve_ref(ref: str) -> Mapping[str, Any] | None:
    """A '#/...' reference of an alternative, looked up in the loaded schema parts."""
    if not ref.startswith("#/"):
        return None
    for document in _DOCUMENTS:
        node: Any = document
        for part in ref[2:].split("/"):
            if not isinstance(node, Mapping) or part not in node:
                node = None
                break
            node = node[part]
        if isinstance(node, Mapping):
            return node
    return None


_DOCUMENTS: list[Mapping[str, Any]] = []


def validate_config(config: Mapping[str, Any], schema_dir: str | os.PathLike | None = None) -> dict:
    """Return a deep copy of ``config`` with defaults filled, or raise naming every bad key."""
    root, registry = _load_schemas(str(schema_dir or SCHEMA_DIR))
    instance = copy.deepcopy(dict(config))
    validator = _validator_class()(root, registry=registry)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        messages = []
        for error in errors:
            text = _describe(error, root)
            if text not in messages:
                messages.append(text)
        raise LthashError("invalid configuration:\n  " + "\n  ".join(messages))
    return instance


def validate_section(name: str, value: Mapping[str, Any]) -> dict:
    """One top-level section validated alone, with the schema's defaults filled (errors name its keys)."""
    return validate_config({"dataset": {}, name: value})[name]


def load_config(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> dict:
    """Read a YAML config file, merge ``overrides`` (nested) and validate it."""
    path = Path(path)
    try:
        raw = load_yaml(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise LthashError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise LthashError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise LthashError(f"{path}: the config must be a mapping of sections")
    return validate_config(deep_merge(raw, overrides or {}))


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict:
    """Nested dict merge: values of ``update`` win; dicts merge key by key."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged

"""Check a config against the workflow's JSON schema and say what is wrong in a researcher's words.

Snakemake's own ``validate`` stops at the first error and prints it with a dump of the schema;
:func:`check_config` lists *every* problem, each as the key's dotted path, what is wrong and what
would be right (the valid keys with a "did you mean", the allowed values, the expected type)::

    config: 2 problems
      - split.val_fracton: unknown key (did you mean 'val_fraction'?); valid keys: val_fraction, seed
      - backbones.clip.kind: 'vit' is not one of clip, sam, alexnet

The workflow runs it before Snakemake's ``validate`` (which then fills in the defaults).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Iterable

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

_TYPE_NAMES = {
    "object": "a mapping (key: value)",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


class ConfigError(ValueError):
    """The config is invalid or inconsistent; the message names each key and what to do."""


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _describe_type(t: str | list[str]) -> str:
    names = [_TYPE_NAMES.get(x, x) for x in ([t] if isinstance(t, str) else t)]
    return " or ".join(names)


def _suggest(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _message(err) -> list[str]:
    """One or more lines for one jsonschema error."""
    where = _path(err.absolute_path)
    v, schema = err.validator, err.schema
    if v == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        lines = []
        for key in extra:
            sub = _path([*err.absolute_path, key])
            valid = f"; valid keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{sub}: unknown key{_suggest(key, allowed)}{valid}")
        return lines
    if v == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        return [f"{_path([*err.absolute_path, k])}: required key is missing" for k in missing]
    if v == "enum":
        options = ", ".join(map(str, err.validator_value))
        hint = _suggest(str(err.instance), map(str, err.validator_value)) if isinstance(err.instance, str) else ""
        return [f"{where}: {err.instance!r} is not one of {options}{hint}"]
    if v == "type":
        return [f"{where}: expected {_describe_type(err.validator_value)}, got {err.instance!r}"]
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        return [f"{where}: {err.instance!r} must be {word} {err.validator_value}"]
    if v in ("minItems", "minProperties"):
        what = "item" if v == "minItems" else "entry"
        n = err.validator_value
        return [f"{where}: needs at least {n} {what}{'s' if n != 1 else ''}, got none" if not err.instance
                else f"{where}: needs at least {n} {what}s"]
    if v == "pattern" and "propertyNames" in err.relative_schema_path and err.instance in (".", ".."):
        return [f"{where}: the name {err.instance!r} is not allowed: it becomes a folder name, where it means "
                f"{'this folder' if err.instance == '.' else 'the folder above'}, so its outputs would land outside "
                "their own folder; choose another name"]
    if v == "pattern" and "propertyNames" in err.relative_schema_path:
        return [f"{where}: the name {err.instance!r} may only use letters, digits, '_', '.' and '-' "
                "(it becomes part of file names)"]
    if v == "pattern":
        return [f"{where}: {err.instance!r} does not have the expected form ({schema.get('description', '').strip() or err.validator_value})"]
    if v == "uniqueItems":
        return [f"{where}: items must be unique, got {err.instance!r}"]
    if v in ("oneOf", "anyOf"):
        # An alternative whose type matched failed deeper (e.g. a list with a bad item): report that.
        deeper = [e for e in err.context if e.validator not in ("type", "enum") or e.relative_path]
        if deeper:
            return _message(max(deeper, key=lambda e: len(e.absolute_path)))
        forms = []
        for alt in err.validator_value:
            if "enum" in alt:
                forms += [repr(x) for x in alt["enum"]]
            elif "type" in alt:
                forms.append(_describe_type(alt["type"]))
        return [f"{where}: expected {' or '.join(forms)}, got {err.instance!r}"]
    return [f"{where}: {err.message}"]


def config_problems(config: dict, schema: dict | None = None) -> list[str]:
    """Every way ``config`` breaks the schema, as ``key.path: what is wrong`` lines (empty if valid).

    Beyond the schema: keys that are not strings (YAML reads ``1:`` as an integer), and a colour
    map that matplotlib does not know (its list, ``matplotlib.colormaps``, is the one source).
    """
    import jsonschema

    schema = load_schema() if schema is None else schema
    lines = _key_problems(config, [])
    validator = jsonschema.Draft202012Validator(schema)
    # The schema sees every key as a string, so that its messages cannot trip over another type.
    for err in sorted(validator.iter_errors(_string_keys(config)), key=lambda e: [str(p) for p in e.absolute_path]):
        for line in _message(err):
            if line not in lines:
                lines.append(line)
    cmap = _colour_map_problem(config)
    if cmap and cmap not in lines:
        lines.append(cmap)
    return lines


def _key_problems(node: Any, parts: list) -> list[str]:
    """A line for each mapping key under ``node`` that is not a string."""
    lines = []
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                kind = {bool: "a boolean", int: "an integer", float: "a number", type(None): "null"}.get(
                    type(key), f"a {type(key).__name__}")
                lines.append(f"{_path(parts)}: the key {key!r} is {kind}, not a string; keys are names: write it in "
                             f"quotes ('{key}') or rename it")
            lines += _key_problems(value, [*parts, str(key)])
    elif isinstance(node, list):
        for i, item in enumerate(node):
            lines += _key_problems(item, [*parts, i])
    return lines


def _string_keys(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _string_keys(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_string_keys(v) for v in node]
    return node


def _colour_map_problem(config: dict) -> str | None:
    """A line if ``plots.brain_maps.cmap`` is set to a name matplotlib has no colour map for."""
    plots = config.get("plots")
    maps = plots.get("brain_maps") if isinstance(plots, dict) else None
    cmap = maps.get("cmap") if isinstance(maps, dict) else None
    if not isinstance(cmap, str):
        return None  # unset (the default is valid), or of a type the schema reports
    import matplotlib

    known = sorted(matplotlib.colormaps, key=str.lower)
    if cmap in known:
        return None
    forward = [m for m in known if not m.endswith("_r")]
    return (f"plots.brain_maps.cmap: {cmap!r} is not a matplotlib colour map{_suggest(cmap, known)}; known: "
            f"{', '.join(forward)} (each also reversed: <name>_r)")


def check_config(config: dict, schema: dict | None = None, source: str = "config") -> None:
    """Raise :class:`ConfigError` listing every problem of ``config`` against the schema."""
    problems = config_problems(config, schema)
    if problems:
        n = len(problems)
        head = f"{source}: {n} problem{'s' if n != 1 else ''} (`nsdflow config-help` describes every key)"
        raise ConfigError("\n".join([head] + [f"  - {p}" for p in problems]))


def describe_schema(schema: dict | None = None) -> str:
    """Every key of the schema with its type, default and description, as indented text."""
    import textwrap

    schema = load_schema() if schema is None else schema
    lines: list[str] = []

    def walk(node, path, depth):
        desc = " ".join(str(node.get("description", "")).split())
        default = f" [default: {json.dumps(node['default'])}]" if "default" in node else ""
        kind = node.get("type", "one of" if "oneOf" in node else "")
        kind = "/".join(kind) if isinstance(kind, list) else kind
        if path:
            lines.append("  " * depth + f"{path} ({kind}){default}")
            for line in textwrap.wrap(desc, 96 - 2 * depth):
                lines.append("  " * depth + "    " + line)
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{key}" if path else key, depth + (1 if path else 0))
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, f"{path}.<name>", depth + 1)

    walk(schema, "", 0)
    return "\n".join(lines)

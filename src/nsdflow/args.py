"""Argument types shared by the stages' commands (JSON values, KEY=PATH pairs)."""

from __future__ import annotations

import argparse
import json


def json_arg(text: str):
    """An argument holding JSON (a spec, a list of classes...)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err


def pairs(items: list[str]) -> dict[str, str]:
    """``KEY=PATH`` arguments as a dict."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=PATH, got {item!r}")
        out[key] = value
    return out

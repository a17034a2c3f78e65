"""Typed, named access to the fields of a `config.json` object.

Every failure is a `ConfigError` that names the field (with its path, e.g. `text_config.hidden_size`),
what was expected and what was found. Shared by the text, vision and audio config parsers, and
`read_json_object` by every reader of a checkpoint's JSON files.
"""

from __future__ import annotations

import json

from ..errors import ConfigError


def read_json_object(file: str) -> dict:
    """A JSON file holding one object; anything else is a ConfigError naming the file."""
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{file}: cannot read JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a JSON object, found {type(data).__name__}")
    return data


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class FieldReader:
    """Read fields of `values` (a dict with defaults filled in); `where` prefixes field names."""

    def __init__(self, values: dict, where: str = ""):
        self.values, self.where = values, where

    def fail(self, name, expected, found):
        raise ConfigError(f"{self.where}{name}: expected {expected}, found {found!r}")

    def positive_int(self, name: str) -> int:
        v = self.values[name]
        if not is_int(v) or v <= 0:
            self.fail(name, "a positive integer", v)
        return v

    def int_in_range(self, name: str, lo: int, hi: int) -> int:
        v = self.values[name]
        if not is_int(v) or not lo <= v <= hi:
            self.fail(name, f"an integer in [{lo}, {hi}]", v)
        return v

    def positive_float(self, name: str) -> float:
        v = self.values[name]
        if not is_number(v) or v <= 0:
            self.fail(name, "a positive number", v)
        return float(v)

    def number(self, name: str) -> float:
        v = self.values[name]
        if not is_number(v):
            self.fail(name, "a number", v)
        return float(v)

    def boolean(self, name: str) -> bool:
        v = self.values[name]
        if not isinstance(v, bool):
            self.fail(name, "true or false", v)
        return v

    def choice(self, name: str, options):
        v = self.values[name]
        if v not in options:
            self.fail(name, f"one of {options}", v)
        return v

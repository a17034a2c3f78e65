"""Typed, named access to the fields of a `config.json` object.

Every failure is a `ConfigError` that names the field (with its path, e.g. `text_config.hidden_size`),
what was expected and what was found. Shared by the text, vision and audio config parsers.
"""

from __future__ import annotations

from .errors import ConfigError


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

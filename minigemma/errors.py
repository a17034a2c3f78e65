"""The three errors a user can meet, each naming what was wrong.

Every message says *which* file, tensor or argument, *what* was expected and *what* was found, so
that a user mistake reads as one clear line (the CLI prints exactly that line and exits non-zero).
"""


class MinigemmaError(Exception):
    """Base class: every error minigemma raises on purpose."""


class ConfigError(MinigemmaError):
    """`config.json` is missing, unreadable, or describes a model minigemma cannot run."""


class CheckpointError(MinigemmaError):
    """A weight file is missing, truncated, corrupt, or holds a tensor of the wrong name or shape."""


class InputError(MinigemmaError):
    """An argument to `forward`, `generate` or the CLI is out of range or of the wrong kind."""


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """`1 image`, `2 images`, `0 audio clips`: a count and its noun, agreeing."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"

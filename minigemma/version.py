"""minigemma's version: one place, read by the package, the CLI and the trace files."""

__version__ = "0.1.0"

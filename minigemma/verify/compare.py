"""Compare two traces name by name, in forward order, and say where they first diverge.

    minigemma compare A B [--atol 1e-4] [--rtol 1e-4] [--names PATTERN]

B is the reference side: an activation agrees when every element satisfies
`|a - b| <= atol + rtol * |b|` (as `numpy.isclose(a, b)`). The first activation, in forward
order, that does not agree is where a port goes wrong: everything after it inherits the error.
Default tolerances are DESIGN.md's whole-model float32 ones.

Refused (an error, not a divergence): traces of different token ids, a name present in one file
only (select what both have with --names), and one name with two shapes (usually an axis order:
see docs/verify.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .trace import select
from .trace_file import Trace

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-4


@dataclass(frozen=True)
class Row:
    name: str
    shape: tuple[int, ...]
    max_abs: float  # max |a - b|
    max_rel: float  # max |a - b| / |b| over elements where b != 0
    cosine: float  # of the flattened arrays; 1.0 when both are zero
    ok: bool
    worst: tuple[int, ...]  # index of the element furthest outside the tolerance (axis 0: token)


def compare_arrays(name: str, a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> Row:
    a, b = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a - b)
    close = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    nonzero = b != 0
    max_rel = float(np.max(diff[nonzero] / np.abs(b[nonzero]), initial=0.0))
    excess = np.where(close, -np.inf, np.nan_to_num(diff - rtol * np.abs(b), nan=np.inf))
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(excess), a.shape)) if a.size else ()
    return Row(name, a.shape, float(np.max(diff, initial=0.0)), max_rel, cosine(a, b), bool(close.all()), worst)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def compare_traces(a: Trace, b: Trace, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, names=None) -> list[Row]:
    """One row per activation, in forward order. Raises InputError when the traces cannot be
    compared: different token ids, names missing on one side, shapes that differ."""
    if a.token_ids is not None and b.token_ids is not None and a.token_ids != b.token_ids:
        raise InputError(f"{a.path} and {b.path} trace different token ids: {_ids(a.token_ids)} vs {_ids(b.token_ids)}")
    wanted = select(set(a.activations) | set(b.activations), names)
    for have, lack in ((a, b), (b, a)):
        missing = [n for n in wanted if n in have.activations and n not in lack.activations]
        if missing:
            raise InputError(
                f"{lack.path}: missing {len(missing)} activation(s) that {have.path} has: {_names(missing)} "
                "(compare a subset with --names)"
            )
    for n in wanted:
        sa, sb = a.activations[n].shape, b.activations[n].shape
        if sa != sb:
            raise InputError(f"{n}: shape {sa} in {a.path} but {sb} in {b.path} (shapes and axis order: docs/verify.md)")
    return [compare_arrays(n, a.activations[n], b.activations[n], rtol, atol) for n in wanted]


def report(rows: list[Row], rtol: float, atol: float) -> list[str]:
    """The table, then one line naming the first divergent activation (or saying all agree)."""
    width = max(len("name"), *(len(r.name) for r in rows))
    lines = [f"{'name':<{width}}  {'shape':<16} {'max abs':>9} {'max rel':>9} {'cosine':>10}  result"]
    for r in rows:
        shape = "(" + ", ".join(map(str, r.shape)) + ")"
        lines.append(
            f"{r.name:<{width}}  {shape:<16} {r.max_abs:9.2e} {r.max_rel:9.2e} {r.cosine:10.7f}  {'ok' if r.ok else 'FAIL'}"
        )
    tol = f"rtol {rtol:g}, atol {atol:g}"
    first = next((r for r in rows if not r.ok), None)
    if first is None:
        lines.append(f"all {len(rows)} activations agree ({tol})")
    else:
        failed = sum(not r.ok for r in rows)
        lines.append(
            f"first divergence: {first.name} (max abs {first.max_abs:.3g}, worst at index {list(first.worst)}; "
            f"{failed} of {len(rows)} activations differ; {tol})"
        )
    return lines


def notes(a: Trace, b: Trace) -> list[str]:
    """Warnings about the inputs: a side that does not say its token ids, different configs."""
    out = [
        f"note: {t.path} has no token_ids metadata; cannot check that both traces ran the same input"
        for t in (a, b)
        if t.token_ids is None
    ]
    ha, hb = a.metadata.get("config_sha256"), b.metadata.get("config_sha256")
    if ha and hb and ha != hb:
        out.append(f"note: {a.path} and {b.path} come from different model configs (config_sha256 {ha[:12]}… vs {hb[:12]}…)")
    return out


def _ids(ids: list[int]) -> str:
    return str(ids) if len(ids) <= 12 else f"{ids[:12]}… ({len(ids)} ids)"


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", … ({len(names)} in all)" if len(names) > 5 else "")

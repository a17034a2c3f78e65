"""Compare two traces name by name, in forward order, and say where they first diverge.

    minigemma compare A B [--atol 1e-4] [--rtol 1e-4] [--names PATTERN]... [--exclude PATTERN]...
                          [--common] [--spread-from F32_REFERENCE [--spread-factor 4]]

B is the reference side: an activation agrees when every element satisfies
`|a - b| <= atol + rtol * |b|` (as `numpy.isclose(a, b)`); integer activations (the top-k
expert indices) agree only when equal. The first activation, in forward order, that does not
agree is where a port goes wrong: everything after it usually inherits the error, and the
later steps that agree again say how far it reached. Default tolerances are DESIGN.md's
whole-model float32 ones.

Reduced precision (`--spread-from`): a bf16 port differs from the bf16 reference everywhere by
rounding, so an element-wise tolerance either fails at `embed` or hides real bugs. Given the
float32 reference as well, each step's tolerance becomes the reference's own float32-vs-B spread
(relative RMS), times a factor: the verdict names the first step whose error grows beyond what
reduced precision explains.

Refused (an error, not a divergence): traces of different token ids, a name present in one file
only (unless --common, which compares only the names both have and says how many it skipped),
and one name with two shapes (usually an axis order: see docs/verify.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .trace import LAYER_NAME, check_patterns, matches, select
from .trace_file import Trace

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-4
DEFAULT_SPREAD_FACTOR = 4.0  # a correct bf16 port measured within 1.6x (docs/verify.md)
# the smallest spread a step can have: one rounding to the dtype the reference ran in (unit roundoff)
UNIT_ROUNDOFF = {"bfloat16": 2.0**-8, "float16": 2.0**-11, "float32": 2.0**-24}


@dataclass(frozen=True)
class Row:
    name: str
    shape: tuple[int, ...]
    max_abs: float  # max |a - b|
    max_rel: float  # max |a - b| / |b| over elements where b != 0
    cosine: float  # of the flattened arrays; 1.0 when both are zero
    ok: bool
    worst: tuple[int, ...]  # index of the element furthest outside the tolerance (axis 0: token)
    exact: bool = False  # integers, compared for equality
    mismatches: int = 0  # elements outside the tolerance (for integers: unequal)


def compare_arrays(name: str, a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> Row:
    exact = a.dtype.kind in "iub" or b.dtype.kind in "iub"  # indices: one off is wrong, not close
    a, b = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a - b)
    close = (a == b) if exact else np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    nonzero = b != 0
    max_rel = float(np.max(diff[nonzero] / np.abs(b[nonzero]), initial=0.0))
    excess = np.where(close, -np.inf, np.nan_to_num(diff - (0 if exact else rtol) * np.abs(b), nan=np.inf))
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(excess), a.shape)) if a.size else ()
    return Row(name, a.shape, float(np.max(diff, initial=0.0)), max_rel, cosine(a, b), bool(close.all()), worst,
               exact, int(close.size - np.count_nonzero(close)))  # fmt: skip


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def selected(a: Trace, b: Trace, names=None, exclude=None) -> tuple[list[str], list[str], list[str]]:
    """(names both files have, names only in A, names only in B), each in forward order, after
    --names and --exclude. A pattern that matches nothing in either file is an error."""
    union = set(a.activations) | set(b.activations)
    wanted = select(union, names)
    if exclude:
        check_patterns(tuple(exclude), union, "--exclude")
        wanted = [n for n in wanted if not matches(n, tuple(exclude))]
    both = [n for n in wanted if n in a.activations and n in b.activations]
    return both, [n for n in wanted if n not in b.activations], [n for n in wanted if n not in a.activations]


def check_comparable(a: Trace, b: Trace, names: list[str]) -> None:
    if a.token_ids is not None and b.token_ids is not None and a.token_ids != b.token_ids:
        raise InputError(f"{a.path} and {b.path} trace different token ids: {_ids(a.token_ids)} vs {_ids(b.token_ids)}")
    for n in names:
        sa, sb = a.activations[n].shape, b.activations[n].shape
        if sa != sb:
            raise InputError(f"{n}: shape {sa} in {a.path} but {sb} in {b.path} (shapes and axis order: docs/verify.md)")


def compare_traces(a: Trace, b: Trace, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, names=None, exclude=None, common=False) -> list[Row]:
    """One row per activation, in forward order. Raises InputError when the traces cannot be
    compared: different token ids, names missing on one side (unless `common`), shapes that differ."""
    both, only_a, only_b = selected(a, b, names, exclude)
    if not common:
        for have, lack, missing in ((a, b, only_a), (b, a, only_b)):
            if missing:
                raise InputError(
                    f"{lack.path}: missing {len(missing)} activation(s) that {have.path} has: {_names(missing)} "
                    "(compare the names both have with --common, or choose with --names / --exclude)"
                )
    if not both:
        raise InputError(f"{a.path} and {b.path} have no activation name in common (names: docs/verify.md)")
    check_comparable(a, b, both)
    return [compare_arrays(n, a.activations[n], b.activations[n], rtol, atol) for n in both]


def report(rows: list[Row], rtol: float, atol: float, kv: str = "") -> list[str]:
    """The table, then the summary: which later steps agree again after the first divergence,
    and last, one line naming the first divergent activation (or saying all agree). `kv`: a
    note on KV sharing to print beside the divergence (`kv_note`)."""
    width = max(len("name"), *(len(r.name) for r in rows))
    lines = [f"{'name':<{width}}  {'shape':<16} {'max abs':>9} {'max rel':>9} {'cosine':>10}  result"]
    for r in rows:
        shape = "(" + ", ".join(map(str, r.shape)) + ")"
        result = "ok" if r.ok else (f"FAIL ({r.mismatches} of {int(np.prod(r.shape))} unequal)" if r.exact else "FAIL")
        lines.append(f"{r.name:<{width}}  {shape:<16} {r.max_abs:9.2e} {r.max_rel:9.2e} {r.cosine:10.7f}  {result}")
    tol = f"rtol {rtol:g}, atol {atol:g}"
    failing = [i for i, r in enumerate(rows) if not r.ok]
    if not failing:
        lines.append(f"all {len(rows)} activations agree ({tol})")
        return lines
    first = failing[0]
    r, failed = rows[first], len(failing)
    lines.append(agree_again(rows[first + 1 :]))
    where = f"{r.mismatches} of {int(np.prod(r.shape))} unequal" if r.exact else f"max abs {r.max_abs:.3g}"
    lines.append(
        f"first divergence: {r.name} ({where}, worst at index {list(r.worst)}; "
        f"{failed} of {len(rows)} activations differ; {tol}){kv}"
    )
    return lines


def agree_again(later: list) -> str:
    """The runs of steps after the first divergence that agree again, in forward order: an error
    that later steps absorb (a top-k that does not change, a path that is not read) ends there."""
    runs, start = [], None
    for i, r in enumerate([*later, None]):
        if r is not None and r.ok and start is None:
            start = i
        elif (r is None or not r.ok) and start is not None:
            runs.append(later[start].name if i - start == 1 else f"{later[start].name} … {later[i - 1].name} ({i - start})")
            start = None
    if not runs:
        return f"after it: all {len(later)} later activations differ too"
    n_ok = sum(r.ok for r in later)
    shown = "; ".join(runs[:6]) + ("; …" if len(runs) > 6 else "")
    return f"after it: {n_ok} of {len(later)} later activations agree again: {shown}"


def kv_note(name: str, a: Trace, b: Trace) -> str:
    """Beside a divergence in a KV-shared layer: whose keys and values that layer read, as each
    trace's metadata says (a wrong source is a classic porting bug)."""
    layer = LAYER_NAME.fullmatch(name)
    if layer is None:
        return ""
    i = int(layer[1])
    sa, sb = a.kv_sources.get(i), b.kv_sources.get(i)
    if sa is None and sb is None:
        return ""
    if sa is not None and sb is not None and sa != sb:
        return f"; layer {i} is KV-shared: it reads layer {sa}'s keys/values in A, layer {sb}'s in B"
    return f"; layer {i} is KV-shared: it reads layer {sa if sb is None else sb}'s keys/values"


def notes(a: Trace, b: Trace) -> list[str]:
    """Warnings about the inputs: a side that does not say its token ids, different configs,
    different KV-sharing sources."""
    out = [
        f"note: {t.path} has no token_ids metadata; cannot check that both traces ran the same input"
        for t in (a, b)
        if t.token_ids is None
    ]
    ha, hb = a.metadata.get("config_sha256"), b.metadata.get("config_sha256")
    if ha and hb and ha != hb:
        out.append(f"note: {a.path} and {b.path} come from different model configs (config_sha256 {ha[:12]}… vs {hb[:12]}…)")
    if a.kv_sources and b.kv_sources and a.kv_sources != b.kv_sources:
        diff = [f"layer {i}: {a.kv_sources.get(i)} vs {b.kv_sources.get(i)}"
                for i in sorted(set(a.kv_sources) | set(b.kv_sources)) if a.kv_sources.get(i) != b.kv_sources.get(i)]  # fmt: skip
        out.append(f"note: the traces disagree on which layer's keys/values KV-shared layers read ({'; '.join(diff)}; A vs B)")
    return out


# Reduced precision: each step judged against the reference's own float32-vs-reduced spread.


@dataclass(frozen=True)
class SpreadRow:
    name: str
    shape: tuple[int, ...]
    error: float  # RMS(a - b) / RMS(f32): the port against the reduced-precision reference
    spread: float  # RMS(b - f32) / RMS(f32): the reference's own reduced-vs-float32 distance
    ratio: float  # error / max(spread, unit roundoff): the verdict compares it with the factor
    ok: bool
    exact: bool = False  # integers: shown (error = share of unequal elements), judged by the floats


def relative_rms(x: np.ndarray, scale: np.ndarray) -> float:
    denom = float(np.sqrt(np.mean(np.square(scale)))) if scale.size else 0.0
    num = float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
    return num / denom if denom else (0.0 if num == 0 else np.inf)


def spread_rows(a: Trace, b: Trace, f32: Trace, names, factor: float, unit: float) -> list[SpreadRow]:
    """One row per name in `names` (which all three traces have)."""
    check_comparable(b, f32, names)
    rows = []
    for n in names:
        x, y, z = (t.activations[n] for t in (a, b, f32))
        if x.dtype.kind in "iub" or y.dtype.kind in "iub":
            error, spread = float(np.mean(x != y)), float(np.mean(y != z))
            rows.append(SpreadRow(n, x.shape, error, spread, np.nan, True, exact=True))
            continue
        x, y, z = (v.astype(np.float64) for v in (x, y, z))
        error, spread = relative_rms(x - y, z), relative_rms(y - z, z)
        ratio = error / max(spread, unit)
        rows.append(SpreadRow(n, x.shape, error, spread, ratio, bool(ratio <= factor)))
    return rows


def spread_report(rows: list[SpreadRow], factor: float, dtype: str, kv: str = "") -> list[str]:
    width = max(len("name"), *(len(r.name) for r in rows))
    lines = [f"{'name':<{width}}  {'shape':<16} {'error':>9} {'spread':>9} {'x spread':>9}  result"]
    for r in rows:
        shape = "(" + ", ".join(map(str, r.shape)) + ")"
        ratio = r.ratio
        result = "(integers: judged by the floats)" if r.exact else ("ok" if r.ok else "BEYOND")
        lines.append(f"{r.name:<{width}}  {shape:<16} {r.error:9.2e} {r.spread:9.2e} {ratio:9.2f}  {result}")
    how = f"error within {factor:g}x the {dtype} reference's own spread from float32"
    first = next((r for r in rows if not r.ok), None)
    judged = [r for r in rows if not r.exact]
    if first is None:
        worst = max((r.ratio for r in judged), default=0.0)
        lines.append(f"all {len(judged)} activations {how} (largest: {worst:.2f}x)")
    else:
        beyond = sum(not r.ok for r in rows)
        lines.append(
            f"first step beyond the {dtype} spread: {first.name} (error {first.error:.3g}, "
            f"{first.ratio:.1f}x the spread {first.spread:.3g}; "
            f"{beyond} of {len(judged)} activations beyond {factor:g}x){kv}"
        )
    return lines


def _ids(ids: list[int]) -> str:
    return str(ids) if len(ids) <= 12 else f"{ids[:12]}… ({len(ids)} ids)"


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", … ({len(names)} in all)" if len(names) > 5 else "")


def skipped_note(a: Trace, b: Trace, only_a: list[str], only_b: list[str]) -> str:
    """What --common left out, on each side."""
    def side(t, names):
        return f"{len(names)} only in {t.path}" + (f" ({_names(names)})" if names else "")

    return f"--common: skipped {side(a, only_a)}; {side(b, only_b)}"


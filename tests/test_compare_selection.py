"""`compare` on traces a port writes: --common (and what it skipped on each side), --exclude,
glob patterns whose `*` stays within a dot-separated segment, exact comparison of integer
activations, the summary of later steps that agree again, KV-source metadata beside a
divergence in a shared layer. Small hand-made traces: no model needed."""

import numpy as np
import pytest

from minigemma.cli import main
from minigemma.verify.trace import matches
from minigemma.verify.trace_file import save_trace

IDS = [2, 15, 7]
RNG = np.random.default_rng(0)
NAMES = ["embed", *(f"layers.{i}.{s}" for i in range(3) for s in ("attn.q", "attn.context", "attn.out", "out")), "logits"]


def acts():
    return {n: RNG.standard_normal((3, 4)).astype(np.float32) for n in NAMES} | {
        "layers.1.moe.router.top_k_index": np.array([[0, 1], [2, 3], [1, 0]], np.int64)
    }


BASE = acts()


def write(path, activations, **meta):
    save_trace(str(path), activations, {"token_ids": IDS, **meta})
    return str(path)


def run(capsys, *argv):
    capsys.readouterr()
    status = main(["compare", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


@pytest.mark.parametrize(
    "pattern, name, selected",
    [
        ("layers.*.out", "layers.0.out", True),
        ("layers.*.out", "layers.0.attn.out", False),  # * does not cross a dot
        ("**.out", "layers.0.attn.out", True),  # ** does
        ("**.attn.out", "vision.layers.0.attn.out", True),
        ("layers.1", "layers.1.attn.q", True),  # a name's first segments select it
        ("layers.1.*", "layers.1.attn.q", True),
        ("layers.1", "layers.10.out", False),  # ... at a dot, not inside a segment
        ("layers.?.out", "layers.3.out", True),
        ("layers.?.out", "layers.12.out", False),
        ("layers.[02].out", "layers.2.out", True),
        ("layers.[!02].out", "layers.2.out", False),
        ("*.attn.q", "layers.3.attn.q", False),
        ("emb*", "embed", True),
        ("layers.*.moe.router", "layers.3.moe.router.top_k_index", True),
    ],
)
def test_glob_segments(pattern, name, selected):
    assert matches(name, (pattern,)) is selected


def test_names_and_exclude_select_by_segments(tmp_path, capsys):
    b = write(tmp_path / "b.npz", BASE)
    bad = dict(BASE, **{"layers.0.attn.out": BASE["layers.0.attn.out"] + 1})
    a = write(tmp_path / "a.npz", bad)
    status, lines, _ = run(capsys, a, b, "--names", "layers.*.out")
    assert status == 0 and [line.split()[0] for line in lines[1:-1]] == ["layers.0.out", "layers.1.out", "layers.2.out"]
    status, lines, _ = run(capsys, a, b, "--names", "**.out")
    assert status == 1 and lines[-1].startswith("first divergence: layers.0.attn.out (")
    status, lines, _ = run(capsys, a, b, "--exclude", "layers.0.attn.out")
    assert status == 0 and lines[-1] == f"all {len(BASE) - 1} activations agree (rtol 0.0001, atol 0.0001)"
    status, lines, _ = run(capsys, a, b, "--exclude", "layers.0", "--exclude", "logits")
    assert status == 0 and not any(line.startswith(("layers.0.", "logits")) for line in lines)
    status, _, err = run(capsys, a, b, "--exclude", "layer.*")
    assert status == 2 and err == [
        "minigemma: error: --exclude: pattern 'layer.*' matches no activation "
        "(there are 15, e.g. embed, layers.0.attn.q, layers.0.attn.context, layers.0.attn.out)"
    ]


def test_common_compares_what_both_have_and_says_what_it_skipped(tmp_path, capsys):
    a = write(tmp_path / "a.npz", {n: v for n, v in BASE.items() if n not in ("layers.1.moe.router.top_k_index", "logits")})
    b = write(tmp_path / "b.npz", {n: v for n, v in BASE.items() if n != "embed"} | {"ple.inputs": np.zeros((3, 3, 2))})
    status, _, err = run(capsys, a, b)
    assert status == 2 and f"{b}: missing 1 activation(s) that {a} has: embed (compare the names both have with --common" in err[0]
    status, lines, err = run(capsys, a, b, "--common")
    assert status == 0 and lines[-1] == "all 12 activations agree (rtol 0.0001, atol 0.0001)"
    assert err == [f"--common: skipped 1 only in {a} (embed); 3 only in {b} (ple.inputs, layers.1.moe.router.top_k_index, logits)"]
    status, _, err = run(capsys, write(tmp_path / "c.npz", {"other": np.zeros(2)}), b, "--common")
    assert status == 2 and "have no activation name in common" in err[0]


def test_integers_compare_exactly(tmp_path, capsys):
    b = write(tmp_path / "b.npz", BASE)
    index = BASE["layers.1.moe.router.top_k_index"].copy()
    index[2] = index[2][::-1]  # the same experts in another order: a different top-k
    a = write(tmp_path / "a.npz", dict(BASE, **{"layers.1.moe.router.top_k_index": index}))
    status, lines, _ = run(capsys, a, b, "--atol", "10", "--rtol", "10")  # no tolerance makes 1 equal 0
    assert status == 1
    row = next(line for line in lines if line.startswith("layers.1.moe.router.top_k_index "))
    assert row.endswith("FAIL (2 of 6 unequal)")
    assert lines[-1].startswith("first divergence: layers.1.moe.router.top_k_index (2 of 6 unequal, worst at index [2, 0];")
    # integers written as floats by another program still compare exactly against the int64 side
    a = write(tmp_path / "a_float.npz", dict(BASE, **{"layers.1.moe.router.top_k_index": BASE["layers.1.moe.router.top_k_index"] + 1e-6}))
    assert run(capsys, a, b, "--atol", "1")[0] == 1


def test_summary_says_which_later_steps_agree_again(tmp_path, capsys):
    b = write(tmp_path / "b.npz", BASE)
    bad = dict(BASE)
    for n in ("layers.0.attn.context", "layers.0.attn.out", "layers.2.attn.q"):
        bad[n] = bad[n] * 2
    a = write(tmp_path / "a.npz", bad)
    status, lines, _ = run(capsys, a, b)
    assert status == 1
    assert lines[-2] == (
        "after it: 10 of 12 later activations agree again: layers.0.out … layers.1.out (6); layers.2.attn.context … logits (4)"
    )
    assert lines[-1].startswith("first divergence: layers.0.attn.context (") and "3 of 15 activations differ" in lines[-1]
    index = "layers.1.moe.router.top_k_index"
    everything = {n: v * 2 for n, v in BASE.items() if v.dtype.kind == "f"} | {index: BASE[index] + 1}
    status, lines, _ = run(capsys, write(tmp_path / "all.npz", everything), b)
    assert lines[-2] == "after it: all 14 later activations differ too"


def test_kv_sources_beside_a_divergence_in_a_shared_layer(tmp_path, capsys):
    b = write(tmp_path / "b.npz", BASE, kv_sources={"2": 0})
    a = write(tmp_path / "a.npz", dict(BASE, **{"layers.2.attn.context": BASE["layers.2.attn.context"] + 1}), kv_sources={"2": 1})
    status, lines, err = run(capsys, a, b)
    assert status == 1
    assert lines[-1].endswith("; layer 2 is KV-shared: it reads layer 1's keys/values in A, layer 0's in B")
    assert err == ["note: the traces disagree on which layer's keys/values KV-shared layers read (layer 2: 1 vs 0; A vs B)"]
    a = write(tmp_path / "a2.npz", dict(BASE, **{"layers.2.attn.context": BASE["layers.2.attn.context"] + 1}))
    status, lines, err = run(capsys, a, b)
    assert lines[-1].endswith("; layer 2 is KV-shared: it reads layer 0's keys/values") and err == []
    a = write(tmp_path / "a3.npz", dict(BASE, **{"layers.1.out": BASE["layers.1.out"] + 1}))
    assert "KV-shared" not in run(capsys, a, b)[1][-1]  # layer 1 is not shared
    bad = write(tmp_path / "bad.npz", BASE, kv_sources={"2": "zero"})
    status, _, err = run(capsys, bad, b)
    assert status == 2 and "metadata kv_sources must be a JSON object layer -> source layer" in err[0]


def test_spread_verdict_on_hand_made_traces(tmp_path, capsys):
    """--spread-from: each step may differ from B (reduced precision) by the factor times B's own
    distance from the float32 trace; the first step beyond it is named; integers are shown only."""
    rng = np.random.default_rng(1)
    f32 = {n: v.astype(np.float64) for n, v in BASE.items() if v.dtype.kind == "f"}
    rounding = {n: 1e-2 * (1 + k) * rng.standard_normal(v.shape) * np.abs(v) for k, (n, v) in enumerate(f32.items())}
    low = {n: (v + rounding[n]).astype(np.float32) for n, v in f32.items()}
    port = {n: (v + rng.standard_normal(v.shape) * np.abs(rounding[n])).astype(np.float32) for n, v in f32.items()}
    index = {"layers.1.moe.router.top_k_index": BASE["layers.1.moe.router.top_k_index"]}
    c = write(tmp_path / "f32.npz", {n: v.astype(np.float32) for n, v in f32.items()} | index)
    b = write(tmp_path / "bf16.npz", low | index, dtype="bfloat16")
    a = write(tmp_path / "port.npz", port | index)
    status, lines, _ = run(capsys, a, b, "--spread-from", c)
    assert status == 0 and lines[-1].startswith("all 14 activations error within 4x the bfloat16 reference's own spread")
    assert next(line for line in lines if line.startswith("layers.1.moe")).endswith("(integers: judged by the floats)")
    buggy = dict(port, **{"layers.1.attn.out": port["layers.1.attn.out"] * 1.5})
    status, lines, _ = run(capsys, write(tmp_path / "buggy.npz", buggy | index), b, "--spread-from", c)
    assert status == 1 and lines[-1].startswith("first step beyond the bfloat16 spread: layers.1.attn.out (")
    status, _, err = run(capsys, a, b, "--spread-from", write(tmp_path / "less.npz", {"embed": BASE["embed"]}))
    assert status == 2 and "--spread-from" in err[0] and "missing 14 activation(s)" in err[0]

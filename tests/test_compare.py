"""`compare`: the mutation check (a perturbed MLP weight in one layer, on either side, must be
named as exactly that layer's first affected activation, exit 1; no perturbation, exit 0),
the per-activation metrics, and the traces it refuses to compare."""

import numpy as np
import pytest
import torch
from gemma_reference import reference_text_model, text_config_kwargs
from hypothesis import given, note, settings
from hypothesis import strategies as st

import minigemma
from minigemma.weights.checkpoint import bf16_to_f32, f32_to_bf16, write_safetensors
from minigemma.cli import main
from minigemma.verify.compare import compare_arrays, compare_traces
from minigemma.verify.trace import config_hash
from minigemma.verify.trace_file import Trace, load_trace, save_trace, trace_metadata
from minigemma.verify import reference as reference_trace

# the first activation a perturbed weight of `layers.{i}.mlp` changes
FIRST_AFFECTED = {"gate_proj": "mlp.gated", "up_proj": "mlp.gated", "down_proj": "mlp.out"}


def perturb(ref, layer: int, weight: str, seed: int) -> None:
    w = ref.get_submodule(f"model.layers.{layer}.mlp.{weight}").weight
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w += 0.1 * w.std() * torch.randn(w.shape, generator=g)


def reference_file(path, ref, ids):
    config = reference_trace.model_config(ref)
    save_trace(str(path), reference_trace.capture(ref, ids), trace_metadata(config_hash(config), ids, reference_trace.source()))
    return str(path)


def minigemma_file(path, model_dir, ids):
    assert main(["trace", "--model", str(model_dir), "--ids", ",".join(map(str, ids)), "--out", str(path)]) == 0
    return str(path)


@pytest.mark.parametrize("weight", sorted(FIRST_AFFECTED))
@pytest.mark.parametrize("side", ["minigemma", "reference"])
@settings(max_examples=2)
@given(kwargs=text_config_kwargs(), data=st.data())
def test_mutation_is_named_as_the_first_divergence(kwargs, side, weight, data, tmp_path_factory, capsys):
    layer = data.draw(st.integers(0, kwargs["num_hidden_layers"] - 1), label="layer")
    seq = data.draw(st.integers(1, 12), label="seq")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"config: {kwargs}\nperturbed: {side} layers.{layer}.mlp.{weight}")
    tmp = tmp_path_factory.mktemp("mutation")
    ref = reference_text_model(kwargs, "causal", seed)
    ids = [int(i) for i in np.random.default_rng(seed).integers(0, kwargs["vocab_size"], seq)]
    ref.save_pretrained(tmp / "clean")
    ours = minigemma_file(tmp / "ours.safetensors", tmp / "clean", ids)
    theirs = reference_file(tmp / "theirs.npz", ref, ids)
    capsys.readouterr()
    assert main(["compare", ours, theirs]) == 0, capsys.readouterr().out
    assert capsys.readouterr().out.splitlines()[-1].startswith("all ")

    perturb(ref, layer, weight, seed)
    if side == "minigemma":
        ref.save_pretrained(tmp / "perturbed")
        ours = minigemma_file(tmp / "ours_perturbed.safetensors", tmp / "perturbed", ids)
    else:
        theirs = reference_file(tmp / "theirs_perturbed.npz", ref, ids)
    capsys.readouterr()
    assert main(["compare", ours, theirs]) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(f"first divergence: layers.{layer}.{FIRST_AFFECTED[weight]} ("), last


def test_metrics_of_one_activation():
    rng = np.random.default_rng(0)
    b = rng.standard_normal((4, 6))
    row = compare_arrays("x", b.copy(), b, rtol=1e-4, atol=1e-4)
    assert row.ok and row.max_abs == 0 and row.max_rel == 0 and row.cosine == pytest.approx(1.0)

    a = b.copy()
    a[2, 5] += 0.5
    a[1, 1] += 1e-6  # inside the tolerance
    row = compare_arrays("x", a, b, rtol=1e-4, atol=1e-4)
    assert not row.ok and row.worst == (2, 5)
    assert row.max_abs == pytest.approx(0.5) and row.max_rel == pytest.approx(0.5 / abs(b[2, 5]))
    assert row.cosine == pytest.approx(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b))

    a = b.copy()
    a[3, 0] = np.nan
    assert compare_arrays("x", a, b, 1e-4, 1e-4).worst == (3, 0)  # NaN on one side diverges
    b_nan = b.copy()
    b_nan[3, 0] = np.nan
    assert compare_arrays("x", a, b_nan, 1e-4, 1e-4).ok  # NaN at the same place on both agrees
    zeros = np.zeros((2, 3))
    assert compare_arrays("x", zeros, zeros, 0, 0).cosine == 1.0
    assert compare_arrays("x", zeros + 1, zeros, 0, 0).cosine == 0.0


def trace(name, acts, ids=(1, 2, 3)):
    return Trace(name, acts, {"token_ids": list(ids)} if ids is not None else {})


def test_traces_it_refuses_to_compare():
    x = np.ones((3, 4), np.float32)
    a = trace("a.npz", {"embed": x, "logits": x})
    with pytest.raises(minigemma.InputError, match=r"a.npz and b.npz trace different token ids: \[1, 2, 3\] vs \[1, 2\]"):
        compare_traces(a, trace("b.npz", {"embed": x, "logits": x}, ids=(1, 2)))
    with pytest.raises(minigemma.InputError, match=r"b.npz: missing 1 activation\(s\) that a.npz has: logits"):
        compare_traces(a, trace("b.npz", {"embed": x}))
    with pytest.raises(minigemma.InputError, match=r"a.npz: missing 1 activation\(s\) that b.npz has: layers.0.out"):
        compare_traces(a, trace("b.npz", {"embed": x, "logits": x, "layers.0.out": x}))
    with pytest.raises(minigemma.InputError, match=r"logits: shape \(3, 4\) in a.npz but \(4, 3\) in b.npz"):
        compare_traces(a, trace("b.npz", {"embed": x, "logits": x.T}))
    with pytest.raises(minigemma.InputError, match="pattern 'layers.*' matches no activation"):
        compare_traces(a, a, names="layers.*")
    # a subset both sides have; a trace without token ids (another program's) is compared anyway
    rows = compare_traces(a, trace("b.npz", {"embed": x, "layers.0.out": x}, ids=None), names="embed")
    assert [r.name for r in rows] == ["embed"] and rows[0].ok


@pytest.mark.parametrize("suffix", ["safetensors", "npz"])
def test_trace_files_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(1)
    acts = {"logits": rng.standard_normal((3, 5)).astype(np.float32), "layers.0.moe.router.top_k_index": np.array([[2, 0]] * 3)}
    meta = trace_metadata("ab" * 32, [5, 6, 7], "somewhere", prompt="a b c")
    save_trace(str(tmp_path / f"t.{suffix}"), acts, meta)
    t = load_trace(str(tmp_path / f"t.{suffix}"))
    assert list(t.activations) == ["layers.0.moe.router.top_k_index", "logits"]  # forward order
    assert t.activations["layers.0.moe.router.top_k_index"].dtype == np.int64
    np.testing.assert_array_equal(t.activations["logits"], acts["logits"])
    assert t.metadata == meta and t.token_ids == [5, 6, 7] and meta["minigemma_version"] == minigemma.__version__


def test_half_precision_traces_widen_to_float32(tmp_path):
    """Another port may write bf16 or f16: read as float32, the exact values the file holds."""
    x = np.random.default_rng(2).standard_normal((4, 8)).astype(np.float32)
    write_safetensors(str(tmp_path / "bf16.safetensors"), {"embed": (x.shape, lambda: x)}, dtype="BF16")
    np.savez(tmp_path / "f16.npz", embed=x.astype(np.float16))
    bf16 = load_trace(str(tmp_path / "bf16.safetensors")).activations["embed"]
    f16 = load_trace(str(tmp_path / "f16.npz")).activations["embed"]
    assert bf16.dtype == f16.dtype == np.float32
    np.testing.assert_array_equal(bf16, bf16_to_f32(f32_to_bf16(x)))
    np.testing.assert_array_equal(f16, x.astype(np.float16).astype(np.float32))
    rows = compare_traces(load_trace(str(tmp_path / "bf16.safetensors")), Trace("x", {"embed": x}), rtol=1e-2, atol=0)
    assert rows[0].ok and not compare_traces(Trace("y", {"embed": bf16}), Trace("x", {"embed": x}))[0].ok

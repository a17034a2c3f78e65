"""The Numba kernels against their NumPy twins, on the same hypothesis-drawn inputs (1e-5):
attention (window edges, GQA ratios, head dims, decode against a ring-ordered cache), expert
dispatch (empty experts, one token, every activation) and matrix products on float32 and bf16
weights, each parallel and single-threaded; and the switch that picks kernels or twins. The twins themselves are checked against the reference in
test_attention.py / test_mlp_moe.py, and whole models with kernels in test_model.py."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from minigemma import ConfigError
from minigemma.text.attention import attend_positions
from minigemma.weights.bf16 import bf16_linear
from minigemma.weights.checkpoint import bf16_to_f32, f32_to_bf16
from minigemma.kernels import ENV_VAR, NUMPY, backend, kernels_enabled
from minigemma.kernels import attention as fused_attention
from minigemma.kernels import linear as fused_linear
from minigemma.kernels import threads
from minigemma.kernels import moe as fused_moe
from minigemma.text.moe import ExpertWeights, experts
from minigemma.text.ops import ACTIVATIONS

TOL = dict(rtol=1e-5, atol=1e-5)


def normal(rng, *shape):
    return rng.standard_normal(shape, dtype=np.float32)


@st.composite
def attention_inputs(draw):
    """A query block (prefill, chunk or one decode token) against keys with positions: the keys of
    the queries themselves plus `past` earlier ones, in order, rotated like a ring buffer, or
    shuffled; windows around the edges (1, the key count, beyond it) or none."""
    heads, kv = draw(st.sampled_from([(1, 1), (2, 1), (4, 2), (8, 1), (8, 2), (6, 3), (4, 4)]))
    d = draw(st.sampled_from([1, 4, 16, 64, 256]))
    q_len = draw(st.sampled_from([1, 1, 2, 17, 40]))  # 17, 40: more than one query block
    past = draw(st.integers(0, 150))  # keys before the queries (a cache)
    causal = draw(st.booleans())
    n_keys = past + q_len
    window = draw(st.sampled_from([None, 1, 2, n_keys - 1, n_keys, n_keys + 5]) | st.integers(1, 80))
    window = None if window is not None and window < 1 else window
    order = draw(st.sampled_from(["sorted", "ring", "shuffled"]))
    seed = draw(st.integers(0, 2**16))
    return heads, kv, d, q_len, past, causal, window, order, seed


@given(attention_inputs())
def test_attention_kernel_matches_twin(inputs):
    heads, kv, d, q_len, past, causal, window, order, seed = inputs
    note(f"heads={heads} kv={kv} d={d} q_len={q_len} past={past} causal={causal} window={window} order={order}")
    rng = np.random.default_rng(seed)
    n = past + q_len
    q, k, v = normal(rng, q_len, heads, d), normal(rng, n, kv, d), normal(rng, n, kv, d)
    q_pos, k_pos = np.arange(past, n), np.arange(n)
    if order == "ring":  # slots of a ring buffer: the oldest keys are not first
        perm = np.roll(np.arange(n), rng.integers(0, n))
    else:
        perm = np.arange(n) if order == "sorted" else rng.permutation(n)
    k, v, k_pos = k[perm], v[perm], k_pos[perm]
    got = fused_attention.attend(q, k, v, q_pos, k_pos, window, causal)
    assert got.dtype == np.float32 and got.shape == q.shape
    np.testing.assert_allclose(got, attend_positions(q, k, v, q_pos, k_pos, window, causal), **TOL)


def test_attention_kernel_touches_only_keys_in_the_window():
    """With keys in position order, a sliding layer never reads keys outside the window: poison
    them with NaN and the answer is still the twin's (which masks them after multiplying)."""
    rng = np.random.default_rng(0)
    n, window = 300, 7
    q, k, v = normal(rng, n, 4, 8), normal(rng, n, 2, 8), normal(rng, n, 2, 8)
    pos = np.arange(n)
    expected = attend_positions(q, k, v, pos, pos, window)
    q_last, v_poisoned = q[-1:], v.copy()
    v_poisoned[: n - window] = np.nan  # outside the last query's window
    got = fused_attention.attend(q_last, k, v_poisoned, pos[-1:], pos, window, True)
    np.testing.assert_allclose(got, expected[-1:], **TOL)


@st.composite
def routing(draw):
    """Tokens routed to distinct experts per token; with few tokens and many experts, most
    experts get nobody."""
    n_experts = draw(st.integers(1, 8))
    top_k = draw(st.integers(1, n_experts))
    tokens = draw(st.sampled_from([1, 1, 2, 3, 16, 33]))
    hidden, inter = draw(st.sampled_from([4, 16, 48])), draw(st.sampled_from([1, 8, 32]))
    act = draw(st.sampled_from(sorted(ACTIVATIONS)))
    seed = draw(st.integers(0, 2**16))
    return n_experts, top_k, tokens, hidden, inter, act, seed


@given(routing())
def test_expert_dispatch_kernel_matches_twin(case):
    n_experts, top_k, tokens, hidden, inter, act_name, seed = case
    note(f"experts={n_experts} top_k={top_k} tokens={tokens} hidden={hidden} inter={inter} act={act_name}")
    rng = np.random.default_rng(seed)
    w = ExpertWeights(normal(rng, n_experts, 2 * inter, hidden), normal(rng, n_experts, hidden, inter))
    x = normal(rng, tokens, hidden)
    index = np.argsort(rng.random((tokens, n_experts)), axis=1)[:, :top_k]  # distinct per token
    weights = rng.random((tokens, top_k)).astype(np.float32)
    act = ACTIVATIONS[act_name]
    got = fused_moe.experts(x, index, weights, w, act)
    np.testing.assert_allclose(got, experts(x, index, weights, w, act), **TOL)


def test_one_token_dispatch_reads_only_its_experts():
    """The decode path touches the token's top-k experts only: NaN in every other expert's
    weights changes nothing."""
    rng = np.random.default_rng(1)
    w = ExpertWeights(normal(rng, 6, 10, 8), normal(rng, 6, 8, 5))
    x, index, weights = normal(rng, 1, 8), np.array([[4, 1]]), np.array([[0.6, 0.4]], np.float32)
    gelu = ACTIVATIONS["gelu_pytorch_tanh"]
    expected = experts(x, index, weights, w, gelu)
    for e in (0, 2, 3, 5):
        w.gate_up_proj[e] = np.nan
        w.down_proj[e] = np.nan
    np.testing.assert_allclose(fused_moe.experts(x, index, weights, w, gelu), expected, **TOL)


def test_group_by_expert_is_a_stable_counting_sort():
    index = np.array([[2, 0], [0, 3], [2, 1]])
    pairs, starts = fused_moe.group_by_expert(index, 5)
    np.testing.assert_array_equal(starts, [0, 2, 3, 5, 6, 6])  # expert 4: nobody
    np.testing.assert_array_equal(pairs, [1, 2, 5, 0, 4, 3])  # flat (token * k + slot), token order


@given(
    rows=st.sampled_from([1, 2, fused_linear.GEMV_MAX_ROWS, fused_linear.GEMV_MAX_ROWS + 1, 40]),
    out=st.sampled_from([1, 7, 64, fused_linear.BLOCK_ROWS + 3]),
    inner=st.sampled_from([1, 5, 32, 200]),
    seed=st.integers(0, 2**16),
)
def test_linear_kernel_matches_twins_on_float32_and_bf16(rows, out, inner, seed):
    """The GEMV (few rows) and BLAS / block widening (many rows), on float32 weights and on bf16
    bits, equal `x @ W.T` and the NumPy bf16 twin."""
    rng = np.random.default_rng(seed)
    w, x = normal(rng, out, inner), normal(rng, rows, inner)
    np.testing.assert_allclose(fused_linear.linear(x, w), x @ w.T, **TOL)
    bits = f32_to_bf16(w)
    expected = x @ bf16_to_f32(bits).T
    np.testing.assert_allclose(bf16_linear(x, bits), expected, **TOL)
    np.testing.assert_allclose(fused_linear.linear(x, bits), expected, **TOL)


def test_big_decode_products_float32_by_blas_and_bf16_by_the_gemv():
    """One token through a matrix past `PARALLEL_MIN_WORK`: float32 weights take BLAS (the very
    product of the twin, bit for bit), bf16 bits the GEMV (the bf16 twin at the tolerance)."""
    rng = np.random.default_rng(3)
    inner = 64  # short sums: the two summation orders stay within the tolerance
    w, x = normal(rng, threads.PARALLEL_MIN_WORK // inner + 1, inner), normal(rng, 1, inner)
    np.testing.assert_array_equal(fused_linear.linear(x, w), x @ w.T)
    bits = f32_to_bf16(w)
    np.testing.assert_allclose(fused_linear.linear(x, bits), bf16_linear(x, bits), **TOL)


@pytest.mark.parametrize("parallel", [True, False])
def test_kernels_agree_with_twins_on_all_threads_and_on_one(monkeypatch, parallel):
    """Every kernel runs parallel for big work, else on the calling thread (`threads.pick`):
    force each way on the same inputs."""
    monkeypatch.setattr(threads, "PARALLEL_MIN_WORK", 0 if parallel else 2**62)
    rng = np.random.default_rng(7)
    q, k, v, pos = normal(rng, 37, 4, 16), normal(rng, 37, 2, 16), normal(rng, 37, 2, 16), np.arange(37)
    np.testing.assert_allclose(fused_attention.attend(q, k, v, pos, pos, 5), attend_positions(q, k, v, pos, pos, 5), **TOL)
    last = slice(36, 37)  # one query: the decode kernel
    np.testing.assert_allclose(fused_attention.attend(q[last], k, v, pos[last], pos, None), attend_positions(q[last], k, v, pos[last], pos, None), **TOL)
    w = ExpertWeights(normal(rng, 3, 12, 8), normal(rng, 3, 8, 6))
    x, index, weights = normal(rng, 1, 8), np.array([[2, 0]]), np.array([[0.3, 0.7]], np.float32)
    gelu = ACTIVATIONS["gelu_pytorch_tanh"]
    np.testing.assert_allclose(fused_moe.experts(x, index, weights, w, gelu), experts(x, index, weights, w, gelu), **TOL)
    bits, x = f32_to_bf16(normal(rng, 1100, 24)), normal(rng, 20, 24)
    np.testing.assert_allclose(fused_linear.linear(x[:3], bits), bf16_linear(x[:3], bits), **TOL)
    np.testing.assert_allclose(fused_linear.linear(x, bits), bf16_linear(x, bits), **TOL)


def test_parallel_by_shape_alone(monkeypatch):
    """Serial or parallel is decided by the work a call has, never by the machine's load."""
    kernels = ("serial", "parallel")
    assert threads.pick(kernels, threads.PARALLEL_MIN_WORK) == "parallel"
    assert threads.pick(kernels, threads.PARALLEL_MIN_WORK - 1) == "serial"
    monkeypatch.setattr("os.getloadavg", lambda: (99.0, 99.0, 99.0))
    assert threads.pick(kernels, 2**40) == "parallel"


def test_switch_argument_then_environment_then_on(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert kernels_enabled() and backend().name == "numba"
    monkeypatch.setenv(ENV_VAR, "0")
    assert backend() is NUMPY and backend(True).name == "numba"
    monkeypatch.setenv(ENV_VAR, "1")
    assert backend(False) is NUMPY and backend().linear is fused_linear.linear and NUMPY.linear is None
    monkeypatch.setenv(ENV_VAR, "maybe")
    with pytest.raises(ConfigError, match=ENV_VAR):
        backend()


def test_import_minigemma_compiles_nothing():
    """Numba (and its compile cost) stays out of `import minigemma`; it comes with the first model run."""
    code = "import sys, minigemma; print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=os.getcwd())
    assert out.stdout.strip() == "False"


def test_cli_switch_flag_and_environment(tmp_path):
    """`--kernels / --no-kernels` on every command that loads a model, else $MINIGEMMA_KERNELS."""
    from weights_tools.random_checkpoint import PRESETS, write_random_checkpoint

    write_random_checkpoint(str(tmp_path), PRESETS["tiny"])

    def backend_line(*flags, env=None):
        r = subprocess.run(
            [sys.executable, "-m", "minigemma", "info", "--model", str(tmp_path), *flags],
            capture_output=True, text=True, env=dict(os.environ, **(env or {})),
        )
        assert r.returncode == 0, r.stderr
        return next(line for line in r.stdout.splitlines() if line.startswith("backend:"))

    assert "numba" in backend_line(env={ENV_VAR: "1"}) and "numpy" in backend_line("--no-kernels", env={ENV_VAR: "1"})
    assert "numpy" in backend_line(env={ENV_VAR: "0"}) and "numba" in backend_line("--kernels", env={ENV_VAR: "0"})

"""The handful of elementwise and matrix primitives every feature file shares.

Kept in one place so that the math of each feature reads the same everywhere and so that a
faster `linear` (e.g. one that reads bf16 weights directly) changes one function, not twenty.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

SQRT_2_OVER_PI = np.float32(np.sqrt(2.0 / np.pi))
GELU_TANH_CUBIC = np.float32(0.044715)


def linear(x: np.ndarray, weight, bias: np.ndarray | None = None) -> np.ndarray:
    """`x @ weight.T (+ bias)`, weights stored as PyTorch stores them: (out_features, in_features).

    `weight` is a float32 array, or a `checkpoint.StoredMatrix` (float32 or bf16 kept as stored,
    with the Numba kernels), which multiplies itself."""
    y = x @ weight.T if isinstance(weight, np.ndarray) else weight.apply(x)
    return y if bias is None else y + bias


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU with the tanh approximation (`gelu_pytorch_tanh`), Gemma's activation."""
    return 0.5 * x * (1.0 + np.tanh(SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x * x * x)))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


ACTIVATIONS = {
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_new": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "silu": silu,
    "relu": relu,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ConfigError(f"hidden_activation: expected one of {sorted(ACTIVATIONS)}, found {name!r}")
    return ACTIVATIONS[name]


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (the max is subtracted first; -inf entries get weight 0)."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def soft_cap(x: np.ndarray, cap: float) -> np.ndarray:
    """`cap * tanh(x / cap)`: squashes values smoothly into (-cap, cap)."""
    return np.float32(cap) * np.tanh(x / np.float32(cap))


def no_tap(name: str, value: np.ndarray) -> None:
    """The default `tap`: a named activation goes nowhere. Every feature that names its steps
    takes a `tap(name, array)`; `trace.py` passes one that records them."""


def scoped(tap, prefix: str):
    """A tap that prefixes names: `scoped(tap, "layers.3.")("out", h)` calls `tap("layers.3.out", h)`."""
    if tap is no_tap:  # nothing records: no prefixing either (a decode step names ~200 steps)
        return no_tap
    return lambda name, value: tap(prefix + name, value)

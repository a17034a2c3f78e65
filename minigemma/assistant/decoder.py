"""The drafter's decoder stack: Gemma 4 layers that attend to the *target's* keys and values
(mirrors `Gemma4AssistantForCausalLM.forward` and its `create_attention_masks`).

The drafter keeps no cache and computes no keys or values: each of its layers reads those the
target already holds for the last layer of the same type (`shared_kv_states`; KV sharing across
models, the way the target's own last layers share within it). Its only query sits at a fixed
position: the position of the token it was handed (the target's last token, whose own keys the
target has not computed yet), however many tokens it drafts.

Which target keys a drafter layer sees:

* full-attention layers: every position the target holds;
* sliding layers: the last `sliding_window + 1` positions before its own. The reference builds this
  mask as a *bidirectional* window (|q - k| <= window, from key 0) flipped on the key axis so that
  it reaches into the past; in the causal terms of `attention.attention_mask` (a query sees itself
  and the `window - 1` positions before it) that is a window of `sliding_window + 2`, its own
  position being empty. The target's ring buffers keep that many (`KVCache` `lookback`).

The layers themselves are the target's: `text/layer.py` with every layer marked `reuse`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import ConfigError
from ..text.backend import NUMPY
from ..text.config import LayerSpec, TextConfig
from ..text.layer import ForwardContext, decoder_layer
from ..text.model import rope_for_positions
from ..text.norm import rms_norm
from ..text.ops import no_tap

FLIPPED_WINDOW_EXTRA = 2  # bidirectional reach `window` from key 0, flipped: window + 1 past keys


def sliding_lookback(text: TextConfig) -> int:
    """How many past positions a drafter's sliding layer reads: the target must keep that many."""
    return text.sliding_window + 1 if any(s.is_sliding for s in text.layers) else 0


def kv_producers(target: TextConfig) -> dict[str, LayerSpec]:
    """The target's layer that holds the keys/values of each layer type: the last one that computes
    its own (`store` when the target shares KV, else simply the last of its type)."""
    producers = {}
    for spec in target.layers:
        if not spec.reuses_kv:
            producers[spec.layer_type] = spec
    return producers


def check_pairing(drafter: TextConfig, backbone_hidden: int, target: TextConfig) -> None:
    """A drafter fits a target when their widths, vocabularies and attention shapes agree."""
    if backbone_hidden != target.hidden_size:
        raise ConfigError(f"backbone_hidden_size: the assistant expects {backbone_hidden}, the target's hidden_size is {target.hidden_size}")
    if drafter.vocab_size != target.vocab_size:
        raise ConfigError(f"text_config.vocab_size: the assistant has {drafter.vocab_size}, the target {target.vocab_size}")
    producers = kv_producers(target)
    for spec in drafter.layers:
        p = producers.get(spec.layer_type)
        if p is None:
            raise ConfigError(f"text_config.layer_types: assistant layer {spec.index} is {spec.layer_type}, the target has no such layer")
        if (spec.head_dim, spec.num_kv_heads) != (p.head_dim, p.num_kv_heads):
            raise ConfigError(
                f"text_config: assistant layer {spec.index} ({spec.layer_type}) expects head_dim {spec.head_dim} and "
                f"{spec.num_kv_heads} KV heads; the target's layer {p.index} has {p.head_dim} and {p.num_kv_heads}"
            )


def stack_config(text: TextConfig) -> TextConfig:
    """The config the layers run with: the flipped bidirectional window as a causal one."""
    return replace(text, sliding_window=text.sliding_window + FLIPPED_WINDOW_EXTRA)


def run_stack(x: np.ndarray, position: int, target_kv: dict, layers, final_norm, stack_cfg: TextConfig,
              backend=NUMPY, tap=no_tap) -> np.ndarray:
    """x (1, hidden) at `position` -> final-normed (1, hidden). `target_kv`: layer type ->
    (keys, values, positions) the target holds for it, positions all before `position`."""
    positions = np.array([position])
    shared = {s.index: target_kv[s.layer_type] for s in stack_cfg.layers}
    ctx = ForwardContext(positions=positions, rope=rope_for_positions(positions, stack_cfg), shared_kv=shared,
                         tap=tap, backend=backend)
    h = x
    for spec, w in zip(stack_cfg.layers, layers):
        h = decoder_layer(h, w, spec, stack_cfg, ctx)
    h = rms_norm(h, final_norm, stack_cfg.rms_norm_eps)
    tap("final_norm", h)
    return h

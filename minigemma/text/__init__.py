"""The Gemma 4 text decoder, one feature per file (and Gemma 3's, through a few switches).

Read in the order the forward pass runs:

    config.py       Gemma4TextConfig and its derivations (layer types, KV sharing, per-layer head
                    dims); layer_plan.py: the sliding/global pattern; gemma3.py: Gemma 3's switches
    ops.py          the shared primitives: linear, GeGLU's gelu, softmax, soft-cap, named taps
    model.py        the text model: scaled embedding, the layers, final norm, tied head, soft-cap
    ple.py          Per-Layer Embeddings: the token table and the context projection
    norm.py         RMSNorm, with and without scale
    rope.py         the dual RoPE: default (sliding layers), proportional partial-rotary (global)
    attention.py    GQA with q/k/v norms, sliding vs global masks, k_eq_v, KV sharing
    multimodal.py   soft tokens of images and audio merged in; image blocks attend both ways
    mlp.py          the GeGLU MLP (double-wide on KV-shared layers)
    moe.py          the router, the experts, beside the dense MLP as the always-on shared expert
    layer.py        one decoder layer: four norms, residuals, layer_scalar
    backend.py      which implementation runs the hot loops (NumPy twins here; kernels/ has the rest)
"""

from .config import ModelConfig, TextConfig, config_from_dict, load_config
from .model import text_forward

__all__ = ["ModelConfig", "TextConfig", "config_from_dict", "load_config", "text_forward"]

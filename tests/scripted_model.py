"""A checkpoint whose greedy continuation is known in advance, for end-to-end CLI tests.

Every attention and MLP weight is zero, so each layer passes the residual stream through; the
embeddings are one-hot (hidden size = vocabulary size); the untied head row of token `next[x]` is
the one-hot of `x`. So the model's most likely next token depends only on the current one, as a
lookup table `next` says: a script. Its margin (sqrt(hidden) against 0) makes the script win at
any sane temperature too. The architecture is still Gemma 4's (a sliding layer with a small window
and a global one), and the files are the usual config.json + model.safetensors.
"""

from __future__ import annotations

import json
import os

import numpy as np

from minigemma.weights.checkpoint import write_safetensors
from weights_tools.random_checkpoint import expected_tensors


def add_chain(script: dict[int, int], start: int, tokens: list[int]) -> None:
    """start -> tokens[0] -> tokens[1] -> ...; a token may have only one successor."""
    for a, b in zip([start, *tokens[:-1]], tokens):
        if script.get(a, b) != b:
            raise ValueError(f"token {a} would need two successors ({script[a]} and {b}); pick other text")
        script[a] = b


def write_scripted_checkpoint(out: str, vocab_size: int, script: dict[int, int], default: int, eos: list[int],
                              max_position_embeddings: int = 128, sliding_window: int = 4) -> str:
    """config.json + model.safetensors of a model that greedily follows `script`, every other
    token being followed by `default`."""
    config = {
        "model_type": "gemma4_text", "vocab_size": vocab_size, "hidden_size": vocab_size, "intermediate_size": 8,
        "num_hidden_layers": 2, "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 8,
        "global_head_dim": 8, "sliding_window": sliding_window, "layer_types": ["sliding_attention", "full_attention"],
        "hidden_size_per_layer_input": 0, "tie_word_embeddings": False, "final_logit_softcapping": None,
        "max_position_embeddings": max_position_embeddings, "eos_token_id": eos, "bos_token_id": 2, "pad_token_id": 0,
    }
    head = np.zeros((vocab_size, vocab_size), np.float32)  # (next token, current token)
    head[[script.get(x, default) for x in range(vocab_size)], np.arange(vocab_size)] = 1.0

    def values(name, shape):
        if name.endswith("embed_tokens.weight"):
            return np.eye(vocab_size, dtype=np.float32)
        if name == "lm_head.weight":
            return head
        if name.endswith("norm.weight") or name.endswith("layer_scalar"):
            return np.ones(shape, np.float32)
        return np.zeros(shape, np.float32)

    os.makedirs(out, exist_ok=True)
    tensors = {n: (s, lambda n=n, s=s: values(n, s)) for n, s in expected_tensors(config).items()}
    write_safetensors(os.path.join(out, "model.safetensors"), tensors, {"format": "pt"}, dtype="F32")
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return out

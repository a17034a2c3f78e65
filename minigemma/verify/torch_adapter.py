"""Trace *your* PyTorch port under minigemma's names: forward hooks from a short table.

A port's forward pass is its own code; what minigemma needs from it is the value at each named
step (docs/verify.md). In PyTorch every step worth naming is an input or output of some module,
so one table says it all: a row per name (`{i}` runs over the layers), the module that computes
it, the point of that module, and an optional fix-up from the port's layout to minigemma's:

    table = [
        ("embed",               "model.layers.0",                "input"),
        ("layers.{i}.attn.q",   "model.layers.{i}.attn.q_norm",  "output"),
        ("layers.{i}.attn.context", "model.layers.{i}.attn.o_proj", "input", (drop_batch, split_heads(8))),
        ("layers.{i}.out",      "model.layers.{i}",              "output"),
        ("logits",              "",                              "output.logits"),
    ]
    acts = trace_torch(model, table, lambda: model(torch.tensor([ids])))
    save_trace("port.safetensors", acts, trace_metadata(None, ids, "my port"))

Points: `input` (the module's first argument), `input[k]` (its k-th positional argument),
`kwarg:NAME` (the argument NAME, by keyword or position), `output`, `output[k]` (one element of
an output tuple), `output.NAME` (an attribute of the output, e.g. `.logits`). Fix-ups are plain
functions of a NumPy array; a row without one gets `trace_torch`'s default (drop the batch axis).
`reference_table` is the table for modules named as in transformers' Gemma 4 (which many ports
mirror, to load the published weights): the same points `reference.py` hooks.

torch is imported only when a model is traced, so this file (and its tables) loads without it.
"""

from __future__ import annotations

import inspect
import re

import numpy as np

from ..errors import InputError
from .trace import forward_order

# (name within layer i, module path within `layers.{i}`, point): the reference's decoder layer.
# Modules a layer lacks (k_norm on a KV-shared layer, the router without MoE) give no name.
ATTENTION_POINTS = (
    ("attn.in", "input_layernorm", "output"),
    ("attn.q", "self_attn.q_norm", "output"),  # RoPE is applied after, by a plain function
    ("attn.k", "self_attn.k_norm", "output"),
    ("attn.v", "self_attn.v_norm", "output"),
    ("attn.context", "self_attn.o_proj", "input"),
    ("attn.out", "self_attn.o_proj", "output"),
    ("attn.post_norm", "post_attention_layernorm", "output"),
    ("attn.residual", "pre_feedforward_layernorm", "input"),
    ("mlp.in", "pre_feedforward_layernorm", "output"),
    ("mlp.gated", "mlp.down_proj", "input"),
    ("mlp.out", "mlp", "output"),
)
DENSE_POINTS = (("mlp.post_norm", "post_feedforward_layernorm", "output"),)
MOE_POINTS = (
    ("mlp.post_norm", "post_feedforward_layernorm_1", "output"),
    ("moe.router.probs", "router", "output[0]"),
    ("moe.router.top_k_weights", "router", "output[1]"),
    ("moe.router.top_k_index", "router", "output[2]"),
    ("moe.experts.in", "pre_feedforward_layernorm_2", "output"),
    ("moe.experts.out", "experts", "output"),
    ("moe.experts.post_norm", "post_feedforward_layernorm_2", "output"),
    ("moe.out", "post_feedforward_layernorm", "input"),
    ("moe.post_norm", "post_feedforward_layernorm", "output"),
)
PLE_POINTS = (
    ("ple.in", "per_layer_input_gate", "input"),
    ("ple.gated", "per_layer_projection", "input"),
    ("ple.out", "per_layer_projection", "output"),
    ("ple.post_norm", "post_per_layer_input_norm", "output"),
)
LAYER_OUTPUT = (("out", "", "output"),)  # the decoder layer itself, after `layer_scalar`
# Model-level names, module paths within the text model. `ple.inputs` (every layer's second
# input, stacked) is not one module's value: `reference.py` stacks it; a table leaves it out.
MODEL_POINTS = (
    ("embed", "layers.0", "input"),  # the text model's input embeddings, soft tokens merged in
    ("ple.identity", "embed_tokens_per_layer", "output"),
    ("ple.context", "per_layer_projection_norm", "output"),
    ("final_norm", "norm", "output"),
)
# The MoE router and experts run on tokens flattened across the batch: no batch axis to drop.
FLAT = ("moe.router.probs", "moe.router.top_k_weights", "moe.router.top_k_index", "moe.experts.in", "moe.experts.out")
POINT = re.compile(r"input|input\[(\d+)\]|kwarg:(\w+)|output|output\[(\d+)\]|output\.(\w+)")


# Fix-ups: the port's layout -> minigemma's (one sequence, axis 0 the token).


def drop_batch(a: np.ndarray) -> np.ndarray:
    """(1, seq, ...) -> (seq, ...): a trace is one sequence."""
    return a[0]


def split_heads(heads: int):
    """(..., heads * head_dim) -> (..., heads, head_dim), e.g. o_proj's input."""
    return lambda a: a.reshape(*a.shape[:-1], heads, -1)


def split_last(n: int):
    """(..., n * m) -> (..., n, m), e.g. the packed per-layer embeddings."""
    return split_heads(n)


def transpose(*axes: int):
    """Axes reordered, e.g. transpose(1, 0, 2) for (heads, seq, dim) -> (seq, heads, dim)."""
    return lambda a: np.ascontiguousarray(a.transpose(*axes))


AS_IS = ()  # a row's fix-up that keeps the value as the module had it


def reference_table(num_attention_heads: int, num_hidden_layers: int, moe: bool = False, prefix: str = "model") -> list[tuple]:
    """The table for a Gemma 4 text model whose modules are named as in transformers
    (`prefix` = the text model's path: `model`, or `model.language_model`). Rows for modules a
    model lacks (PLE, k/v norms of KV-shared layers) bind nothing. `logits` is the whole model's
    `.logits`; with a different output, replace that row."""
    at = f"{prefix}." if prefix else ""
    fixes = {"attn.context": (drop_batch, split_heads(num_attention_heads)), "ple.identity": (drop_batch, split_last(num_hidden_layers))}
    ffw = MOE_POINTS if moe else DENSE_POINTS
    rows = [(name, at + path, point, fixes.get(name)) for name, path, point in MODEL_POINTS]
    for step, path, point in ATTENTION_POINTS + ffw + PLE_POINTS + LAYER_OUTPUT:
        fix = AS_IS if step in FLAT else fixes.get(step)
        rows.append((f"layers.{{i}}.{step}", f"{at}layers.{{i}}" + (f".{path}" if path else ""), point, fix))
    return [r if r[3] is not None else r[:3] for r in rows] + [("logits", "", "output.logits")]


def trace_torch(model, table, run, fix=drop_batch) -> dict[str, np.ndarray]:
    """Run `run()` (which calls `model` on one sequence) with a hook per table row; return the
    named values as NumPy arrays (float32; integers as int64), in forward order.

    A row is (name, module path, point) or (name, module path, point, fix-up): a function or a
    tuple of functions (applied in order) of the array; rows without one get `fix`. `{i}` in the
    name and the path runs over every module path that matches (the layers a port has)."""
    import torch

    values: dict[str, np.ndarray] = {}
    handles = []
    try:
        for row in table:
            name, path, point, *rest = row
            fixes = (rest[0] if rest else fix) or ()
            fixes = fixes if isinstance(fixes, tuple | list) else (fixes,)
            for bound_name, module in bind(model, name, path):
                handles.append(hook(module, point, _keeper(values, bound_name, fixes, torch)))
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return {n: values[n] for n in forward_order(values)}


def bind(model, name: str, path: str) -> list[tuple[str, object]]:
    """(name, module) for a row: `{i}` in `path` matched against the model's module paths."""
    if "{i}" not in path:
        try:
            return [(name, model.get_submodule(path))]
        except AttributeError:
            if path.endswith(_OPTIONAL):
                return []
            raise InputError(f"table row {name!r}: the model has no module {path!r}") from None
    pattern = re.compile(re.escape(path).replace(re.escape("{i}"), r"(\d+)"))
    found = [(name.replace("{i}", m[1]), module) for p, module in model.named_modules() if (m := pattern.fullmatch(p))]
    if not found and not path.endswith(_OPTIONAL):
        raise InputError(f"table row {name!r}: no module of the model matches {path!r}")
    return found


# modules a Gemma 4 model may lack altogether (no PLE, no MoE, every layer KV-shared...): a
# reference-table row naming them binds nothing rather than failing
_OPTIONAL = ("embed_tokens_per_layer", "per_layer_projection_norm",
             "k_norm", "v_norm", "per_layer_input_gate", "per_layer_projection", "post_per_layer_input_norm",
             "router", "experts", "pre_feedforward_layernorm_2", "post_feedforward_layernorm_1",
             "post_feedforward_layernorm_2", "post_feedforward_layernorm")  # fmt: skip


def hook(module, point: str, keep):
    """Register a hook calling `keep(tensor)` at `point` of `module`; returns its handle. Inputs
    are taken by a pre-hook (before the module can change anything), outputs by a forward hook."""
    m = POINT.fullmatch(point)
    if m is None:
        raise InputError(f"table point {point!r}: expected input, input[k], kwarg:NAME, output, output[k] or output.NAME")
    if point.startswith(("input", "kwarg:")):
        params = [p for p in inspect.signature(module.forward).parameters]
        arg = m[2] or params[int(m[1] or 0)]
        position = params.index(arg) if arg in params else None

        def pre(mod, args, kw):
            keep(kw[arg] if arg in kw else args[position])

        return module.register_forward_pre_hook(pre, with_kwargs=True)
    if point == "output":
        return module.register_forward_hook(lambda mod, args, out: keep(out[0] if isinstance(out, tuple) else out))
    if m[3] is not None:
        return module.register_forward_hook(lambda mod, args, out: keep(out[int(m[3])]))
    return module.register_forward_hook(lambda mod, args, out: keep(getattr(out, m[4])))


def _keeper(values: dict, name: str, fixes, torch):
    def keep(t):
        if name in values:
            raise InputError(f"trace_torch: the module behind {name!r} ran twice; trace one forward pass of one sequence")
        if not isinstance(t, torch.Tensor):
            raise InputError(f"trace_torch: {name!r} is a {type(t).__name__} at its table point, not a tensor (try output[k])")
        t = t.detach().cpu()
        a = t.numpy() if not t.is_floating_point() else t.float().numpy()
        a = a.astype(np.int64) if a.dtype.kind in "iu" else a
        for f in fixes:
            a = f(a)
        values[name] = np.ascontiguousarray(a)

    return keep


def hf_kv_sources(model) -> dict[int, int]:
    """Which layer's keys/values each KV-shared layer reads, in a model whose attention modules
    carry transformers' flags (`is_kv_shared_layer`, `store_full_length_kv`, `layer_type`): each
    shared layer reads the last storing layer of its type before it, as `KVSharingDict` hands it.
    Read from the modules, so it reports what the model will do, not what its config says."""
    attns = {}
    for path, module in model.named_modules():
        m = re.search(r"layers\.(\d+)\.self_attn$", path)
        if m and not any(t in path for t in TOWERS) and hasattr(module, "is_kv_shared_layer"):
            attns[int(m[1])] = module
    sources, last_store = {}, {}
    for i, attn in sorted(attns.items()):
        if attn.is_kv_shared_layer and attn.layer_type in last_store:
            sources[i] = last_store[attn.layer_type]
        if getattr(attn, "store_full_length_kv", False):
            last_store[attn.layer_type] = i
    return sources


TOWERS = ("vision_tower", "audio_tower")  # their layers are not the text model's

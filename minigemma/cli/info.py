"""`minigemma info`: what a checkpoint contains (text model, vision and audio towers, parameters
per part, context length, chat template), and what it costs in memory (resident vs mapped)."""

from __future__ import annotations

import os
import sys

import numpy as np

from ..errors import plural
from .common import add_model_flag


def add_info(sub) -> None:
    p = sub.add_parser("info", help="describe a checkpoint", description="Describe a checkpoint: architecture, sizes, memory.")
    add_model_flag(p)
    p.set_defaults(run=run_info)


def run_info(args) -> int:
    from ..loading import load

    model = load(args.model, kernels=args.kernels, mmproj=args.mmproj)
    for line in describe(model):
        print(line)
    return 0


def describe(model) -> list[str]:
    t = model.config.text
    pattern = "".join("G" if s.layer_type == "full_attention" else "S" for s in t.layers)
    kv = "".join({None: ".", "store": "P", "reuse": "R"}[s.kv_sharing] for s in t.layers)
    lines = [
        f"model:       {model.path}",
        f"type:        {model.config.model_type}",
        f"layers:      {t.num_hidden_layers}  [{pattern}]  (S sliding window {t.sliding_window}, G global)",
        f"kv sharing:  [{kv}]  (P stores keys/values, R reuses them)",
        f"hidden:      {t.hidden_size}, vocab {t.vocab_size}, MLP {t.intermediate_size}"
        + (" (double-wide on shared layers)" if t.use_double_wide_mlp and t.num_kv_shared_layers else ""),
    ]
    for layer_type in sorted(set(t.layer_types)):
        spec = next(s for s in t.layers if s.layer_type == layer_type)
        r = t.rope[layer_type]
        lines.append(
            f"{'sliding' if spec.is_sliding else 'global'} attn: {t.num_attention_heads} heads x {spec.head_dim}, "
            f"{plural(spec.num_kv_heads, 'KV head')}; RoPE {r.rope_type} theta {r.theta:g}"
            + (f", rotary fraction {r.partial_rotary_factor:g}" if r.rope_type == "proportional" else "")
        )
    if t.has_ple:
        lines.append(f"PLE:         {t.hidden_size_per_layer_input} per layer, table {t.vocab_size_per_layer_input} rows")
    if t.enable_moe_block:
        lines.append(f"MoE:         {t.num_experts} experts, top-{t.top_k_experts}, width {t.moe_intermediate_size}")
    if t.final_logit_softcapping:
        lines.append(f"soft-cap:    {t.final_logit_softcapping:g}")
    lines.append(f"context:     {t.max_position_embeddings:,} tokens (max_position_embeddings)")
    if model.config.model_type == "gemma4_unified":  # no towers: embedders of raw patches and frames
        lines += describe_unified(model)
    else:
        lines.append(describe_vision(model.vision) if model.vision is not None else "vision:      none")
        lines.append(describe_audio(model.audio) if model.audio is not None else "audio:       none")
    lines.append(f"parameters:  {describe_parameters(model)}")
    lines.append(f"chat:        {describe_chat(model)}")
    resident, mapped = memory_bytes((model.weights, model.vision, model.audio))
    lines.append(
        f"memory:      {resident / 2**20:.1f} MiB resident (arrays in memory), {mapped / 2**20:.1f} MiB memory-mapped "
        f"(weights kept as stored in the file, read as used); process RSS now {rss_bytes() / 2**20:.1f} MiB"
    )
    lines.append(f"backend:     {model.backend.name} (--kernels / --no-kernels, or MINIGEMMA_KERNELS=1 / 0)")
    return lines


def count_parameters(weights) -> int:
    """Elements of every distinct array under `weights` (a tied head counts once)."""
    seen, total, stack = set(), 0, [weights]
    while stack:
        obj = stack.pop()
        if isinstance(obj, np.ndarray):
            if id(obj) not in seen:
                seen.add(id(obj))
                total += obj.size
        elif isinstance(obj, tuple | list):
            stack.extend(obj)
        elif hasattr(obj, "__dataclass_fields__"):
            stack.extend(getattr(obj, f) for f in obj.__dataclass_fields__)
    return total


def parameter_parts(model) -> dict[str, int]:
    """Parameter counts by part: the text model's embedding, Per-Layer-Embedding table, decoder
    layers (of which routed experts), and each tower."""
    w = model.weights
    parts = {"embedding": count_parameters(w.embed), "PLE": count_parameters(w.ple) if w.ple is not None else 0,
             "layers": count_parameters((w.layers, w.final_norm))}
    experts = count_parameters([layer.moe.experts for layer in w.layers if layer.moe is not None])
    if experts:
        parts["of which experts"] = experts
    if w.lm_head is not w.embed:
        parts["head"] = count_parameters(w.lm_head)
    for name, tower in (("vision", model.vision), ("audio", model.audio)):
        if tower is not None:
            parts[name] = count_parameters(tower)
    return parts


def describe_parameters(model) -> str:
    parts = parameter_parts(model)
    total = sum(n for name, n in parts.items() if not name.startswith("of which"))
    return f"{_count(total)} in all: " + ", ".join(f"{name} {_count(n)}" for name, n in parts.items() if n)


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"


def describe_chat(model) -> str:
    from ..generate.tokenizer import has_tokenizer

    if not (model.path and has_tokenizer(model.path)):
        return "no tokenizer, so no chat template (ids in, ids out)"
    if model.tokenizer.chat_template is None:
        return "no chat template (minigemma chat needs one; minigemma generate works)"
    return "chat template present (minigemma chat --model this)"


def describe_vision(tower) -> str:
    v = tower.config
    return (f"vision:      encoder {v.num_hidden_layers} layers x {v.hidden_size}, {v.num_attention_heads} heads, "
            f"{v.patch_size}-pixel patches, {v.pooling_kernel_size}x{v.pooling_kernel_size} pooling per soft token, "
            f"grids up to {v.position_embedding_size} patches a side")


def rss_bytes() -> int:
    """This process's resident set now: the arrays in memory plus the mapped pages read so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):  # not Linux: the peak instead
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def describe_unified(model) -> list[str]:
    v, a = model.vision, model.audio
    lines = []
    if v is not None:
        c = v.config
        lines.append(f"vision:      no tower; {c.model_patch_size} x {c.model_patch_size}-pixel patches ({c.patch_size}-pixel, "
                     f"merged {c.pooling_kernel_size} x {c.pooling_kernel_size}) -> {c.mm_embed_dim} -> text, one soft token each")
    else:
        lines.append("vision:      none")
    if a is not None:
        ms = a.config.samples_per_token * 1000 / a.features.sampling_rate
        lines.append(f"audio:       no tower; raw frames of {a.config.samples_per_token} samples ({ms:g} ms) -> text, one soft token each")
    else:
        lines.append("audio:       none")
    return lines


def describe_audio(tower) -> str:
    from ..audio.subsample import NUM_CONVS, STRIDE

    a, f = tower.config, tower.features
    return (
        f"audio:       conformer {a.num_hidden_layers} layers x {a.hidden_size}, {a.num_attention_heads} heads, chunks of "
        f"{a.attention_chunk_size} (+{a.max_past_horizon} left, +{a.attention_context_right} right)"
        + (", clipped linears" if a.use_clipped_linears else "")
        + f"; {f.feature_size} mel bins, {STRIDE**NUM_CONVS * f.hop_length_ms:g} ms per soft token"
    )


def memory_bytes(weights) -> tuple[int, int]:
    """Bytes of arrays we own (resident) vs arrays that are views of a mapped file."""
    seen, resident, mapped = set(), 0, 0
    stack = [weights]
    while stack:
        obj = stack.pop()
        if isinstance(obj, np.ndarray):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if _is_mapped(obj):
                mapped += obj.nbytes
            else:
                resident += obj.nbytes
        elif isinstance(obj, tuple | list):
            stack.extend(obj)
        elif hasattr(obj, "__dataclass_fields__"):
            stack.extend(getattr(obj, f) for f in obj.__dataclass_fields__)
    return resident, mapped


def _is_mapped(a: np.ndarray) -> bool:
    import mmap

    base = a
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)

"""Named activations: the value after every step of the forward pass, under a stable name
(mirrors forward hooks on the reference; the reference side is `verify/reference.py`).

Someone porting Gemma 4 to C++, Rust, MLX or JAX needs more than final logits to find a bug:
they need every intermediate value, named the same way in their port, in minigemma and in the
PyTorch reference. Every feature function here takes a `tap(name, array)` and calls it at each
named step; `forward` passes a tap that does nothing, `Model.trace` one that records (a
`Recorder`). So a trace *is* the forward pass, not a second implementation of it.

Each name is one step and also a module input or output in the reference, so forward hooks
capture it there: e.g. `layers.3.attn.q` is the output of `q_norm` (before RoPE, which is a
plain function in the reference, not a module). The table of names, shapes, axis order and
reference module is docs/verify.md. Forward order (what `compare` walks to find the *first*
divergence) is `order_key` below: vision and audio towers run first, then the text model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError

TEXT_BEFORE_LAYERS = ("embed", "ple.identity", "ple.context", "ple.inputs")
# One decoder layer, in execution order; a layer has the subset its config switches on
# (no k/v on KV-shared layers, moe.* only with MoE, ple.* only with Per-Layer Embeddings).
LAYER_STEPS = (
    "attn.in", "attn.q", "attn.k", "attn.v", "attn.context", "attn.out", "attn.post_norm", "attn.residual",
    "mlp.in", "mlp.gated", "mlp.out", "mlp.post_norm",
    "moe.router.probs", "moe.router.top_k_weights", "moe.router.top_k_index",
    "moe.experts.in", "moe.experts.out", "moe.experts.post_norm", "moe.out", "moe.post_norm",
    "ple.in", "ple.gated", "ple.out", "ple.post_norm",
    "out",
)  # fmt: skip
TEXT_AFTER_LAYERS = ("final_norm", "logits")
# The vision tower, every image's values one after another on axis 0 (see docs/verify.md).
VISION_BEFORE_LAYERS = ("patch_embed",)
VISION_LAYER_STEPS = ("out",)
VISION_AFTER_LAYERS = ("pooled", "out", "soft_tokens")
# The audio tower, every clip's real frames one after another on axis 0 (see docs/verify.md).
AUDIO_BEFORE_LAYERS = ("subsample",)
AUDIO_LAYER_STEPS = ("ffw1.out", "attn.in", "attn.out", "attn.post_norm", "conv.out", "ffw2.out", "out")
AUDIO_AFTER_LAYERS = ("out", "soft_tokens")
# An MTP assistant's draft step (`generate/speculative.trace_draft`): its layers name their steps as the target's do.
ASSISTANT_BEFORE_LAYERS = ("pre_projection",)
ASSISTANT_AFTER_LAYERS = ("final_norm", "post_projection", "logits")
# The unified model's embedders (no towers); a video's frames go under `video.` + the vision names.
UNIFIED_VISION_STEPS = ("patch_embed", "out", "soft_tokens")
UNIFIED_AUDIO_STEPS = ("soft_tokens",)


@dataclass(frozen=True)
class Section:
    """One model in a forward pass: names `prefix + step`, in the order before, layers, after."""

    prefix: str
    before: tuple[str, ...]
    layer_steps: tuple[str, ...]
    after: tuple[str, ...]


# The order the towers run in; the encoders' soft tokens are merged into `embed`.
SECTIONS = (
    Section("vision.", VISION_BEFORE_LAYERS, VISION_LAYER_STEPS, VISION_AFTER_LAYERS),
    Section("unified.vision.", UNIFIED_VISION_STEPS, (), ()),
    Section("video.vision.", VISION_BEFORE_LAYERS, VISION_LAYER_STEPS, VISION_AFTER_LAYERS),
    Section("video.unified.vision.", UNIFIED_VISION_STEPS, (), ()),
    Section("audio.", AUDIO_BEFORE_LAYERS, AUDIO_LAYER_STEPS, AUDIO_AFTER_LAYERS),
    Section("unified.audio.", UNIFIED_AUDIO_STEPS, (), ()),
    Section("", TEXT_BEFORE_LAYERS, LAYER_STEPS, TEXT_AFTER_LAYERS),
    Section("assistant.", ASSISTANT_BEFORE_LAYERS, LAYER_STEPS, ASSISTANT_AFTER_LAYERS),  # after the target's pass
)
LAYER_NAME = re.compile(r"layers\.(\d+)\.(.+)")


def order_key(name: str) -> tuple:
    """Sort key putting names in forward order; names minigemma does not know go last."""
    for rank, section in enumerate(SECTIONS):
        if not name.startswith(section.prefix):
            continue
        step = name[len(section.prefix) :]
        layer = LAYER_NAME.fullmatch(step)
        if layer and layer[2] in section.layer_steps:
            return (rank, 1, int(layer[1]), section.layer_steps.index(layer[2]), name)
        if step in section.before:
            return (rank, 0, 0, section.before.index(step), name)
        if step in section.after:
            return (rank, 2, 0, section.after.index(step), name)
    return (len(SECTIONS), 0, 0, 0, name)


def forward_order(names) -> list[str]:
    return sorted(names, key=order_key)


def as_patterns(names) -> tuple[str, ...] | None:
    """`names` as given by a user: None (everything), one glob pattern, or several."""
    if names is None:
        return None
    patterns = (names,) if isinstance(names, str) else tuple(names)
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise InputError(f"names: expected glob patterns such as 'layers.3.*', found {names!r}")
    return patterns


def select(available, names) -> list[str]:
    """The names matching any of the glob patterns `names` (None: all), in forward order."""
    patterns = as_patterns(names)
    if patterns is None:
        return forward_order(available)
    check_patterns(patterns, available)
    return forward_order(n for n in available if matches(n, patterns))


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern:
    """A name pattern as a regex. Names are dot-separated paths, so `*` and `?` stay within one
    segment (`layers.*.out` is every layer's output, not `layers.0.attn.out`), `**` crosses dots
    (`**.attn.out`), `[...]` is a character class; and a pattern that matches the first segments
    of a name selects the name (`layers.3` or `layers.3.*`: every step of layer 3)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append(r"[^.]*")
        elif c == "?":
            out.append(r"[^.]")
        elif c == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[^" + re.escape(body[1:]) + "]" if body.startswith("!") else "[" + re.escape(body) + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"(?:\..*)?")


def matches(name: str, patterns: tuple[str, ...] | None) -> bool:
    return patterns is None or any(glob_regex(p).fullmatch(name) for p in patterns)


def check_patterns(patterns: tuple[str, ...] | None, available, argument: str = "names") -> None:
    """A pattern that matches nothing is an error: a typo would otherwise select silently less."""
    for p in patterns or ():
        if not any(glob_regex(p).fullmatch(n) for n in available):
            examples = ", ".join(forward_order(available)[:4])
            raise InputError(f"{argument}: pattern {p!r} matches no activation (there are {len(available)}, e.g. {examples})")


class Recorder:
    """A `tap` that keeps a copy (later steps may reuse a buffer) of each activation whose name
    matches one of the glob patterns `names` (None: every one)."""

    def __init__(self, names=None):
        self.patterns = as_patterns(names)
        self.seen: set[str] = set()
        self.values: dict[str, np.ndarray] = {}

    def __call__(self, name: str, value: np.ndarray) -> None:
        if name in self.seen:  # two steps under one name would make the trace ambiguous
            raise AssertionError(f"activation {name!r} recorded twice in one forward pass")
        self.seen.add(name)
        if matches(name, self.patterns):
            self.values[name] = np.array(value)

    def result(self) -> dict[str, np.ndarray]:
        """The recorded activations, in forward order."""
        check_patterns(self.patterns, self.seen)
        return {n: self.values[n] for n in forward_order(self.values)}


def kv_sources(text_config) -> dict[int, int]:
    """Each KV-shared layer -> the layer whose keys and values it attends to (trace metadata)."""
    return {spec.index: spec.kv_producer for spec in text_config.layers if spec.reuses_kv}


def config_hash(config) -> str:
    """SHA-256 of the resolved model config (every derived quantity included), so two traces of
    the same model, however its config.json was spelled, carry the same hash."""
    resolved = {
        "model_type": config.model_type,
        "text": dataclasses.asdict(config.text),
        "vision": config.vision,
        "audio": config.audio,
    }
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()

"""The vision tower's configuration: `vision_config` in `config.json` -> a frozen `VisionConfig`.

Mirrors `Gemma4VisionConfig` (transformers 5.23.0): a key absent from the JSON takes the
reference's default. Every invalid field raises `ConfigError` naming it (`vision_config.head_dim`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..weights.config_reader import FieldReader
from ..errors import ConfigError
from ..text.ops import ACTIVATIONS

AXIAL_ROPE = "axial"  # the only RoPE the vision encoder has: x and y rotate separate halves

# Defaults of `Gemma4VisionConfig`.
VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 16,
    "num_attention_heads": 12,
    "num_key_value_heads": 12,
    "head_dim": 64,
    "hidden_activation": "gelu_pytorch_tanh",
    "rms_norm_eps": 1e-6,
    "rope_parameters": None,
    "pooling_kernel_size": 3,
    "patch_size": 16,
    "position_embedding_size": 10 * 1024,
    "use_clipped_linears": False,
    "standardize": False,
}
DEFAULT_ROPE = {"rope_type": AXIAL_ROPE, "rope_theta": 100.0}


@dataclass(frozen=True)
class VisionConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    hidden_activation: str
    rms_norm_eps: float
    rope_theta: float
    pooling_kernel_size: int  # k: each soft token averages a k x k block of patches
    patch_size: int  # pixels per patch side
    position_embedding_size: int  # rows of the x and y position tables: the largest grid side
    use_clipped_linears: bool
    standardize: bool  # soft tokens get (x - std_bias) * std_scale

    @property
    def patch_pixels(self) -> int:
        """Values per patch: 3 colour channels of patch_size x patch_size pixels."""
        return 3 * self.patch_size**2


def vision_config_from_dict(raw: dict, where: str = "vision_config.") -> VisionConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.rstrip('.')}: expected an object, found {type(raw).__name__}")
    c = {k: raw.get(k, v) for k, v in VISION_DEFAULTS.items()}
    r = FieldReader(c, where)
    heads, kv_heads, head_dim = (r.positive_int(n) for n in ("num_attention_heads", "num_key_value_heads", "head_dim"))
    if heads % kv_heads:
        r.fail("num_key_value_heads", f"a divisor of num_attention_heads={heads}", kv_heads)
    if head_dim % 4:  # axial RoPE gives x and y half of each head, each rotated in pairs
        r.fail("head_dim", "a multiple of 4 (axial 2-D RoPE splits it into x and y halves of pairs)", head_dim)
    rope = c["rope_parameters"] or DEFAULT_ROPE
    if not isinstance(rope, dict) or rope.get("rope_type", AXIAL_ROPE) != AXIAL_ROPE:
        r.fail("rope_parameters", f"an object with rope_type {AXIAL_ROPE!r}", rope)
    theta = FieldReader({"rope_theta": rope.get("rope_theta", DEFAULT_ROPE["rope_theta"])}, f"{where}rope_parameters.")
    return VisionConfig(
        hidden_size=r.positive_int("hidden_size"),
        intermediate_size=r.positive_int("intermediate_size"),
        num_hidden_layers=r.int_in_range("num_hidden_layers", 0, 2**31),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        hidden_activation=r.choice("hidden_activation", tuple(ACTIVATIONS)),
        rms_norm_eps=r.positive_float("rms_norm_eps"),
        rope_theta=theta.positive_float("rope_theta"),
        pooling_kernel_size=r.positive_int("pooling_kernel_size"),
        patch_size=r.positive_int("patch_size"),
        position_embedding_size=r.positive_int("position_embedding_size"),
        use_clipped_linears=r.boolean("use_clipped_linears"),
        standardize=r.boolean("standardize"),
    )

"""The audio tower's configuration (`audio_config` in `config.json`, `Gemma4AudioConfig`).

`ModelConfig.audio` keeps the raw dictionary; `audio_config_from_dict` turns it into a frozen
`AudioConfig`, filling absent keys with the reference's defaults (those of the released E2B / E4B
towers) and raising `ConfigError` naming the field for anything the conformer cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..weights.config_reader import FieldReader, is_int
from ..errors import ConfigError
from ..text.ops import ACTIVATIONS

# Defaults of `Gemma4AudioConfig` (transformers 5.23.0).
AUDIO_DEFAULTS: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "hidden_act": "silu",
    "subsampling_conv_channels": [128, 32],
    "conv_kernel_size": 5,
    "residual_weight": 0.5,
    "attention_chunk_size": 12,
    "attention_context_left": 13,
    "attention_context_right": 0,
    "attention_logit_cap": 50.0,
    "attention_invalid_logits_value": -1.0e9,
    "use_clipped_linears": True,
    "rms_norm_eps": 1e-6,
    "gradient_clipping": 1e10,
    "output_proj_dims": 1536,
}


@dataclass(frozen=True)
class AudioConfig:
    """The USM-style conformer: subsampling convs, then `num_hidden_layers` conformer layers."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    hidden_act: str
    subsampling_conv_channels: tuple[int, int]
    conv_kernel_size: int  # the light conv's depthwise kernel (not the subsampling convs')
    residual_weight: float  # feed-forward output scale before its residual add
    attention_chunk_size: int  # queries attend in blocks of this many frames
    attention_context_left: int  # keys to the left a block sees, counting the query frame itself
    attention_context_right: int  # keys to the right
    attention_logit_cap: float
    attention_invalid_logits_value: float  # the logit masked positions get (a fill, not -inf)
    use_clipped_linears: bool
    rms_norm_eps: float
    gradient_clipping: float  # activations are clamped to +-this between blocks
    output_proj_dims: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_past_horizon(self) -> int:
        return self.attention_context_left - 1

    @property
    def context_size(self) -> int:
        """Keys each block of queries sees: the block plus its left and right context."""
        return self.attention_chunk_size + self.max_past_horizon + self.attention_context_right


def audio_config_from_dict(raw: dict, where: str = "audio_config.") -> AudioConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where.rstrip('.')}: expected an object, found {type(raw).__name__}")
    c = {k: raw.get(k, v) for k, v in AUDIO_DEFAULTS.items()}
    r = FieldReader(c, where)
    hidden = r.positive_int("hidden_size")
    heads = r.positive_int("num_attention_heads")
    if hidden % heads or hidden % 2:
        r.fail("hidden_size", f"an even multiple of num_attention_heads={heads}", hidden)
    channels = c["subsampling_conv_channels"]
    if not (isinstance(channels, list | tuple) and len(channels) == 2 and all(is_int(v) and v > 0 for v in channels)):
        r.fail("subsampling_conv_channels", "two positive integers", channels)
    return AudioConfig(
        hidden_size=hidden,
        num_hidden_layers=r.positive_int("num_hidden_layers"),
        num_attention_heads=heads,
        hidden_act=r.choice("hidden_act", tuple(ACTIVATIONS)),
        subsampling_conv_channels=tuple(channels),
        conv_kernel_size=r.positive_int("conv_kernel_size"),
        residual_weight=r.number("residual_weight"),
        attention_chunk_size=r.positive_int("attention_chunk_size"),
        attention_context_left=r.positive_int("attention_context_left"),
        attention_context_right=r.int_in_range("attention_context_right", 0, 2**31),
        attention_logit_cap=r.positive_float("attention_logit_cap"),
        attention_invalid_logits_value=r.number("attention_invalid_logits_value"),
        use_clipped_linears=r.boolean("use_clipped_linears"),
        rms_norm_eps=r.positive_float("rms_norm_eps"),
        gradient_clipping=r.positive_float("gradient_clipping"),
        output_proj_dims=r.positive_int("output_proj_dims"),
    )

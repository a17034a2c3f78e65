"""Building blocks for comparing minigemma's audio path with the reference.

* `audio_config_kwargs`: a hypothesis strategy for small `Gemma4AudioConfig` keyword arguments
  reaching every switch (clipped linears, activation clamps that bite, small logit caps, finite
  invalid-logit fills, left / right context, chunk sizes, eps values that expose eps mix-ups),
  plus the number of mel bins the drawn subsampling channels accept;
* `reference_block_mask`: the blocked attention mask exactly as `Gemma4AudioModel.forward`
  builds it;
* `count_clipped`: how many values the reference's clipped linears actually clamp (a test whose
  bounds never bite would prove nothing about them); `calibrate_clip_bounds`: bounds that bite;
* `write_wav`: test WAV files written with the standard library (no binary fixtures).
"""

from __future__ import annotations

import wave

import numpy as np
import torch
from gemma_reference import randomize
from hypothesis import strategies as st
from transformers import Gemma4AudioConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.gemma4.modeling_gemma4 import Gemma4AudioModel, Gemma4ClippableLinear, sliding_window_mask_function

from minigemma.audio.config import audio_config_from_dict


@st.composite
def audio_config_kwargs(draw, max_layers: int = 2, clamps=(1e10, 2.0, 0.5)):
    """(kwargs for a small Gemma4AudioConfig, mel bins its subsampling accepts); `clamps`: the
    activation clamps (`gradient_clipping`) to draw from."""
    heads = draw(st.sampled_from([1, 2, 4]))
    # norms over fewer than 8 values amplify float32 rounding (the reference moves by 1e-4 when its
    # input moves by one ulp at width 4 with activation clamps of 0.5)
    head_dim = draw(st.sampled_from([8] if heads == 1 else [4, 8]))
    c0 = draw(st.sampled_from([4, 8, 12]))
    kw = dict(
        hidden_size=heads * head_dim,
        num_hidden_layers=draw(st.integers(1, max_layers)),
        num_attention_heads=heads,
        hidden_act=draw(st.sampled_from(["silu", "gelu_pytorch_tanh", "relu"])),
        subsampling_conv_channels=[c0, draw(st.sampled_from([4, 8]))],  # LayerNorm over 1-3 channels is ill-conditioned
        conv_kernel_size=draw(st.integers(1, 5)),
        residual_weight=draw(st.sampled_from([0.5, 0.3, 1.25])),
        attention_chunk_size=draw(st.integers(1, 6)),
        attention_context_left=draw(st.integers(1, 7)),
        attention_context_right=draw(st.integers(0, 4)),
        attention_logit_cap=draw(st.sampled_from([50.0, 2.0])),
        attention_invalid_logits_value=draw(st.sampled_from([-1e9, -3.0])),
        use_clipped_linears=draw(st.booleans()),
        rms_norm_eps=draw(st.sampled_from([1e-6, 1e-2])),
        gradient_clipping=draw(st.sampled_from(clamps)),
        output_proj_dims=draw(st.sampled_from([6, 12])),
    )
    # the projection expects c0 // 4 frequencies after two halvings: 4 * (c0 // 4) - 3 ... 4 * (c0 // 4)
    # mels (and at least 2: the reference extractor pads a 1-mel batch wrongly)
    mels = draw(st.integers(max(2, 4 * (c0 // 4) - 3), 4 * (c0 // 4)))
    return kw, mels


def make_audio_config(kwargs: dict) -> Gemma4AudioConfig:
    cfg = Gemma4AudioConfig(**kwargs)
    cfg._attn_implementation = "eager"
    return cfg


def ours(cfg: Gemma4AudioConfig):
    return audio_config_from_dict(cfg.to_dict())


def reference_audio_model(kwargs: dict, seed: int) -> Gemma4AudioModel:
    torch.manual_seed(seed)
    return randomize(Gemma4AudioModel(make_audio_config(kwargs)), seed).eval()


def reference_block_mask(model: Gemma4AudioModel, hidden: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """The 5-D float mask (0 allowed, min-float masked) `Gemma4AudioModel.forward` hands its layers."""
    c = model.config
    mask = create_bidirectional_mask(
        config=c,
        inputs_embeds=hidden,
        attention_mask=frame_mask,
        and_mask_function=sliding_window_mask_function((c.attention_context_left - 1, c.attention_context_right)),
    )
    return model._convert_4d_mask_to_blocked_5d(mask)


def count_clipped(model: torch.nn.Module, run) -> dict[str, tuple[int, int, int, int]]:
    """Run `run()`; for each clipped linear of `model`, how many values each of its bounds clamped
    (input_min, input_max, output_min, output_max)."""
    counts = {}

    def hook(name, module, args, output):
        x = args[0]
        y = module.linear(torch.clamp(x, module.input_min, module.input_max))
        now = (x < module.input_min, x > module.input_max, y < module.output_min, y > module.output_max)
        before = counts.get(name, (0, 0, 0, 0))
        counts[name] = tuple(b + int(n.sum()) for b, n in zip(before, now))

    handles = [
        m.register_forward_hook(lambda mod, a, o, name=name: hook(name, mod, a, o))
        for name, m in model.named_modules()
        if isinstance(m, Gemma4ClippableLinear) and m.use_clipped_linears
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return counts


def calibrate_clip_bounds(model: torch.nn.Module, run, quantile: float = 0.15) -> None:
    """Set every clipped linear's bounds to the `quantile` and `1 - quantile` quantiles of what it
    sees (and, after clamping its input, produces) during `run()`, in execution order: then each
    of the four bounds of each clipped linear clamps something when `run()` is repeated."""

    def calibrate(module, args):
        x = args[0]
        module.input_min.fill_(torch.quantile(x.flatten(), quantile))
        module.input_max.fill_(torch.quantile(x.flatten(), 1 - quantile))
        y = module.linear(torch.clamp(x, module.input_min, module.input_max)).flatten()
        module.output_min.fill_(torch.quantile(y, quantile))
        module.output_max.fill_(torch.quantile(y, 1 - quantile))

    modules = [m for m in model.modules() if isinstance(m, Gemma4ClippableLinear) and m.use_clipped_linears]
    handles = [m.register_forward_pre_hook(calibrate) for m in modules]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()


def write_wav(path, samples: np.ndarray, rate: int = 16_000, width: int = 2) -> None:
    """Integer PCM WAV of `samples` (frames,) or (frames, channels), values in [-1, 1]."""
    samples = np.asarray(samples, np.float64)
    frames = samples if samples.ndim == 2 else samples[:, None]
    full = 2 ** (8 * width - 1)
    ints = np.clip(np.round(frames * full), -full, full - 1).astype(np.int64)
    if width == 1:
        data = (ints + 128).astype(np.uint8).tobytes()
    elif width == 3:
        u = (ints & 0xFFFFFF).astype(np.uint32)
        data = np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], axis=-1).astype(np.uint8).tobytes()
    else:
        data = ints.astype(f"<i{width}").tobytes()
    with wave.open(str(path), "wb") as f:
        f.setnchannels(frames.shape[1])
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(data)


def reference_audio_text_model(text_kwargs: dict, audio_kwargs: dict, seed: int, tokens=None):
    """A randomised `Gemma4ForConditionalGeneration` with an audio tower; the audio special
    tokens (placeholder, begin, end) are `tokens`, by default the last three ids of the (small)
    vocabulary."""
    from gemma_reference import make_text_config
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    vocab = text_kwargs["vocab_size"]
    placeholder, begin, end = tokens or (vocab - 3, vocab - 2, vocab - 1)
    cfg = Gemma4Config(
        text_config=make_text_config(text_kwargs).to_dict(),
        audio_config=audio_kwargs,
        vision_config=None,
        audio_token_id=placeholder,
        boa_token_id=begin,
        eoa_token_index=end,
    )
    for c in (cfg, cfg.text_config, cfg.audio_config):
        c._attn_implementation = "eager"
    torch.manual_seed(seed)
    return randomize(Gemma4ForConditionalGeneration(cfg), seed).eval()

"""Random Gemma 3 reference models (transformers' `Gemma3ForCausalLM` /
`Gemma3ForConditionalGeneration`) for comparing minigemma's Gemma 3 switches.

* `gemma3_config_kwargs`: a hypothesis strategy for small `Gemma3TextConfig` keyword arguments
  reaching every Gemma 3 switch: `query_pre_attn_scalar`, layer types by list or by
  `sliding_window_pattern` (last layer sliding too), RoPE `default` / `linear` per layer type,
  bidirectional attention, soft-caps, biases, untied heads;
* `reference_gemma3_model`: build one in either layout, every parameter randomised (`randomize`).
"""

from __future__ import annotations

from gemma_reference import GLOBAL, SLIDING, randomize
from hypothesis import strategies as st
from transformers import Gemma3Config, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Gemma3TextConfig

# the smallest SigLIP tower a `Gemma3ForConditionalGeneration` accepts (its weights are not used by
# a text-only forward, but they are in the checkpoint minigemma must load past)
TINY_VISION = dict(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14)


@st.composite
def rope_kwargs(draw, layer_type: str):
    params = {"rope_type": draw(st.sampled_from(["default", "linear"])), "rope_theta": draw(st.sampled_from([100.0, 10_000.0, 1_000_000.0]))}
    if params["rope_type"] == "linear":
        params["factor"] = draw(st.sampled_from([2.0, 8.0]))
    return params


@st.composite
def gemma3_config_kwargs(draw, max_layers: int = 5):
    """Keyword arguments for a small, valid `Gemma3TextConfig`, every switch drawn."""
    n_layers = draw(st.integers(1, max_layers))
    heads = draw(st.sampled_from([1, 2, 4]))
    head_dim = draw(st.sampled_from([4, 8, 16]))
    kw = dict(
        vocab_size=draw(st.sampled_from([64, 97, 128])),
        hidden_size=heads * draw(st.sampled_from([4, 8])),  # Gemma3TextConfig checks hidden % heads == 0
        intermediate_size=draw(st.sampled_from([8, 24, 48])),
        num_hidden_layers=n_layers,
        num_attention_heads=heads,
        num_key_value_heads=draw(st.sampled_from([k for k in (1, 2, 4) if heads % k == 0])),
        head_dim=head_dim,
        query_pre_attn_scalar=draw(st.sampled_from([head_dim, 24, 256])),
        sliding_window=draw(st.integers(1, 8)),
        final_logit_softcapping=draw(st.sampled_from([None, 5.0, 30.0])),
        attn_logit_softcapping=draw(st.sampled_from([None, 50.0])),  # the reference ignores it
        rms_norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
        attention_bias=draw(st.booleans()),
        tie_word_embeddings=draw(st.booleans()),
        use_bidirectional_attention=draw(st.sampled_from([False, False, True])),
        rope_parameters={SLIDING: draw(rope_kwargs(SLIDING)), GLOBAL: draw(rope_kwargs(GLOBAL))},
    )
    if draw(st.booleans()):
        kw["layer_types"] = draw(st.lists(st.sampled_from([SLIDING, GLOBAL]), min_size=n_layers, max_size=n_layers))
    else:
        kw["sliding_window_pattern"] = draw(st.integers(1, 4))
    return kw


def reference_gemma3_model(kwargs: dict, layout: str = "causal", seed: int = 0):
    """A randomised `Gemma3ForCausalLM` (`layout="causal"`) or `Gemma3ForConditionalGeneration`."""
    text = Gemma3TextConfig(**kwargs)
    if layout == "causal":  # (image-text models ignore `use_bidirectional_attention`: minigemma refuses it there)
        cfg = text
        cfg._attn_implementation = "eager"
        model = Gemma3ForCausalLM(cfg)
    else:
        cfg = Gemma3Config(text_config=text.to_dict(), vision_config=TINY_VISION, mm_tokens_per_image=4)
        cfg.tie_word_embeddings = kwargs["tie_word_embeddings"]
        cfg._attn_implementation = "eager"
        cfg.text_config._attn_implementation = "eager"
        model = Gemma3ForConditionalGeneration(cfg)
    return randomize(model, seed).eval()

"""Reference MTP assistants (transformers' `Gemma4AssistantForCausalLM`) and their targets, for tests.

Known limit of the reference (transformers 5.23.0, see DESIGN.md): an assistant's config makes
every layer KV-shared, and `Gemma4TextConfig.kv_sharing_modes` then raises ("The set of layer
types producing a cache is different than the set of layer types using them"). `patched_kv_sharing`
makes the property answer "every layer reuses" for all-shared configs, and only for them; with it
the reference builds, and its forward (given `inputs_embeds` and the target's `shared_kv_states`)
and `generate(assistant_model=...)` run. The target must share KV itself: only then does it store
the `shared_kv_states` an assistant reads.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from hypothesis import strategies as st
from transformers import Gemma4AssistantConfig, Gemma4AssistantForCausalLM, GenerationConfig
from transformers.generation.candidate_generator import SinglePositionMultiTokenCandidateGenerator
from transformers.models.gemma4.configuration_gemma4 import Gemma4TextConfig
from transformers.models.gemma4_unified.configuration_gemma4_unified import Gemma4UnifiedTextConfig
from transformers import Gemma4UnifiedAssistantConfig, Gemma4UnifiedAssistantForCausalLM

from gemma_reference import GLOBAL, SLIDING, as_checkpoint, randomize, text_config_kwargs
from minigemma.assistant.config import assistant_config_from_dict
from minigemma.assistant.model import Assistant, load_assistant_weights

TEXT_CONFIGS = (Gemma4TextConfig, Gemma4UnifiedTextConfig)  # the assistant's and the unified assistant's
_ORIGINAL = {cls: cls.kv_sharing_modes for cls in TEXT_CONFIGS}


def _all_reuse(original):
    def modes(self):
        if self.num_kv_shared_layers and self.num_kv_shared_layers == self.num_hidden_layers:
            return ["reuse"] * self.num_hidden_layers
        return original.fget(self)

    return property(modes)


@contextlib.contextmanager
def patched_kv_sharing():
    for cls in TEXT_CONFIGS:
        cls.kv_sharing_modes = _all_reuse(_ORIGINAL[cls])
    try:
        yield
    finally:
        for cls in TEXT_CONFIGS:
            cls.kv_sharing_modes = _ORIGINAL[cls]


@st.composite
def target_kwargs(draw, ple=None):
    """A KV-shared Gemma 4 target with both layer types among the producers (the reference's
    assistant reads both), every other switch drawn as in `text_config_kwargs`."""
    kw = draw(text_config_kwargs(max_layers=5, moe=False, ple=ple, kv_shared=False))
    n = max(kw["num_hidden_layers"], 3)
    types = draw(st.lists(st.sampled_from([SLIDING, GLOBAL]), min_size=n, max_size=n))
    types[0], types[1], types[-1] = SLIDING, GLOBAL, GLOBAL
    kw.update(num_hidden_layers=n, layer_types=types, num_kv_shared_layers=draw(st.integers(1, n - 2)),
              use_double_wide_mlp=draw(st.booleans()))
    return kw


@st.composite
def assistant_kwargs(draw, target: dict, ordered=None):
    """An assistant for `target`: its own width, depth, window and RoPE; the target's attention shapes."""
    n = draw(st.integers(1, 3))
    types = draw(st.lists(st.sampled_from([SLIDING, GLOBAL]), min_size=n, max_size=n))
    types[-1] = GLOBAL
    vocab = target["vocab_size"]
    text = dict(
        vocab_size=vocab,
        hidden_size=draw(st.sampled_from([16, 24])),
        intermediate_size=draw(st.sampled_from([8, 32])),
        num_hidden_layers=n,
        num_attention_heads=target["num_attention_heads"] * draw(st.sampled_from([1, 2])),
        num_key_value_heads=target["num_key_value_heads"],
        head_dim=target["head_dim"],
        global_head_dim=target["global_head_dim"],
        num_global_key_value_heads=target["num_global_key_value_heads"],
        attention_k_eq_v=target["attention_k_eq_v"],
        layer_types=types,
        sliding_window=draw(st.integers(1, 8)),
        hidden_size_per_layer_input=0,
        vocab_size_per_layer_input=0,
        rms_norm_eps=draw(st.sampled_from([1e-6, 1e-5])),
        attention_bias=draw(st.booleans()),
        rope_parameters={
            SLIDING: {"rope_type": "default", "rope_theta": draw(st.sampled_from([100.0, 10_000.0]))},
            GLOBAL: {"rope_type": "proportional", "partial_rotary_factor": draw(st.sampled_from([0.25, 1.0])),
                     "rope_theta": draw(st.sampled_from([1_000.0, 1_000_000.0]))},
        },
    )
    use_ordered = draw(st.booleans()) if ordered is None else ordered
    centroids = draw(st.sampled_from([c for c in (1, 2, 4, 8, 16) if vocab % c == 0]))
    return dict(text_config=text, backbone_hidden_size=target["hidden_size"], use_ordered_embeddings=use_ordered,
                num_centroids=centroids, centroid_intermediate_top_k=draw(st.integers(1, centroids)))


def reference_assistant(kwargs: dict, seed: int = 1, num_assistant_tokens: int = 3, unified: bool = False):
    """A randomised reference assistant (`Gemma4AssistantForCausalLM`, or with `unified` the 12B's
    `Gemma4UnifiedAssistantForCausalLM` over a `gemma4_unified_text` config), built with
    `kv_sharing_modes` patched; `token_ordering` a random permutation of the vocabulary."""
    config_class, model_class = Gemma4AssistantConfig, Gemma4AssistantForCausalLM
    if unified:
        config_class, model_class = Gemma4UnifiedAssistantConfig, Gemma4UnifiedAssistantForCausalLM
        text = {k: v for k, v in kwargs["text_config"].items() if k not in ("hidden_size_per_layer_input", "vocab_size_per_layer_input")}
        kwargs = {**kwargs, "text_config": {**text, "model_type": "gemma4_unified_text"}}
    with patched_kv_sharing():
        cfg = config_class(**kwargs)
        cfg._attn_implementation = "eager"
        cfg.text_config._attn_implementation = "eager"
        torch.manual_seed(seed)
        model = randomize(model_class(cfg), seed).eval()
    if model.masked_embedding is not None:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            model.masked_embedding.token_ordering.copy_(torch.randperm(cfg.text_config.vocab_size, generator=g))
    model.generation_config.num_assistant_tokens = num_assistant_tokens
    return model


def our_assistant(ref: Gemma4AssistantForCausalLM, num_assistant_tokens: int | None = None) -> Assistant:
    cfg = assistant_config_from_dict(ref.config.to_dict())
    return Assistant(cfg, load_assistant_weights(as_checkpoint(ref), cfg), num_assistant_tokens=num_assistant_tokens)


def reference_prefill(target, ids: np.ndarray):
    """The target's pass over a prompt, with what the drafter reads: hidden states, shared KV."""
    with torch.no_grad():
        return target(input_ids=torch.as_tensor(ids)[None], use_cache=True, output_hidden_states=True,
                      return_shared_kv_states=True)


def reference_step(target, assistant, ids: np.ndarray, next_token: int):
    """One reference draft step after the prompt `ids` whose next token is `next_token`:
    (logits (vocab,), projected hidden state (backbone,))."""
    out = reference_prefill(target, ids)
    with torch.no_grad():
        embedding = target.get_input_embeddings()(torch.tensor([[next_token]]))
        inputs = torch.cat([embedding, out.hidden_states[-1][:, -1:]], dim=-1)
        step = assistant(inputs_embeds=inputs, attention_mask=torch.ones(1, len(ids) + 1, dtype=torch.long),
                         position_ids=torch.tensor([[len(ids)]]), shared_kv_states=out.shared_kv_states)
    return step.logits[0, 0].float().numpy(), step.last_hidden_state[0, 0].float().numpy()


def reference_round(target, assistant, ids: np.ndarray, next_token: int) -> list[int]:
    """The tokens `SinglePositionMultiTokenCandidateGenerator` drafts right after the prompt."""
    out = reference_prefill(target, ids)
    generator = SinglePositionMultiTokenCandidateGenerator(
        assistant, target.get_input_embeddings(), GenerationConfig(max_length=len(ids) + 1000))
    seq = torch.as_tensor(np.append(ids, next_token))[None]
    with torch.no_grad():
        candidates, _ = generator.get_candidates(seq, model_kwargs={"attention_mask": torch.ones_like(seq)},
                                                 model_outputs=out, is_first_iteration=False, n_last_matches=0)
    return candidates[0, len(ids) + 1 :].tolist()

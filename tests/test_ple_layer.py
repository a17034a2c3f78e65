"""Per-Layer Embeddings and the whole decoder layer against `Gemma4TextModel.get_per_layer_inputs`,
`project_per_layer_inputs` and `Gemma4TextDecoderLayer` (four norms, MoE branch, PLE tail,
`layer_scalar`), every parameter random."""

import numpy as np
import torch
from gemma_reference import as_checkpoint, make_text_config, our_text_config, randomize, text_config_kwargs, to_np
from hypothesis import given, note
from hypothesis import strategies as st
from test_attention import reference_masks
from transformers.cache_utils import KVSharingDict
from transformers.models.gemma4.modeling_gemma4 import Gemma4TextDecoderLayer, Gemma4TextModel, Gemma4TextRotaryEmbedding

from minigemma.text.layer import ForwardContext, decoder_layer, load_layer
from minigemma.text.ple import load_ple, per_layer_inputs, token_identity
from minigemma.text.model import rope_for_positions

TOL = dict(rtol=1e-5, atol=1e-5)


@given(kwargs=text_config_kwargs(ple=True, max_layers=3), seq=st.integers(1, 10), seed=st.integers(0, 2**16))
def test_per_layer_inputs_match_reference(kwargs, seq, seed):
    cfg = make_text_config(kwargs)
    ours = our_text_config(cfg)
    note(f"config: {kwargs}")
    ref = randomize(Gemma4TextModel(cfg), seed).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, seq), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        embeds = ref.embed_tokens(ids)
        identity_ref = ref.get_per_layer_inputs(ids)
        expected = ref.project_per_layer_inputs(embeds, identity_ref)

    L, P = ours.num_hidden_layers, ours.hidden_size_per_layer_input
    w = load_ple(as_checkpoint(ref, "model."), "model", ours.vocab_size_per_layer_input, L, P, ours.hidden_size)
    identity = token_identity(ids[0].numpy(), w, L, P)
    np.testing.assert_allclose(identity, to_np(identity_ref[0]), **TOL)
    got = per_layer_inputs(identity, to_np(embeds[0]), w, L, P, ours.rms_norm_eps)
    np.testing.assert_allclose(got, to_np(expected[0]), **TOL)


@given(kwargs=text_config_kwargs(), data=st.data())
def test_decoder_layer_matches_reference(kwargs, data):
    cfg = make_text_config(kwargs)
    ours = our_text_config(cfg)
    # the layer's own keys/values (KV-shared layers are covered by the attention and model tests)
    own = [s.index for s in ours.layers if not s.reuses_kv]
    layer = data.draw(st.sampled_from(own), label="layer")
    seq = data.draw(st.integers(1, 2 * cfg.sliding_window + 3), label="seq")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    spec = ours.layers[layer]
    note(f"config: {kwargs}\nlayer: {spec}")

    ref = randomize(Gemma4TextDecoderLayer(cfg, layer), seed).eval()
    g = torch.Generator().manual_seed(seed + 7)
    x = torch.randn(1, seq, cfg.hidden_size, generator=g)
    pli = torch.randn(1, seq, cfg.hidden_size_per_layer_input, generator=g) if ours.has_ple else None
    pos = torch.arange(seq)[None]
    rope = Gemma4TextRotaryEmbedding(cfg)(x, pos, spec.layer_type)
    with torch.no_grad():
        expected = ref(
            x.clone(), pli, shared_kv_states=KVSharingDict(), position_embeddings=rope,
            attention_mask=reference_masks(cfg, x, pos)[spec.layer_type], position_ids=pos,
        )

    w = load_layer(as_checkpoint(ref, "layer."), "layer", spec, ours)
    ctx = ForwardContext(positions=np.arange(seq), rope=rope_for_positions(np.arange(seq), ours))
    got = decoder_layer(x[0].numpy(), w, spec, ours, ctx, None if pli is None else pli[0].numpy())
    np.testing.assert_allclose(got, to_np(expected[0]), **TOL)

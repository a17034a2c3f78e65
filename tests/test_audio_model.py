"""Audio in whole models: random `Gemma4ForConditionalGeneration`s with an audio tower, saved with
`save_pretrained`, loaded by `minigemma.load`; logits for prompts holding audio equal the
reference's at 1e-4. Plus the errors a user can meet on the way."""

import numpy as np
import pytest
import torch
from audio_reference import audio_config_kwargs, reference_audio_text_model
from gemma_reference import text_config_kwargs
from hypothesis import given, note, settings
from hypothesis import strategies as st
from transformers import Gemma4AudioFeatureExtractor

import minigemma
from minigemma.audio.subsample import subsampled_mask
from minigemma.errors import InputError

TOL = dict(rtol=1e-4, atol=1e-4)


def audio_prompt(rng, vocab: int, counts, text_len: int = 3) -> np.ndarray:
    """Text, then per clip `<begin> <audio> x count <end>` and more text."""
    placeholder, begin, end = vocab - 3, vocab - 2, vocab - 1
    ids = list(rng.integers(0, vocab - 3, text_len))
    for n in counts:
        ids += [begin] + [placeholder] * int(n) + [end] + list(rng.integers(0, vocab - 3, text_len))
    return np.array(ids)


def reference_logits_with_audio(model, ids, features, mask) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(np.atleast_2d(ids)),
            input_features=torch.tensor(features),
            input_features_mask=torch.tensor(mask),
            use_cache=False,
            output_hidden_states=True,  # see gemma_reference.reference_logits
        )
    return out.logits.float().numpy()


@settings(max_examples=6)
@given(text=text_config_kwargs(max_layers=3), audio=audio_config_kwargs(max_layers=1), data=st.data())
def test_logits_with_audio_match_reference(tmp_path_factory, text, audio, data):
    audio_kwargs, mels = audio
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"text config: {text}\naudio config: {audio_kwargs}, mels={mels}")
    ref = reference_audio_text_model(text, audio_kwargs, seed)
    rng = np.random.default_rng(seed)
    lengths = data.draw(st.lists(st.integers(400, 4000), min_size=1, max_size=2), label="clip lengths")
    clips = [rng.uniform(-0.8, 0.8, n).astype(np.float32) for n in lengths]
    fe = Gemma4AudioFeatureExtractor(feature_size=mels)
    f = fe(clips, return_tensors="np")
    counts = subsampled_mask(f["input_features_mask"]).sum(axis=1)  # the processor's placeholder counts
    ids = audio_prompt(rng, text["vocab_size"], counts)
    expected = reference_logits_with_audio(ref, ids, f["input_features"], f["input_features_mask"])[0]
    d = tmp_path_factory.mktemp("ckpt")
    ref.save_pretrained(d)
    model = minigemma.load(d)
    got = model.forward(ids, input_features=f["input_features"], input_features_mask=f["input_features_mask"])
    np.testing.assert_allclose(got, expected, **TOL)


SMALL_TEXT = dict(
    vocab_size=97, hidden_size=32, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
    num_key_value_heads=1, head_dim=8, global_head_dim=16, layer_types=["sliding_attention", "sliding_attention", "full_attention"],
    sliding_window=4, hidden_size_per_layer_input=8, vocab_size_per_layer_input=97, final_logit_softcapping=30.0,
)
SMALL_AUDIO = dict(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, subsampling_conv_channels=[8, 3],
    attention_chunk_size=5, attention_context_left=4, attention_context_right=1, output_proj_dims=12, rms_norm_eps=1e-3,
)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A saved small model with an audio tower, two clips' features and their placeholder counts."""
    ref = reference_audio_text_model(SMALL_TEXT, SMALL_AUDIO, seed=3)
    d = tmp_path_factory.mktemp("small")
    ref.save_pretrained(d)
    rng = np.random.default_rng(3)
    f = Gemma4AudioFeatureExtractor(feature_size=8)([rng.uniform(-1, 1, 2500).astype(np.float32), rng.uniform(-1, 1, 1300).astype(np.float32)], return_tensors="np")
    counts = subsampled_mask(f["input_features_mask"]).sum(axis=1)
    return ref, minigemma.load(d), f["input_features"], f["input_features_mask"], counts


def test_batch_rows_take_their_own_clips(small):
    """Two rows of one batch, one clip each: clips are consumed in order across rows."""
    ref, model, features, mask, counts = small
    rng = np.random.default_rng(0)
    rows = [audio_prompt(rng, 97, [counts[0]], 2), audio_prompt(rng, 97, [counts[1]], 2)]
    width = max(len(r) for r in rows)
    ids = np.stack([np.concatenate([r, rng.integers(0, 94, width - len(r))]) for r in rows])
    expected = reference_logits_with_audio(ref, ids, features, mask)
    np.testing.assert_allclose(model.forward(ids, input_features=features, input_features_mask=mask), expected, **TOL)


def test_placeholders_must_match_the_clips(small):
    _, model, features, mask, counts = small
    rng = np.random.default_rng(1)
    for wrong in ([counts[0] + 1, counts[1]], [counts[0], counts[1] - 1], [counts[0]]):
        with pytest.raises(InputError, match=r"audio placeholder tokens \(id 94\)"):
            model.forward(audio_prompt(rng, 97, wrong), input_features=features, input_features_mask=mask)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f, m: (f, None), "input_features_mask: required with audio"),
        (lambda f, m: (f[0], m[0]), r"input_features: expected shape \(clips, frames, mels\)"),
        (lambda f, m: (f, m[:, :-1]), "input_features_mask: expected shape"),
        (lambda f, m: (f[..., :4], m), "input_features: 4 mel bins, but this audio tower"),
        (lambda f, m: (np.where(m[..., None], np.nan, f), m), "input_features: found NaN"),
        (lambda f, m: (f, m * 2), "input_features_mask: expected booleans"),
    ],
)
def test_bad_audio_inputs_are_input_errors(small, change, message):
    _, model, features, mask, counts = small
    f, m = change(features, mask.astype(np.int64))
    ids = audio_prompt(np.random.default_rng(2), 97, counts)
    with pytest.raises(InputError, match=message):
        model.forward(ids, input_features=f, input_features_mask=m)


def test_audio_to_a_model_without_audio_tower(tmp_path):
    from gemma_reference import reference_text_model

    reference_text_model(SMALL_TEXT, "conditional", seed=1).save_pretrained(tmp_path)
    with pytest.raises(InputError, match="input_features: this checkpoint has no audio tower"):
        minigemma.load(tmp_path).forward([1, 2, 3], input_features=np.zeros((1, 8, 8)), input_features_mask=np.ones((1, 8), bool))


def test_bf16_checkpoint_with_audio(tmp_path):
    """Published checkpoints are bf16, clip bounds (0-d tensors) included: read from the raw bits,
    the model equals the reference loading the same file in float32."""
    from transformers import Gemma4ForConditionalGeneration

    reference_audio_text_model(SMALL_TEXT, SMALL_AUDIO, seed=5).to(torch.bfloat16).save_pretrained(tmp_path)
    ref = Gemma4ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager").eval()
    rng = np.random.default_rng(5)
    f = Gemma4AudioFeatureExtractor(feature_size=8)([rng.uniform(-1, 1, 3000).astype(np.float32)], return_tensors="np")
    ids = audio_prompt(rng, 97, subsampled_mask(f["input_features_mask"]).sum(axis=1))
    expected = reference_logits_with_audio(ref, ids, f["input_features"], f["input_features_mask"])[0]
    got = minigemma.load(tmp_path).forward(ids, input_features=f["input_features"], input_features_mask=f["input_features_mask"])
    np.testing.assert_allclose(got, expected, **TOL)


@settings(max_examples=4)
@given(text=text_config_kwargs(max_layers=2), audio=audio_config_kwargs(max_layers=2, clamps=(1e10, 2.0)), data=st.data())
def test_trace_names_with_audio_match_the_reference_hooks(tmp_path_factory, text, audio, data):
    """With audio, the tower's names come before `embed`, each clip's real frames one after
    another, every one equal to what forward hooks capture on the reference."""
    from minigemma.verify.trace import AUDIO_AFTER_LAYERS, AUDIO_BEFORE_LAYERS, AUDIO_LAYER_STEPS
    from minigemma.verify import reference as reference_trace

    audio_kwargs, mels = audio
    seed = data.draw(st.integers(0, 2**16), label="seed")
    note(f"text config: {text}\naudio config: {audio_kwargs}, mels={mels}")
    ref = reference_audio_text_model(text, audio_kwargs, seed)
    rng = np.random.default_rng(seed)
    clips = [rng.uniform(-0.8, 0.8, n).astype(np.float32) for n in data.draw(st.lists(st.integers(400, 3000), min_size=1, max_size=2))]
    f = Gemma4AudioFeatureExtractor(feature_size=mels)(clips, return_tensors="np")
    counts = subsampled_mask(f["input_features_mask"]).sum(axis=1)
    ids = audio_prompt(rng, text["vocab_size"], counts)
    d = tmp_path_factory.mktemp("ckpt")
    ref.save_pretrained(d)
    media = dict(input_features=f["input_features"], input_features_mask=f["input_features_mask"])
    ours, theirs = minigemma.load(d).trace(ids, **media), reference_trace.capture(ref, ids, **media)
    assert list(ours) == list(theirs)
    layers = [f"layers.{j}.{s}" for j in range(audio_kwargs["num_hidden_layers"]) for s in AUDIO_LAYER_STEPS]
    audio_names = [f"audio.{s}" for s in (*AUDIO_BEFORE_LAYERS, *layers, *AUDIO_AFTER_LAYERS)]
    assert list(ours)[: len(audio_names) + 1] == [*audio_names, "embed"]
    for name, expected in theirs.items():
        assert ours[name].shape == expected.shape, name
        np.testing.assert_allclose(ours[name], expected, err_msg=name, **TOL)
    assert ours["audio.soft_tokens"].shape[0] == counts.sum()
    np.testing.assert_array_equal(ours["embed"][ids == text["vocab_size"] - 3], ours["audio.soft_tokens"])

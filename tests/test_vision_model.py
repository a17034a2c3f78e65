"""Images end to end: random `Gemma4ForConditionalGeneration` models with a vision tower, saved
with `save_pretrained` and loaded by `minigemma.load`; logits for prompts with one and two images
of different aspect ratios equal the reference's at 1e-4, with and without the bidirectional
attention inside images. Plus the user mistakes around images: each a clear InputError."""

import numpy as np
import pytest
import torch
from gemma_reference import text_config_kwargs
from hypothesis import Phase, given, note, settings
from hypothesis import strategies as st
from vision_reference import image_prompt, reference_multimodal_model, token_ids, vision_config_kwargs

import minigemma
from minigemma import InputError
from minigemma.vision.image import grid_positions, preprocess

TOL = dict(rtol=1e-4, atol=1e-4)
BUDGET = 70


def token_types(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """`mm_token_type_ids` as the processor builds them: 1 on image placeholders, else 0."""
    return (ids == token_ids(vocab_size)["image_token_id"]).astype(np.int64)


def reference_logits(ref, ids, inputs, types=None) -> np.ndarray:
    with torch.no_grad():
        out = ref(
            input_ids=torch.from_numpy(np.atleast_2d(ids)),
            pixel_values=torch.from_numpy(inputs.pixel_values),
            image_position_ids=torch.from_numpy(inputs.image_position_ids),
            mm_token_type_ids=None if types is None else torch.from_numpy(np.atleast_2d(types)),
            use_cache=False,
            output_hidden_states=True,  # see gemma_reference.reference_logits
        )
    logits = out.logits.float().numpy()
    return logits[0] if np.ndim(ids) == 1 else logits


def drawn_images(rng, sizes):
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


@settings(max_examples=8, phases=[Phase.explicit, Phase.generate])  # shrinking a model takes many minutes
@given(
    text=text_config_kwargs(max_layers=4),
    vision=vision_config_kwargs(),
    bidirectional=st.sampled_from([None, "vision", "vision"]),
    sizes=st.lists(st.tuples(st.integers(4, 120), st.integers(4, 120)), min_size=1, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_logits_with_images_match_reference(tmp_path_factory, text, vision, bidirectional, sizes, seed):
    # 32 wide, PLE 8 wide: at 16 / 4, a random model's PLE gate product can vanish for a token and
    # the norm after it magnifies float32 rounding ~100x in the reference itself (seen vs float64)
    text = dict(text, use_bidirectional_attention=bidirectional, hidden_size=32)
    if text["hidden_size_per_layer_input"]:
        text["hidden_size_per_layer_input"] = 8
    vision = dict(vision, position_embedding_size=BUDGET * vision["pooling_kernel_size"])  # a one-row image's side
    note(f"text config: {text}\nvision config: {vision}\nimage sizes: {sizes}")
    rng = np.random.default_rng(seed)
    inputs = preprocess(drawn_images(rng, sizes), BUDGET, vision["patch_size"], vision["pooling_kernel_size"])
    ids = image_prompt(rng, text["vocab_size"], inputs.num_soft_tokens_per_image)
    ref = reference_multimodal_model(text, vision, seed)
    expected = reference_logits(ref, ids, inputs, token_types(ids, text["vocab_size"]))
    path = tmp_path_factory.mktemp("model")
    ref.save_pretrained(path)
    model = minigemma.load(path)
    got = model.forward(ids, pixel_values=inputs.pixel_values, image_position_ids=inputs.image_position_ids)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **TOL)


TEXT = dict(
    vocab_size=97, hidden_size=32, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
    num_key_value_heads=1, head_dim=8, global_head_dim=16, sliding_window=6, hidden_size_per_layer_input=8,
    vocab_size_per_layer_input=97, final_logit_softcapping=30.0, use_bidirectional_attention="vision",
    layer_types=["sliding_attention", "sliding_attention", "full_attention"],
)
VISION = dict(
    hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
    head_dim=8, patch_size=4, pooling_kernel_size=3, position_embedding_size=64, use_clipped_linears=True,
    standardize=True,
)
TALL, WIDE = (90, 30), (20, 110)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One reference model with every vision switch on, saved; two images of opposite shapes."""
    ref = reference_multimodal_model(TEXT, VISION, seed=4)
    path = tmp_path_factory.mktemp("vision_model")
    ref.save_pretrained(path)
    inputs = preprocess(drawn_images(np.random.default_rng(0), [TALL, WIDE]), BUDGET, 4, 3)
    return ref, minigemma.load(path), inputs


def image_subset(inputs, which):
    return type(inputs)(inputs.pixel_values[which], inputs.image_position_ids[which],
                        [inputs.num_soft_tokens_per_image[i] for i in which])


def test_bidirectional_image_attention_matters_and_matches(saved):
    """The overlay is not vacuous: the reference without `mm_token_type_ids` (plain causal)
    differs; ours, given only input_ids, equals the reference given the processor's types."""
    ref, model, inputs = saved
    ids = image_prompt(np.random.default_rng(1), TEXT["vocab_size"], inputs.num_soft_tokens_per_image)
    types = token_types(ids, TEXT["vocab_size"])
    expected = reference_logits(ref, ids, inputs, types)
    causal = reference_logits(ref, ids, inputs, None)
    assert np.abs(expected - causal).max() > 1e-2
    kw = dict(pixel_values=inputs.pixel_values, image_position_ids=inputs.image_position_ids)
    np.testing.assert_allclose(model.forward(ids, **kw), expected, **TOL)
    np.testing.assert_allclose(model.forward(ids, mm_token_type_ids=types, **kw), expected, **TOL)


def test_batch_with_one_image_per_row(saved):
    ref, model, inputs = saved
    rng = np.random.default_rng(2)
    n_tall, n_wide = inputs.num_soft_tokens_per_image
    rows = [image_prompt(rng, TEXT["vocab_size"], [n]) for n in (n_tall, n_wide)]
    length = max(map(len, rows))
    ids = np.stack([np.concatenate([r, rng.integers(0, 90, length - len(r))]) for r in rows])
    expected = reference_logits(ref, ids, inputs, token_types(ids, TEXT["vocab_size"]))
    got = model.forward(ids, pixel_values=inputs.pixel_values, image_position_ids=inputs.image_position_ids)
    np.testing.assert_allclose(got, expected, **TOL)


def forward(model, ids, inputs, **kw):
    return model.forward(ids, pixel_values=inputs.pixel_values, image_position_ids=inputs.image_position_ids, **kw)


def test_placeholders_and_images_must_agree(saved):
    _, model, inputs = saved
    rng = np.random.default_rng(3)
    n_tall, n_wide = inputs.num_soft_tokens_per_image
    one = image_subset(inputs, [0])
    with pytest.raises(InputError, match="input_ids: .*image placeholder tokens"):  # more images than placeholders
        forward(model, image_prompt(rng, TEXT["vocab_size"], [n_tall]), inputs)
    with pytest.raises(InputError, match="input_ids: .*image placeholder tokens"):  # more placeholders than images
        forward(model, image_prompt(rng, TEXT["vocab_size"], [n_tall, n_wide]), one)
    with pytest.raises(InputError, match="input_ids: .*image placeholder tokens"):  # wrong count for the image
        forward(model, image_prompt(rng, TEXT["vocab_size"], [n_tall + 1]), one)
    with pytest.raises(InputError, match=r"no image was given \(pixel_values\)"):  # placeholders, no image
        model.forward(image_prompt(rng, TEXT["vocab_size"], [n_tall]))


def test_bad_image_tensors_are_input_errors(saved):
    _, model, inputs = saved
    one = image_subset(inputs, [0])
    ids = image_prompt(np.random.default_rng(4), TEXT["vocab_size"], one.num_soft_tokens_per_image)
    with pytest.raises(InputError, match="image_position_ids: required"):
        model.forward(ids, pixel_values=one.pixel_values)
    with pytest.raises(InputError, match="pixel_values: expected floats of shape"):
        model.forward(ids, pixel_values=one.pixel_values[..., :5], image_position_ids=one.image_position_ids)
    tiny = one.image_position_ids.copy()
    tiny[0, 4:] = -1  # 4 patches in a row: less than one 3 x 3 pooled block
    with pytest.raises(InputError, match=r"image_position_ids\[0\]: a 1 x 4 patch grid is smaller than one pooled 3 x 3"):
        model.forward(ids, pixel_values=one.pixel_values, image_position_ids=tiny)
    too_wide = np.full_like(one.image_position_ids, -1)
    too_wide[0, : 3 * 66] = grid_positions(3, 66)  # 66 columns: past the 64-row x table
    with pytest.raises(InputError, match="patches, but this model reads at most 64 patches a side"):
        model.forward(ids, pixel_values=one.pixel_values, image_position_ids=too_wide)
    shuffled = one.image_position_ids.copy()
    shuffled[0, [0, 1]] = shuffled[0, [1, 0]]
    with pytest.raises(InputError, match="row by row"):
        model.forward(ids, pixel_values=one.pixel_values, image_position_ids=shuffled)


def test_token_types_must_agree_with_placeholders(saved):
    _, model, inputs = saved
    one = image_subset(inputs, [0])
    ids = image_prompt(np.random.default_rng(5), TEXT["vocab_size"], one.num_soft_tokens_per_image)
    types = token_types(ids, TEXT["vocab_size"])
    types[0] = 1  # a text token said to be an image token
    with pytest.raises(InputError, match=r"mm_token_type_ids: at \(0,\) says 1"):
        forward(model, ids, one, mm_token_type_ids=types)


def test_text_only_checkpoint_rejects_images(tmp_path, saved):
    from gemma_reference import reference_text_model

    _, _, inputs = saved
    reference_text_model(dict(TEXT, use_bidirectional_attention=None), "conditional").save_pretrained(tmp_path)
    with pytest.raises(InputError, match="pixel_values: this checkpoint has no vision tower"):
        forward(minigemma.load(tmp_path), np.arange(5), inputs)


@given(
    window=st.integers(1, 12),
    runs=st.lists(st.tuples(st.integers(0, 4), st.integers(1, 9)), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
def test_image_block_mask_matches_reference(window, runs, seed):
    """`create_masks_for_vision_model`: on sliding layers AND(window, OR(causal, same image));
    global layers causal. Runs of image tokens follow 0-4 text tokens (0: two images touch, so
    they are one block, as the processor's `mm_token_type_ids` make them)."""
    from transformers import Gemma4TextConfig
    from transformers.models.gemma4.modeling_gemma4 import create_masks_for_vision_model, get_block_sequence_ids_for_mask

    from minigemma.text.attention import attention_mask
    from minigemma.text.multimodal import image_blocks, same_block

    rng = np.random.default_rng(seed)
    image = 50
    ids = np.concatenate([np.concatenate([rng.integers(0, 40, gap), np.full(n, image)]) for gap, n in runs] + [[1]])
    note(f"ids: {ids.tolist()}")
    cfg = Gemma4TextConfig(vocab_size=64, hidden_size=8, sliding_window=window, use_bidirectional_attention="vision")
    cfg._attn_implementation = "eager"
    n = len(ids)
    masks = create_masks_for_vision_model(
        config=cfg, inputs_embeds=torch.zeros(1, n, 8), attention_mask=None, past_key_values=None,
        position_ids=torch.arange(n)[None],
        block_sequence_ids=get_block_sequence_ids_for_mask(torch.from_numpy((ids == image).astype(np.int64))[None], "cpu"),
    )

    def visible(mask):  # eager masks are additive: 0 where a key is visible
        mask = mask[0, 0].numpy()
        return mask if mask.dtype == bool else mask == 0

    pos = np.arange(n)
    blocks = same_block(image_blocks(ids, image), pos, pos)
    np.testing.assert_array_equal(attention_mask(pos, pos, window, True, blocks), visible(masks["sliding_attention"]))
    np.testing.assert_array_equal(attention_mask(pos, pos, None, True), visible(masks["full_attention"]))

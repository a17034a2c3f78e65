"""The unified model end to end: a random `Gemma4UnifiedForConditionalGeneration` saved beside a
Gemma 4-shaped tokenizer. The prompt with an image and a clip equals what `Gemma4UnifiedProcessor`
writes (its own placeholder expansion and audio extractor; its image processor's outputs, which
need torchvision to run, from the reference steps of test_unified_preprocess); greedy generation
equals the reference's `generate` token for token, with each step's logits at 1e-4; the CLI's
`--image` / `--audio` give the same text; `trace` names the embedders' steps."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from audio_reference import write_wav
from PIL import Image
from test_generate_reference import our_steps
from test_unified_preprocess import reference_preprocess
from tokenizer_fixtures import write_bpe_tokenizer
from unified_reference import reference_unified_model

import minigemma
from minigemma.generate.loop import stop_token_ids
from minigemma.generate.media_prompt import processor_inputs, prompt_with_media
from minigemma.generate.tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET, NEW_TOKENS = 70, 10
PROMPT = "Look at <|image|> and hear <|audio|> now"
TEXT = dict(
    hidden_size=32, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
    head_dim=8, global_head_dim=16, sliding_window=6, final_logit_softcapping=30.0,
    layer_types=["sliding_attention", "sliding_attention", "full_attention"],
)
VISION = dict(patch_size=2, pooling_kernel_size=3, mm_embed_dim=20, output_proj_dims=20, mm_posemb_size=80)
AUDIO = dict(audio_embed_dim=40)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = write_bpe_tokenizer(str(tmp_path_factory.mktemp("unified_generate")))
    tok = load_tokenizer(d)
    ids = {f"{name}_token_id": tok.token_id(f"{name}_token") for name in ("image", "boi", "eoi", "audio", "boa")}
    ids["eoa_token_index"] = tok.token_id("eoa_token")
    ids["video_token_id"] = tok.token_id("mask_token")  # the fixture has no video token; any unused special id
    text = dict(TEXT, vocab_size=tok.vocab_size, pad_token_id=tok.token_id("pad_token"), bos_token_id=tok.bos_id, eos_token_id=None)
    ref = reference_unified_model(text, VISION, AUDIO, seed=21, tokens=ids)
    ref.save_pretrained(d)
    rng = np.random.default_rng(4)
    image, clip = os.path.join(d, "photo.png"), os.path.join(d, "clip.wav")
    Image.fromarray(rng.integers(0, 256, (37, 81, 3), dtype=np.uint8)).save(image)
    samples = rng.integers(-20000, 20000, 1500) / 32768
    write_wav(clip, samples)
    return ref, minigemma.load(d), image, clip, samples.astype(np.float32)


class ImagesAsTheReferenceDoes:
    """Stands in for `Gemma4UnifiedImageProcessor` (torchvision does not load beside torch 2.13.0):
    its outputs from the reference's own steps (`test_unified_preprocess.reference_preprocess`)."""

    def fetch_images(self, images):
        return images

    def __call__(self, images, **kwargs):
        from transformers.image_processing_utils import BatchFeature

        done = [reference_preprocess(np.array(im.convert("RGB")), BUDGET, VISION["patch_size"], VISION["pooling_kernel_size"])
                for batch in images for im in batch]
        return BatchFeature({"pixel_values": np.stack([p for p, _, _ in done]),
                             "image_position_ids": np.stack([q for _, q, _ in done]),
                             "num_soft_tokens_per_image": [n for _, _, n in done]})


def reference_processor(model):
    from transformers import AutoTokenizer, Gemma4UnifiedProcessor
    from transformers.models.gemma4_unified.feature_extraction_gemma4_unified import Gemma4UnifiedAudioFeatureExtractor

    tok = AutoTokenizer.from_pretrained(model.path)
    p = Gemma4UnifiedProcessor.__new__(Gemma4UnifiedProcessor)
    p.tokenizer, p.image_processor, p.chat_template, p.video_token = tok, ImagesAsTheReferenceDoes(), None, None
    p.feature_extractor = Gemma4UnifiedAudioFeatureExtractor(feature_size=AUDIO["audio_embed_dim"],
                                                             audio_samples_per_token=AUDIO["audio_embed_dim"])
    for name in ("image_token", "boi_token", "eoi_token", "audio_token", "boa_token", "eoa_token"):
        setattr(p, name, getattr(tok, name))
    p.image_token_id = tok.convert_tokens_to_ids(tok.image_token)
    p.audio_token_id = tok.convert_tokens_to_ids(tok.audio_token)
    return p


def test_prompt_equals_the_reference_processor(saved):
    ref, model, image, clip, samples = saved
    expected = reference_processor(model)(text=[PROMPT], images=[[Image.open(image)]], audio=[samples], return_tensors="np")
    ids, media = processor_inputs(model, PROMPT, [image], BUDGET, [clip])
    np.testing.assert_array_equal(ids, expected["input_ids"][0])
    for name in ("pixel_values", "image_position_ids", "input_features", "input_features_mask"):
        np.testing.assert_array_equal(media[name], expected[name], err_msg=name)
    np.testing.assert_array_equal(model.forward(ids, **media), model.forward(ids, **media, mm_token_type_ids=expected["mm_token_type_ids"][0]))


def test_greedy_generation_and_cli_equal_the_reference(saved):
    ref, model, image, clip, samples = saved
    ids, media = processor_inputs(model, PROMPT, [image], BUDGET, [clip])
    types = np.select([ids == model.config.tokens["image_token_id"], ids == model.config.tokens["audio_token_id"]], [1, 3], 0)
    ref.generation_config.eos_token_id = None
    with torch.no_grad():
        out = ref.generate(
            input_ids=torch.from_numpy(ids[None]), mm_token_type_ids=torch.from_numpy(types[None]),
            **{k: torch.from_numpy(v) for k, v in media.items()}, max_new_tokens=NEW_TOKENS, do_sample=False,
            eos_token_id=None, pad_token_id=0, output_logits=True, return_dict_in_generate=True, output_hidden_states=True,
        )
    expected, expected_logits = out.sequences[0, len(ids):].numpy(), torch.stack(out.logits)[:, 0].float().numpy()
    _, _, soft = prompt_with_media(model, PROMPT, [image], BUDGET, [clip])
    new, logits = our_steps(model, ids, NEW_TOKENS, soft=soft)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(new, expected)
    stops = stop_token_ids(model)
    text = model.tokenizer.decode([i for i in expected if i not in stops])
    assert model.generate(PROMPT, NEW_TOKENS, temperature=0, images=[image], max_soft_tokens=BUDGET, audio=[clip]) == text
    r = subprocess.run([sys.executable, "-m", "minigemma", "generate", PROMPT, "--model", model.path, "--image", image,
                        "--audio", clip, "--max-soft-tokens", str(BUDGET), "--temperature", "0",
                        "--max-new-tokens", str(NEW_TOKENS)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == text + "\n"


def test_trace_names_the_embedders_steps(saved):
    _, model, image, clip, _ = saved
    ids, media = processor_inputs(model, PROMPT, [image], BUDGET, [clip])
    acts = model.trace(ids, **media)
    for name in ("unified.vision.patch_embed", "unified.vision.out", "unified.vision.soft_tokens", "unified.audio.soft_tokens"):
        assert name in acts, sorted(acts)[:10]
    n_image = int(np.sum(ids == model.config.tokens["image_token_id"]))
    assert acts["unified.vision.soft_tokens"].shape == (n_image, TEXT["hidden_size"])


def test_trace_equals_the_reference_hooks_name_by_name(saved):
    """`trace --reference`'s hooks on `Gemma4UnifiedForConditionalGeneration` give the same names
    as minigemma's trace, every one equal at 1e-4; and the CLI's compare agrees."""
    from minigemma.text.multimodal import token_types
    from minigemma.verify.reference import capture, load_reference
    from minigemma.verify.trace import SECTIONS, order_key

    _, model, image, clip, _ = saved
    ids, media = processor_inputs(model, PROMPT, [image], BUDGET, [clip])
    ours = model.trace(ids, **media)
    theirs = capture(load_reference(model.path), ids, None, **media, mm_token_type_ids=token_types(ids, model.config.tokens))
    assert list(ours) == list(theirs)
    assert all(order_key(n)[0] < len(SECTIONS) for n in ours), "a name missing from the forward-order tables"
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-4, err_msg=name)
    assert {n for n in ours if n.startswith("unified.")} == {
        "unified.vision.patch_embed", "unified.vision.out", "unified.vision.soft_tokens", "unified.audio.soft_tokens"}


def test_cli_info_describes_the_embedders(saved):
    _, model, _, _, _ = saved
    r = subprocess.run([sys.executable, "-m", "minigemma", "info", "--model", model.path], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "type:        gemma4_unified" in r.stdout
    assert "vision:      no tower; 6 x 6-pixel patches (2-pixel, merged 3 x 3) -> 20 -> text" in r.stdout
    assert "audio:       no tower; raw frames of 40 samples" in r.stdout

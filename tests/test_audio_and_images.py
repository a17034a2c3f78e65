"""Both towers at once: a random `Gemma4ForConditionalGeneration` with a vision tower and an audio
tower (bidirectional attention inside images on), saved beside a Gemma 4-shaped tokenizer. A
prompt holding an image and a clip: logits equal the reference's at 1e-4, greedy generation
equals the reference's `generate` step by step, and `minigemma generate --image ... --audio ...`
prints the reference's text."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from audio_reference import write_wav
from PIL import Image
from test_generate_reference import our_steps
from test_vision_generate import TEXT, VISION
from tokenizer_fixtures import write_bpe_tokenizer
from transformers import Gemma4AudioFeatureExtractor
from vision_reference import make_text_config, randomize

import minigemma
from minigemma.audio.features import extract_features
from minigemma.audio.subsample import subsampled_mask
from minigemma.generate.loop import stop_token_ids
from minigemma.vision.image import preprocess
from minigemma.generate.media_prompt import prompt_with_media
from minigemma.generate.tokenizer import load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET, NEW_TOKENS, MELS = 70, 12, 8
AUDIO = dict(
    hidden_size=16, num_hidden_layers=2, num_attention_heads=2, subsampling_conv_channels=[8, 3],
    attention_chunk_size=5, attention_context_left=4, attention_context_right=1, output_proj_dims=12,
)
PROMPT = "Look at <|image|> and hear <|audio|> now"
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    d = write_bpe_tokenizer(str(tmp_path_factory.mktemp("both_towers")))
    tok = load_tokenizer(d)
    ids = {f"{name}_token_id": tok.token_id(f"{name}_token") for name in ("image", "boi", "eoi", "audio", "boa")}
    ids["eoa_token_index"] = tok.token_id("eoa_token")
    ids["video_token_id"] = tok.token_id("mask_token")  # the fixture has no video token; any unused special id
    text = make_text_config(dict(TEXT, vocab_size=tok.vocab_size, vocab_size_per_layer_input=tok.vocab_size,
                                 pad_token_id=tok.token_id("pad_token"), bos_token_id=tok.bos_id, eos_token_id=None))
    cfg = Gemma4Config(text_config=text.to_dict(), vision_config=VISION, audio_config=AUDIO, **ids)
    for c in (cfg, cfg.text_config, cfg.vision_config, cfg.audio_config):
        c._attn_implementation = "eager"
    ref = randomize(Gemma4ForConditionalGeneration(cfg), seed=12).eval()
    ref.save_pretrained(d)
    Gemma4AudioFeatureExtractor(feature_size=MELS).save_pretrained(d)
    rng = np.random.default_rng(1)
    image, clip = os.path.join(d, "photo.png"), os.path.join(d, "clip.wav")
    Image.fromarray(rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)).save(image)
    samples = rng.integers(-20000, 20000, 2600) / 32768
    write_wav(clip, samples)
    return ref, minigemma.load(d), image, clip, samples.astype(np.float32)


def reference_inputs(model, image, samples):
    """The tensors the processor hands the model: pixel values and positions, features and mask."""
    images = preprocess([image], BUDGET, VISION["patch_size"], VISION["pooling_kernel_size"])
    features, mask = extract_features([samples], model.audio.features)  # equal to the reference extractor's (tested)
    return dict(
        pixel_values=torch.from_numpy(images.pixel_values), image_position_ids=torch.from_numpy(images.image_position_ids),
        input_features=torch.from_numpy(features), input_features_mask=torch.from_numpy(mask),
    ), images.num_soft_tokens_per_image[0], int(subsampled_mask(mask).sum())


def token_types(ids, tokens):
    """`mm_token_type_ids` as the processor writes them: 1 image, 3 audio, 0 text."""
    return np.select([ids == tokens["image_token_id"], ids == tokens["audio_token_id"]], [1, 3], 0).astype(np.int64)


def test_prompt_and_logits_with_an_image_and_a_clip(saved):
    ref, model, image, clip, samples = saved
    inputs, n_image, n_audio = reference_inputs(model, image, samples)
    ids, as_text, soft = prompt_with_media(model, PROMPT, [image], BUDGET, [clip])
    t, tok = model.config.tokens, model.tokenizer
    expected_ids = [tok.bos_id, *tok.encode("Look at "), t["boi_token_id"], *[t["image_token_id"]] * n_image, t["eoi_token_id"],
                    *tok.encode(" and hear "), t["boa_token_id"], *[t["audio_token_id"]] * n_audio, t["eoa_token_index"],
                    *tok.encode(" now")]
    np.testing.assert_array_equal(ids, expected_ids)
    assert as_text and {what for _, what, _ in soft} == {"image", "audio"}
    types = token_types(ids, t)
    with torch.no_grad():
        expected = ref(input_ids=torch.from_numpy(ids[None]), mm_token_type_ids=torch.from_numpy(types[None]), use_cache=False,
                       output_hidden_states=True, **inputs).logits[0].float().numpy()
    got = model.forward(ids, mm_token_type_ids=types, **{k: v.numpy() for k, v in inputs.items()})
    np.testing.assert_allclose(got, expected, **TOL)


def reference_greedy(ref, model, ids, inputs):
    ref.generation_config.eos_token_id = None
    types = token_types(ids, model.config.tokens)
    with torch.no_grad():
        out = ref.generate(
            input_ids=torch.from_numpy(ids[None]), mm_token_type_ids=torch.from_numpy(types[None]), max_new_tokens=NEW_TOKENS,
            do_sample=False, eos_token_id=None, pad_token_id=0, output_hidden_states=True, output_logits=True,
            return_dict_in_generate=True, **inputs,
        )
    return out.sequences[0, len(ids):].numpy(), torch.stack(out.logits)[:, 0].float().numpy()


def test_greedy_generation_and_cli_with_an_image_and_a_clip(saved):
    ref, model, image, clip, samples = saved
    inputs, _, _ = reference_inputs(model, image, samples)
    ids, _, soft = prompt_with_media(model, PROMPT, [image], BUDGET, [clip])
    expected, expected_logits = reference_greedy(ref, model, ids, inputs)
    new, logits = our_steps(model, ids, NEW_TOKENS, soft=soft)
    np.testing.assert_allclose(logits, expected_logits, **TOL)
    np.testing.assert_array_equal(new, expected)
    stops = stop_token_ids(model)
    text = model.tokenizer.decode([i for i in expected if i not in stops])
    assert model.generate(PROMPT, NEW_TOKENS, temperature=0, images=[image], max_soft_tokens=BUDGET, audio=[clip]) == text
    r = subprocess.run([sys.executable, "-m", "minigemma", "generate", PROMPT, "--model", model.path, "--image", image,
                        "--audio", clip, "--max-soft-tokens", str(BUDGET), "--temperature", "0", "--max-new-tokens",
                        str(NEW_TOKENS)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == text + "\n"


def test_chat_turn_with_an_image_and_a_clip(saved):
    """A chat turn showing an image and playing a clip, then a text turn: each turn's token
    sequence is the rendered conversation with both kinds of marks expanded (the tokenizer's
    own template; the expansion checked against hand-built ids), and the cache it leaves gives
    the reference's logits for the whole conversation."""
    from minigemma.generate.chat import Conversation
    from minigemma.generate.sampling import Sampling

    ref, model, image, clip, samples = saved
    inputs, n_image, n_audio = reference_inputs(model, image, samples)
    t, tok = model.config.tokens, model.tokenizer
    chat = Conversation(model, Sampling(temperature=0.0), NEW_TOKENS, max_soft_tokens=BUDGET)
    for content in ([{"type": "image", "path": image}, {"type": "audio", "path": clip}, {"type": "text", "text": "Both?"}], "More."):
        list(chat.reply(content))
        rendered = tok.render_chat(chat.messages[:-1], add_generation_prompt=True)
        before, rest = rendered.split("<|image|>")
        between, after = rest.split("<|audio|>")
        expected_ids = [*tok.encode(before), t["boi_token_id"], *[t["image_token_id"]] * n_image, t["eoi_token_id"],
                        *tok.encode(between), t["boa_token_id"], *[t["audio_token_id"]] * n_audio, t["eoa_token_index"],
                        *tok.encode(after)]
        assert chat.cached[: len(expected_ids)] == expected_ids
        whole = np.array([*chat.cached, *tok.encode("next")[:1]])  # the cache holds chat.cached: feed one more token
        with torch.no_grad():
            expected = ref(input_ids=torch.from_numpy(whole[None]), mm_token_type_ids=torch.from_numpy(token_types(whole, t)[None]),
                           use_cache=False, output_hidden_states=True, **inputs).logits[0, -1].float().numpy()
        state = chat.cache.save()
        got = model.extend(whole[-1:], chat.cache)[-1]
        chat.cache.restore(state)
        np.testing.assert_allclose(got, expected, **TOL)


def test_cli_trace_with_an_image_and_a_clip_agrees_with_the_reference(saved, tmp_path):
    """`minigemma trace --image --audio`, by minigemma and by the reference's hooks: both towers'
    steps are in the trace, the token ids are the expanded prompt's, and `compare` passes; a
    perturbed vision weight makes it name the first vision step instead."""
    from minigemma.verify.trace_file import load_trace

    ref, model, image, clip, samples = saved
    ours, theirs = tmp_path / "ours.safetensors", tmp_path / "theirs.safetensors"
    common = ["--model", model.path, "--prompt", PROMPT, "--audio", clip, "--max-soft-tokens", str(BUDGET)]
    flags = [*common, "--image", image]
    for out, extra in ((ours, []), (theirs, ["--reference"])):
        r = subprocess.run([sys.executable, "-m", "minigemma", "trace", *flags, "--out", str(out), *extra],
                           capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr
    trace = load_trace(str(ours))
    ids, _, _ = prompt_with_media(model, PROMPT, [image], BUDGET, [clip])
    assert trace.token_ids == ids.tolist()
    assert {"vision.patch_embed", "vision.soft_tokens", "audio.subsample", "audio.soft_tokens", "logits"} <= set(trace.activations)
    r = subprocess.run([sys.executable, "-m", "minigemma", "compare", str(ours), str(theirs)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # the same image, a different picture: the first divergence is the vision tower's first step
    other = tmp_path / "other.png"
    Image.fromarray(255 - np.asarray(Image.open(image))).save(other)
    mine = tmp_path / "mine.safetensors"
    r = subprocess.run([sys.executable, "-m", "minigemma", "trace", *common, "--image", str(other), "--out", str(mine)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "minigemma", "compare", str(mine), str(theirs)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 1 and "vision.patch_embed" in r.stdout.strip().splitlines()[-1], r.stdout
    # media go with a text prompt, whose marks say where: token ids are refused in one line
    r = subprocess.run([sys.executable, "-m", "minigemma", "trace", "--model", model.path, "--ids", "2,3", "--image", image,
                        "--out", str(mine)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "minigemma: error: --image / --audio: give the text as --prompt, whose marks are expanded to the media's placeholders"]

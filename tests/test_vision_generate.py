"""Generation with images: a random `Gemma4ForConditionalGeneration` with a vision tower, saved with
a Gemma 4-shaped tokenizer; greedy generation from a prompt with two images (different aspect
ratios, bidirectional attention inside each) equals the reference's `generate`, through the
Python API (str and token-id prompts) and `minigemma generate --image ... --max-soft-tokens`;
and the CLI's image mistakes are one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_generate_reference import our_steps
from tokenizer_fixtures import write_bpe_tokenizer
from vision_reference import make_text_config, randomize

import minigemma
from minigemma.generate.tokenizer import load_tokenizer
from minigemma.generate.media_prompt import prompt_with_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET, NEW_TOKENS = 70, 12
PROMPT = "Compare <|image|> with <|image|> please"
TEXT = dict(
    hidden_size=32, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
    head_dim=8, global_head_dim=16, sliding_window=6, hidden_size_per_layer_input=8, final_logit_softcapping=30.0,
    use_bidirectional_attention="vision", layer_types=["sliding_attention", "sliding_attention", "full_attention"],
)
VISION = dict(
    hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
    head_dim=8, patch_size=4, pooling_kernel_size=3, position_embedding_size=64, use_clipped_linears=True,
    standardize=True,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A reference model whose vocabulary and multimodal ids are the tokenizer's, saved beside it;
    two PNGs, one tall, one wide."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    d = write_bpe_tokenizer(str(tmp_path_factory.mktemp("vision_generate")))
    tok = load_tokenizer(d)
    ids = {f"{name}_token_id": tok.token_id(f"{name}_token") for name in ("image", "boi", "eoi", "audio")}
    ids["video_token_id"] = tok.token_id("mask_token")  # the fixture has no video token; any unused special id
    text = make_text_config(dict(TEXT, vocab_size=tok.vocab_size, vocab_size_per_layer_input=tok.vocab_size,
                                 pad_token_id=tok.token_id("pad_token"), bos_token_id=tok.bos_id, eos_token_id=None))
    cfg = Gemma4Config(text_config=text.to_dict(), vision_config=VISION, audio_config=None, **ids)
    for c in (cfg, cfg.text_config, cfg.vision_config):
        c._attn_implementation = "eager"
    ref = randomize(Gemma4ForConditionalGeneration(cfg), seed=11).eval()
    ref.save_pretrained(d)
    rng = np.random.default_rng(0)
    paths = []
    for name, (h, w) in (("tall", (90, 30)), ("wide", (20, 110))):
        paths.append(os.path.join(d, f"{name}.png"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    return ref, minigemma.load(d), paths


def reference_greedy(ref, model, ids, paths):
    """The reference's greedy new ids and step logits for our prompt ids and the processor's images."""
    from minigemma.vision.image import preprocess

    inputs = preprocess(paths, BUDGET, VISION["patch_size"], VISION["pooling_kernel_size"])
    types = (ids == model.config.tokens["image_token_id"]).astype(np.int64)  # as the processor marks them
    ref.generation_config.eos_token_id = None
    with torch.no_grad():
        out = ref.generate(
            input_ids=torch.from_numpy(ids[None]), pixel_values=torch.from_numpy(inputs.pixel_values),
            image_position_ids=torch.from_numpy(inputs.image_position_ids), mm_token_type_ids=torch.from_numpy(types[None]),
            max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=0, output_hidden_states=True,
            output_logits=True, return_dict_in_generate=True,
        )
    return out.sequences[0, len(ids):].numpy(), torch.stack(out.logits)[:, 0].float().numpy()


def test_greedy_generation_with_images_equals_reference(saved):
    ref, model, paths = saved
    ids, as_text, soft = prompt_with_images(model, PROMPT, paths, BUDGET)
    assert as_text and len(soft) == 1
    t = model.config.tokens
    assert ids[0] == model.tokenizer.bos_id and np.sum(ids == t["boi_token_id"]) == np.sum(ids == t["eoi_token_id"]) == 2
    expected, expected_logits = reference_greedy(ref, model, ids, paths)
    assert len(expected) == NEW_TOKENS
    new, logits = our_steps(model, ids, NEW_TOKENS, soft=soft)  # each step's logits as the reference's
    np.testing.assert_array_equal(new, expected)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
    # token ids in (placeholders already expanded), ids out
    np.testing.assert_array_equal(model.generate(ids, NEW_TOKENS, temperature=0, images=paths, max_soft_tokens=BUDGET), expected)
    # text in, text out; and streamed
    text = model.generate(PROMPT, NEW_TOKENS, temperature=0, images=paths, max_soft_tokens=BUDGET)
    assert text == model.tokenizer.decode(expected)
    assert "".join(model.stream(PROMPT, NEW_TOKENS, temperature=0, images=paths, max_soft_tokens=BUDGET)) == text


def run(*args):
    return subprocess.run([sys.executable, "-m", "minigemma", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cli_generate_with_images(saved):
    _, model, paths = saved
    r = run("generate", PROMPT, "--model", model.path, "--image", paths[0], "--image", paths[1],
            "--max-soft-tokens", str(BUDGET), "--temperature", "0", "--max-new-tokens", str(NEW_TOKENS))
    assert r.returncode == 0, r.stderr
    assert r.stdout == model.generate(PROMPT, NEW_TOKENS, temperature=0, images=paths, max_soft_tokens=BUDGET) + "\n"


def test_cli_image_mistakes_are_one_line_errors(saved, tmp_path):
    _, model, paths = saved
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    cases = [
        (["--image", str(not_image)], f"{not_image}: cannot read an image"),
        (["--image", str(tmp_path / "missing.jpg")], "missing.jpg: cannot read an image"),
        (["--image", paths[0], "--max-soft-tokens", "100"], "argument --max-soft-tokens: invalid choice: 100"),
        (["--image", paths[0]], "prompt: 2 image marks '<|image|>', but 1 image given"),
    ]
    for flags, message in cases:
        r = run("generate", PROMPT, "--model", model.path, "--max-new-tokens", "2", *flags)
        assert r.returncode == 2 and r.stdout == "", r.stderr
        error = [line for line in r.stderr.splitlines() if "error" in line]
        assert len(error) == 1 and message in error[0] and "Traceback" not in r.stderr, r.stderr


def reference_processor(model):
    """`Gemma4Processor` with the reference PIL image processor and the checkpoint's tokenizer
    (its video processor would need torchvision, which the image path never touches)."""
    from transformers import AutoTokenizer, Gemma4Processor
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil

    tok = AutoTokenizer.from_pretrained(model.path)
    images = Gemma4ImageProcessorPil(max_soft_tokens=BUDGET, patch_size=VISION["patch_size"],
                                     pooling_kernel_size=VISION["pooling_kernel_size"])
    p = Gemma4Processor.__new__(Gemma4Processor)
    p.tokenizer, p.image_processor, p.chat_template, p.video_token = tok, images, None, None
    for name in ("image_token", "boi_token", "eoi_token", "audio_token", "boa_token", "eoa_token"):
        setattr(p, name, getattr(tok, name))
    p.image_token_id = tok.convert_tokens_to_ids(tok.image_token)
    return p


def test_chat_turns_with_images_match_reference_generate(saved):
    """Three turns, an image in the first and the third: every turn's whole token sequence (the
    history's images expanded again, the cache reused) equals the reference processor's prompt for
    the conversation rendered by the reference tokenizer's template, followed by the reference's
    greedy reply to it."""
    from minigemma.generate.chat import Conversation
    from minigemma.generate.sampling import Sampling

    ref, model, paths = saved
    processor = reference_processor(model)
    chat = Conversation(model, Sampling(temperature=0.0), NEW_TOKENS, max_soft_tokens=BUDGET)
    turns = [([{"type": "image", "path": paths[0]}, {"type": "text", "text": "What is this?"}], paths[:1]),
             ("Say more.", paths[:1]),
             ([{"type": "image", "image": paths[1]}, {"type": "text", "text": "And this?"}], paths)]
    for content, shown in turns:
        list(chat.reply(content))
        rendered = processor.tokenizer.apply_chat_template(chat.messages[:-1], tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[rendered], images=[[Image.open(p) for p in shown]], return_tensors="np", add_special_tokens=False)
        ids = inputs["input_ids"][0]
        expected, _ = reference_greedy(ref, model, ids, shown)
        assert chat.cached == [*ids, *expected[:-1]]  # the last token is sampled, never fed
        assert chat.last.prompt_tokens - chat.last.prefilled > 0 or content is turns[0][0]  # later turns reuse the cache
        # what the cache holds (every image's soft tokens where they belong): feeding the last
        # token gives the reference's logits over the whole conversation
        whole = np.array([*ids, *expected])
        with torch.no_grad():
            reference_last = ref(input_ids=torch.from_numpy(whole[None]), pixel_values=torch.from_numpy(inputs["pixel_values"]),
                                 image_position_ids=torch.from_numpy(inputs["image_position_ids"]),
                                 mm_token_type_ids=torch.from_numpy((whole == processor.image_token_id).astype(np.int64)[None]),
                                 use_cache=False, output_hidden_states=True).logits[0, -1].float().numpy()
        state = chat.cache.save()
        np.testing.assert_allclose(model.extend(whole[-1:], chat.cache)[-1], reference_last, rtol=1e-4, atol=1e-4)
        chat.cache.restore(state)


def test_cli_chat_with_an_image(saved):
    """`chat --image` shows the image in the first turn: the replies are the API's."""
    from minigemma.generate.chat import ANSWER, Conversation
    from minigemma.generate.sampling import Sampling

    _, model, paths = saved
    chat = Conversation(model, Sampling(temperature=0.0), NEW_TOKENS, max_soft_tokens=BUDGET)
    first = "".join(p for c, p in chat.reply([{"type": "image", "path": paths[1]}, {"type": "text", "text": "Look"}]) if c == ANSWER)
    second = "".join(p for c, p in chat.reply("again") if c == ANSWER)
    r = subprocess.run([sys.executable, "-m", "minigemma", "chat", "--model", model.path, "--image", paths[1],
                        "--max-soft-tokens", str(BUDGET), "--temperature", "0", "--max-new-tokens", str(NEW_TOKENS)],
                       input="Look\nagain\n", capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{first}\n{second}\n"


def test_info_describes_the_vision_tower_and_counts_its_parameters(saved):
    ref, model, _ = saved
    r = subprocess.run([sys.executable, "-m", "minigemma", "info", "--model", model.path], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert ("vision:      encoder 2 layers x 24, 2 heads, 4-pixel patches, 3x3 pooling per soft token, "
            "grids up to 64 patches a side") in r.stdout
    from minigemma.cli.info import parameter_parts

    stored = {**ref.model.vision_tower.state_dict(), **ref.model.embed_vision.state_dict()}  # buffers too: std_bias, ...
    clip_bounds = sum(v.numel() for k, v in stored.items() if k.split(".")[-1].endswith(("_min", "_max")))
    assert parameter_parts(model)["vision"] == sum(v.numel() for v in stored.values()) - clip_bounds

"""Audio prompts end to end: a checkpoint directory as a user has it (random
`Gemma4ForConditionalGeneration` with an audio tower, saved with `save_pretrained`, a Gemma 4-shaped
tokenizer, the extractor's `preprocessor_config.json`) and WAV files written here.

The reference for the prompt is the reference processor itself (`Gemma4Processor`'s audio path:
feature extraction, `replace_audio_token`, placeholder expansion, tokenisation); the reference
for generation is `generate` on the processor's outputs. Prompt ids equal, features at 1e-5,
greedy step logits at 1e-4, greedy ids exactly; the CLI prints the reference's text."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from audio_reference import reference_audio_text_model, write_wav
from test_generate_reference import our_steps
from tokenizer_fixtures import write_bpe_tokenizer
from transformers import AutoTokenizer, Gemma4AudioFeatureExtractor, Gemma4Processor

import minigemma
from minigemma.audio.prompt import prompt_with_audio
from minigemma.generate.loop import stop_token_ids
from minigemma.generate.sampling import Sampling

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MELS = 8  # what the small tower's subsampling channels (8 // 4 = 2 frequencies) accept
NEW_TOKENS = 12
PROMPT = "Hear <|audio|> and then <|audio|> please"
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(directory, reference model, reference processor, clips as samples, their WAV paths)."""
    d = write_bpe_tokenizer(str(tmp_path_factory.mktemp("audio_ckpt")))
    tok = AutoTokenizer.from_pretrained(d)
    begin, placeholder, end = tok.convert_tokens_to_ids([tok.boa_token, tok.audio_token, tok.eoa_token])
    vocab = len(tok)
    text = dict(
        vocab_size=vocab, hidden_size=32, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, global_head_dim=16, sliding_window=4, hidden_size_per_layer_input=8,
        vocab_size_per_layer_input=vocab, layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    audio = dict(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, subsampling_conv_channels=[8, 3],
        attention_chunk_size=5, attention_context_left=4, attention_context_right=1, output_proj_dims=12,
    )
    ref = reference_audio_text_model(text, audio, seed=4, tokens=(placeholder, begin, end))
    ref.save_pretrained(d)
    extractor = Gemma4AudioFeatureExtractor(feature_size=MELS)
    extractor.save_pretrained(d)

    rng = np.random.default_rng(4)
    paths, clips = [], []
    for i, n in enumerate([2345, 1111]):
        ints = rng.integers(-20000, 20000, n)
        write_wav(os.path.join(d, f"clip{i}.wav"), ints / 32768)
        paths.append(os.path.join(d, f"clip{i}.wav"))
        clips.append((ints / 32768).astype(np.float32))
    return d, ref, reference_processor(tok, extractor), clips, paths


def reference_processor(tok, extractor) -> Gemma4Processor:
    """`Gemma4Processor` with just its text and audio parts (the image and video processors need
    torchvision, which the audio path never touches)."""
    p = Gemma4Processor.__new__(Gemma4Processor)
    p.tokenizer, p.feature_extractor, p.chat_template = tok, extractor, None
    for name in ("image_token", "boi_token", "eoi_token", "audio_token", "boa_token", "eoa_token"):
        setattr(p, name, getattr(tok, name))
    p.audio_token_id = tok.convert_tokens_to_ids(tok.audio_token)
    p.video_token = None
    return p


def reference_greedy(ref, inputs, stops, n):
    ref.generation_config.eos_token_id = None
    with torch.no_grad():
        out = ref.generate(
            input_ids=torch.tensor(inputs["input_ids"]),
            input_features=torch.tensor(inputs["input_features"]),
            input_features_mask=torch.tensor(inputs["input_features_mask"]),
            max_new_tokens=n, do_sample=False, eos_token_id=sorted(stops), pad_token_id=0,
            output_logits=True, return_dict_in_generate=True, output_hidden_states=True,
        )
    return out.sequences[0, inputs["input_ids"].shape[1] :].numpy(), torch.stack(out.logits)[:, 0].float().numpy()


def test_prompt_ids_and_greedy_generation_match_the_reference(checkpoint):
    d, ref, processor, clips, paths = checkpoint
    model = minigemma.load(d)
    inputs = processor(text=[PROMPT], audio=clips, return_tensors="np")
    ids, soft = prompt_with_audio(model, PROMPT, paths)
    np.testing.assert_array_equal(ids, inputs["input_ids"][0])  # placement and counts: the processor's
    stops = stop_token_ids(model)
    expected_new, expected_logits = reference_greedy(ref, inputs, stops, NEW_TOKENS)

    new, logits = our_steps(model, ids, NEW_TOKENS, stops, soft)
    np.testing.assert_allclose(logits, expected_logits, **TOL)
    np.testing.assert_array_equal(new, expected_new)


def test_generate_api_with_clips_as_paths_or_samples(checkpoint):
    d, ref, processor, clips, paths = checkpoint
    model = minigemma.load(d)
    inputs = processor(text=[PROMPT], audio=clips, return_tensors="np")
    expected_new, _ = reference_greedy(ref, inputs, stop_token_ids(model), NEW_TOKENS)
    stops = stop_token_ids(model)
    expected_text = model.tokenizer.decode([t for t in expected_new if t not in stops])
    assert model.generate(PROMPT, max_new_tokens=NEW_TOKENS, temperature=0, audio=paths) == expected_text
    assert "".join(model.stream(PROMPT, max_new_tokens=NEW_TOKENS, temperature=0, audio=clips)) == expected_text
    # chat messages carry their clips in audio items
    messages = [{"role": "user", "content": [{"type": "audio", "path": paths[0]}, {"type": "text", "text": "Hear"}]}]
    rendered = processor.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[rendered], audio=clips[:1], return_tensors="np", add_special_tokens=False)
    expected_new, _ = reference_greedy(ref, inputs, stops, NEW_TOKENS)
    expected_text = model.tokenizer.decode([t for t in expected_new if t not in stops])
    assert model.generate(messages, max_new_tokens=NEW_TOKENS, temperature=0) == expected_text
    # no marker: the clips go in front, as if the prompt began with one marker per clip
    unmarked = model.generate(" and then  please", max_new_tokens=4, temperature=0, audio=paths)
    assert unmarked == model.generate("<|audio|><|audio|> and then  please", max_new_tokens=4, temperature=0, audio=paths)


def run(*args):
    return subprocess.run([sys.executable, "-m", "minigemma", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_generate_with_audio_prints_the_reference_text(checkpoint):
    d, ref, processor, clips, paths = checkpoint
    model = minigemma.load(d)
    stops = stop_token_ids(model)
    expected_new, _ = reference_greedy(ref, processor(text=[PROMPT], audio=clips, return_tensors="np"), stops, NEW_TOKENS)
    r = run("generate", PROMPT, "--model", d, "--audio", paths[0], "--audio", paths[1], "--temperature", "0",
            "--max-new-tokens", str(NEW_TOKENS))
    assert r.returncode == 0, r.stderr
    assert r.stdout == model.tokenizer.decode([t for t in expected_new if t not in stops]) + "\n"


def test_cli_audio_errors_are_one_line(checkpoint, tmp_path):
    d, _, _, _, paths = checkpoint
    short = tmp_path / "short.wav"
    write_wav(short, np.zeros(100))
    float_wav = tmp_path / "float.wav"
    float_wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x03\x00\x01\x00\x80\x3e\x00\x00\x00\xfa\x00\x00\x04\x00\x20\x00data\x00\x00\x00\x00")
    cases = [  # (flags, message, whether the file is refused before the model loads)
        (["--audio", str(tmp_path / "missing.wav")], "missing.wav: cannot read", True),
        (["--audio", str(float_wav)], "float.wav: not an integer PCM WAV file (unknown format: 3)", True),
        (["--audio", str(short)], "audio clip 0 (" + str(short) + "): 100 samples (6.2 ms) is too short", False),
        (["--audio", paths[0]], "prompt: 2 <|audio|> markers, but 1 audio clip given", False),  # more markers than clips
        (["--audio", paths[0]] * 3, "prompt: 2 <|audio|> markers, but 3 audio clips given", False),
    ]
    for flags, message, early in cases:
        r = run("generate", PROMPT, "--model", d, *flags)
        assert r.returncode == 2 and r.stdout == "", r.stderr
        errors = [line for line in r.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0] and "Traceback" not in r.stderr, r.stderr
        assert ("loaded" in r.stderr) != early


def test_audio_to_a_checkpoint_without_audio_tower(checkpoint, tmp_path):
    from gemma_reference import reference_text_model

    d, ref, _, _, paths = checkpoint
    vocab = ref.config.text_config.vocab_size
    text_only = dict(vocab_size=vocab, hidden_size=16, intermediate_size=8, num_hidden_layers=2, num_attention_heads=1,
                     num_key_value_heads=1, head_dim=4, layer_types=["sliding_attention", "full_attention"], sliding_window=2,
                     hidden_size_per_layer_input=0)
    reference_text_model(text_only, "causal", seed=0).save_pretrained(tmp_path)
    write_bpe_tokenizer(str(tmp_path))
    r = run("generate", "hi", "--model", str(tmp_path), "--audio", paths[0])
    assert r.returncode == 2 and "has no audio tower" in r.stderr.strip().splitlines()[-1]


def test_chat_turns_with_audio_match_reference_generate(checkpoint):
    """Two turns, a clip in each: every turn's whole token sequence (the history's clips
    expanded again, the cache reused) equals the reference processor's prompt for the rendered
    conversation followed by the reference's greedy reply."""
    from minigemma.generate.chat import Conversation

    d, ref, processor, clips, paths = checkpoint
    model = minigemma.load(d)
    stops = stop_token_ids(model)
    chat = Conversation(model, Sampling(temperature=0.0), NEW_TOKENS)
    turns = [("Hear this", paths[0]), ("and now this", paths[1])]
    for i, (text, path) in enumerate(turns):
        list(chat.reply([{"type": "audio", "path": path}, {"type": "text", "text": text}]))
        rendered = processor.tokenizer.apply_chat_template(chat.messages[:-1], tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[rendered], audio=clips[: i + 1], return_tensors="np", add_special_tokens=False)  # as apply_chat_template does
        new, _ = reference_greedy(ref, inputs, stops, NEW_TOKENS)
        assert chat.cached == [*inputs["input_ids"][0], *new[:-1]]  # the last token is sampled, never fed
        # what the cache holds (every clip's soft tokens where they belong): feeding the last token
        # gives the reference's logits over the whole conversation
        whole = np.array([*inputs["input_ids"][0], *new])
        with torch.no_grad():
            reference_last = ref(input_ids=torch.from_numpy(whole[None]), input_features=torch.tensor(inputs["input_features"]),
                                 input_features_mask=torch.tensor(inputs["input_features_mask"]), use_cache=False,
                                 output_hidden_states=True).logits[0, -1].float().numpy()
        state = chat.cache.save()
        np.testing.assert_allclose(model.extend(whole[-1:], chat.cache)[-1], reference_last, **TOL)
        chat.cache.restore(state)
    assert chat.last.prompt_tokens - chat.last.prefilled > 0  # turn 2 reused turn 1's cache, clip included


def test_cli_chat_with_audio(checkpoint):
    """`chat --audio` hears the clip in the first turn: the reply is the one the API gives."""
    from minigemma.generate.chat import ANSWER, Conversation

    d, _, _, _, paths = checkpoint
    model = minigemma.load(d)
    chat = Conversation(model, Sampling(temperature=0.0), NEW_TOKENS)
    first = "".join(p for c, p in chat.reply([{"type": "audio", "path": paths[0]}, {"type": "text", "text": "Hear this"}]) if c == ANSWER)
    second = "".join(p for c, p in chat.reply("again") if c == ANSWER)
    r = subprocess.run([sys.executable, "-m", "minigemma", "chat", "--model", d, "--audio", paths[0], "--temperature", "0",
                        "--max-new-tokens", str(NEW_TOKENS)], input="Hear this\nagain\n", capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{first}\n{second}\n"


def test_info_describes_the_audio_tower(checkpoint):
    r = run("info", "--model", checkpoint[0])
    assert r.returncode == 0, r.stderr
    assert "audio:       conformer 2 layers x 16, 2 heads, chunks of 5 (+3 left, +1 right), clipped linears; 8 mel bins, 40 ms per soft token" in r.stdout

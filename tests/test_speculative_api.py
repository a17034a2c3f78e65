"""Speculative decoding through the public API and the CLI, on the embedded model with a random
assistant saved as a checkpoint directory (`save_pretrained` of the patched reference):
`model.generate(prompt, assistant=DIR)` and `model.stream` give the plain greedy text, `minigemma
generate --assistant DIR` and `minigemma chat --assistant DIR` print it with a stderr line for the
acceptance rate and tokens/s, and bad assistants are one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from assistant_reference import our_assistant, patched_kv_sharing, reference_assistant
import minigemma
from minigemma import ConfigError
from minigemma.assistant import load_assistant
from minigemma.generate.chat import Conversation
from minigemma.generate.sampling import Sampling
from minigemma.model import default_model_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "Once upon a time"
DROP = ("architectures", "dtype", "transformers_version", "use_cache", "initializer_range", "attention_dropout")


def tiny_assistant_kwargs(hidden: int = 64) -> dict:
    """An assistant shaped for the embedded model: its attention shapes, two layers (sliding, full)."""
    with open(os.path.join(default_model_path(), "config.json")) as f:
        target = json.load(f)
    text = {k: v for k, v in target.items() if k not in DROP}
    text.update(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                layer_types=["sliding_attention", "full_attention"], per_layer_config={"1": target["per_layer_config"]["2"]},
                enable_moe_block=False, num_experts=None, top_k_experts=None, moe_intermediate_size=None,
                use_double_wide_mlp=False, hidden_size_per_layer_input=0, vocab_size_per_layer_input=0,
                num_kv_shared_layers=0, model_type="gemma4_text")
    return dict(text_config=text, backbone_hidden_size=target["hidden_size"], use_ordered_embeddings=True,
                num_centroids=64, centroid_intermediate_top_k=8)


@pytest.fixture(scope="module")
def assistant_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("assistant")
    ref = reference_assistant(tiny_assistant_kwargs(), seed=5, num_assistant_tokens=3)
    with patched_kv_sharing():
        ref.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def model():
    return minigemma.load(kernels=False)


def test_generate_and_stream_with_an_assistant_give_the_greedy_text(model, assistant_dir):
    plain = model.generate(PROMPT, max_new_tokens=12, temperature=0)
    assert model.generate(PROMPT, max_new_tokens=12, temperature=0, assistant=assistant_dir) == plain
    assistant = load_assistant(assistant_dir, kernels=False)
    assert assistant.num_assistant_tokens == 3
    assert "".join(model.stream(PROMPT, max_new_tokens=12, temperature=0, assistant=assistant, draft_tokens=5)) == plain
    ids = model.tokenizer.encode(PROMPT, add_special_tokens=True)
    np.testing.assert_array_equal(model.generate(ids, max_new_tokens=6, temperature=0, assistant=assistant),
                                  model.generate(ids, max_new_tokens=6, temperature=0))


def test_sampling_with_an_assistant_repeats_with_a_seed(model, assistant_dir):
    a = model.generate(PROMPT, max_new_tokens=10, temperature=0.9, seed=4, assistant=assistant_dir)
    assert a == model.generate(PROMPT, max_new_tokens=10, temperature=0.9, seed=4, assistant=assistant_dir)


def test_chat_with_an_assistant_replies_as_without(model, assistant_dir):
    turns = ["Hello there.", "Tell me a story."]
    replies = []
    for assistant in (None, assistant_dir):
        chat = Conversation(model, Sampling(), 10, assistant=assistant)
        replies.append(["".join(piece for _, piece in chat.reply(t)) for t in turns])
    assert replies[0] == replies[1]
    assert chat.speculation.drafted > 0


def test_bad_assistants_are_named_errors(model, assistant_dir, tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        model.generate(PROMPT, assistant=str(tmp_path / "nowhere"))
    with pytest.raises(minigemma.InputError, match="draft_tokens"):
        model.generate(PROMPT, assistant=assistant_dir, draft_tokens=0)
    wide = reference_assistant(tiny_assistant_kwargs(), seed=5)
    wide_cfg = our_assistant(wide).config
    from minigemma.assistant.decoder import check_pairing
    from minigemma.text.config import text_config_from_dict

    narrow = text_config_from_dict({**json.load(open(os.path.join(default_model_path(), "config.json"))), "hidden_size": 96})
    with pytest.raises(ConfigError, match="backbone_hidden_size"):
        check_pairing(wide_cfg.text, wide_cfg.backbone_hidden_size, narrow)


def run(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "minigemma", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_cli_generate_and_chat_with_an_assistant(assistant_dir):
    plain = run("generate", PROMPT, "--max-new-tokens", "8", "--temperature", "0")
    spec = run("generate", PROMPT, "--max-new-tokens", "8", "--temperature", "0", "--assistant", assistant_dir,
               "--draft-tokens", "2")
    assert plain.returncode == 0 and spec.returncode == 0, spec.stderr
    assert spec.stdout == plain.stdout
    last = spec.stderr.splitlines()[-1]
    assert "drafts accepted" in last and "tokens/s" in last
    chat = run("chat", "--max-new-tokens", "6", "--temperature", "0", "--assistant", assistant_dir, stdin="Hi\n")
    assert chat.returncode == 0 and "drafts accepted" in chat.stderr
    bad = run("generate", PROMPT, "--assistant", os.path.join(assistant_dir, "missing"))
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "missing" in bad.stderr
    bad = run("generate", PROMPT, "--assistant", assistant_dir, "--draft-tokens", "0")
    assert bad.returncode != 0 and "--draft-tokens" in bad.stderr


def test_the_shipped_assistant_drafts_well_and_changes_nothing(model):
    """The trained assistant beside the embedded model: on held-out text, greedy speculation gives
    the plain greedy tokens, and far more of its drafts are accepted than chance (1 in 4096) would."""
    from minigemma.generate.loop import generate_ids
    from minigemma.generate.speculative import SpeculationStats, speculative_ids

    assistant = load_assistant(os.path.join(os.path.dirname(default_model_path()), "tiny_assistant"), kernels=False)
    assert assistant.num_assistant_tokens == 3
    with open(os.path.join(default_model_path(), "heldout_sample.txt"), encoding="utf-8") as f:
        paragraphs = [p for p in f.read().split("\n\n") if len(p.split()) > 30][:2]
    stats = SpeculationStats()
    for text in paragraphs:
        ids = model.tokenizer.encode(" ".join(text.split()[:20]), add_special_tokens=True)
        plain = list(generate_ids(model, ids, Sampling(), 24))
        assert list(speculative_ids(model, assistant, ids, Sampling(), 24, stats=stats)) == plain
    print(f"shipped assistant: {100 * stats.acceptance_rate:.0f}% of {stats.drafted} drafts accepted")
    assert stats.acceptance_rate > 0.3, stats

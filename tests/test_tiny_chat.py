"""The embedded chat model (`minigemma/data/tiny-chat`): it answers in the model turn and stops at
`<turn|>`, thinks in the channel when asked to, has learned the held-out conversations better than
the plain model it started from, samples by default with Gemma's settings, and minigemma runs it
exactly as the reference does. Plus the corpus builder and the masked, resumable training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minigemma
from minigemma.generate.sampling import Sampling, load_generation_config, resolve
from minigemma.generate.tokenizer import load_tokenizer
from minigemma.model import default_chat_model_path, default_model_path
from weights_tools import chat_corpus, chat_eval, train_tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

CHAT_DIR = default_chat_model_path()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_NEW = 200  # replies measured here are shorter; hitting it means the turn never ended
HELD_OUT_SCORED = 60  # held-out conversations scored (of the shipped ones), enough for a stable mean
LOGITS_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model():
    return minigemma.load(CHAT_DIR)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(CHAT_DIR)


def run_cli(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "minigemma", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def reports(stderr: str) -> list[int]:
    """New-token counts of each turn's `... N new tokens, ...` line."""
    return [int(line.split("; ")[1].split()[0]) for line in stderr.splitlines() if "new tokens" in line]


# --------------------------------------------------------------------------------------------
# what ships


def test_ships_beside_the_plain_model_with_gemma_sampling_defaults():
    for name in ("config.json", "model.safetensors", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "generation_config.json", "README.md", "heldout_chat.jsonl"):
        assert os.path.isfile(os.path.join(CHAT_DIR, name)), name
    assert resolve(generation_config=load_generation_config(CHAT_DIR)) == Sampling(1.0, 64, 0.95)
    with open(os.path.join(CHAT_DIR, "config.json")) as f, open(os.path.join(default_model_path(), "config.json")) as g:
        chat, plain = json.load(f), json.load(g)
    assert chat == plain  # the same architecture: a sibling of the plain model
    for name in ("tokenizer.model", "tokenizer_config.json", "chat_template.jinja"):
        with open(os.path.join(CHAT_DIR, name), "rb") as f, open(os.path.join(default_model_path(), name), "rb") as g:
            assert f.read() == g.read(), name


# --------------------------------------------------------------------------------------------
# behaviour, through the command line as a user runs it


def test_piped_chat_answers_in_the_model_turn_and_stops_at_end_of_turn():
    # as the README's first command: Gemma's sampling defaults, a seed to repeat it
    r = run_cli("chat", "--seed", "0", "--max-new-tokens", str(MAX_NEW),
                stdin="Hi!\nWhat does os.path.join do?\nWhat is the pass statement?\n")
    assert r.returncode == 0, r.stderr
    counts = reports(r.stderr)
    assert len(counts) == 3 and all(n < MAX_NEW for n in counts), r.stderr  # each turn ended at a stop token
    replies = r.stdout.strip("\n").split("\n")
    assert replies and all("<|turn>" not in line and "<turn|>" not in line for line in replies)
    assert "(thinking)" not in r.stdout  # no thinking unless asked
    print(r.stdout)


def test_think_shows_a_thinking_channel_then_an_answer():
    r = run_cli("chat", "--think", "--temperature", "0", "--max-new-tokens", str(MAX_NEW),
                stdin="What does str.upper do?\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("(thinking) "), r.stdout
    thought, _, answer = r.stdout.partition("\n")
    assert len(thought) > len("(thinking) ") and answer.strip(), r.stdout
    assert reports(r.stderr)[0] < MAX_NEW
    print(r.stdout)


def test_generate_samples_by_default_and_is_greedy_at_temperature_zero(model):
    prompt = "<|turn>user\nWhat does len do?<turn|>\n<|turn>model\n"
    runs = [run_cli("generate", prompt, "--model", CHAT_DIR, "--max-new-tokens", "24", *extra)
            for extra in (["--seed", "1"], ["--seed", "2"], ["--temperature", "0"])]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert runs[0].stdout != runs[1].stdout  # sampled: the seed matters
    assert runs[2].stdout == model.generate(prompt, max_new_tokens=24, temperature=0) + "\n"


# --------------------------------------------------------------------------------------------
# it has learned: the model's turns of held-out conversations, and how its replies to them end

REPLIES_ASKED = 10  # held-out questions whose replies are generated here
MIN_ENDED = 8  # of them, at least this many end at <turn|> (the card reports the greedy rate on more)


def test_held_out_questions_get_replies_that_end_at_end_of_turn(model):
    """Sampled as `minigemma chat` samples by default (Gemma's settings), with a seed."""
    held_out = chat_eval.read_conversations(os.path.join(CHAT_DIR, "heldout_chat.jsonl"))
    questions = [q for q, _ in chat_eval.first_questions(held_out)][:REPLIES_ASKED]
    sampling = resolve(seed=0, generation_config=load_generation_config(CHAT_DIR))
    plain, thinking = (chat_eval.reply_endings(model, questions, think, MAX_NEW, sampling) for think in (False, True))
    print(f"held-out replies ending at <turn|>: {plain['ended_at_turn_end']}/{len(questions)}, "
          f"with thinking {thinking['ended_at_turn_end']}/{len(questions)} (opened the channel: {thinking['opened_thinking']})")
    assert plain["ended_at_turn_end"] >= MIN_ENDED and plain["opened_thinking"] == 0
    assert thinking["ended_at_turn_end"] >= MIN_ENDED and thinking["opened_thinking"] >= MIN_ENDED



def test_held_out_model_turns_beat_the_plain_model(model, tokenizer):
    held_out = chat_eval.read_conversations(os.path.join(CHAT_DIR, "heldout_chat.jsonl"))[:HELD_OUT_SCORED]
    ce, count = chat_eval.model_turn_loss(model, held_out)
    plain_ce, _ = chat_eval.model_turn_loss(minigemma.load(), held_out, tokenizer)
    print(f"held-out model-turn loss over {count} tokens: chat {ce:.3f}, plain {plain_ce:.3f} nats/token")
    assert count > 3000
    assert ce < plain_ce - 1.0, (ce, plain_ce)


# --------------------------------------------------------------------------------------------
# minigemma runs the trained weights exactly as the reference does


def test_logits_equal_reference(model, tokenizer):
    reference = transformers.Gemma4ForCausalLM.from_pretrained(CHAT_DIR, dtype=torch.float32, attn_implementation="eager")
    question = [{"role": "user", "content": "What does os.path.join do?"}]
    cases = {
        "chat prompt": tokenizer.encode_chat(question),
        "thinking prompt with a system turn": tokenizer.encode_chat(
            [{"role": "system", "content": "Answer in one sentence."}, *question], enable_thinking=True),
        "held-out conversation, past the sliding window": chat_corpus.encode(
            chat_eval.read_conversations(os.path.join(CHAT_DIR, "heldout_chat.jsonl"))[0], tokenizer)[0],
    }
    for name, ids in cases.items():
        with torch.no_grad():
            expected = reference(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy()
        np.testing.assert_allclose(model.forward(np.array(ids)), expected, rtol=LOGITS_TOLERANCE,
                                   atol=LOGITS_TOLERANCE, err_msg=name)


# --------------------------------------------------------------------------------------------
# the corpus: entries from reStructuredText, conversations, the loss mask

PAGE = """\
:mod:`shelf` --- Keep things on a shelf
=======================================

.. module:: shelf
   :synopsis: Shelves.

This module keeps things on shelves, one thing per slot, and finds them again later.

.. function:: put(thing, slot=0)

   Put *thing* on the shelf at ``slot``. Raises :exc:`ValueError` if the slot is taken.

   .. versionadded:: 3.11

.. class:: Shelf(size)

   A shelf with *size* slots, each empty at first.

   .. method:: take(slot)

      Take the thing at *slot* off the shelf and return it.

Using shelves together
----------------------

Several shelves make a bookcase; a thing is found by its shelf and its slot.
"""


def test_entries_from_a_page():
    found = {e.name: e for e in chat_corpus.page_entries("library/shelf.rst.txt", PAGE)}
    assert set(found) == {"shelf", "shelf.put", "shelf.Shelf", "shelf.Shelf.take", "Using shelves together"}
    assert found["shelf.put"].signature == "shelf.put(thing, slot=0)"
    assert found["shelf.put"].text == "Put thing on the shelf at `slot`. Raises `ValueError` if the slot is taken."
    assert found["shelf.Shelf.take"].kind == "method" and found["shelf.Shelf.take"].module == "shelf"
    assert found["shelf"].kind == "module" and "Keep things on a shelf" in found["shelf"].text
    assert found["Using shelves together"].text.startswith("Several shelves")


def test_conversations_use_every_entry_once_and_are_seeded():
    items = chat_corpus.page_entries("library/shelf.rst.txt", PAGE) * 20
    convs = chat_corpus.conversations(items, seed=0)
    assert convs == chat_corpus.conversations(items, seed=0)
    assert convs != chat_corpus.conversations(items, seed=1)
    answers = [t[2] for c in convs for t in c["turns"] if t[0] not in chat_corpus.GREETINGS + chat_corpus.THANKS]
    assert len(answers) == len(items)
    assert any(c["thinking"] for c in convs) and any(c["system"] for c in convs) and any(len(c["turns"]) > 1 for c in convs)


def test_loss_mask_covers_exactly_the_model_turns(tokenizer):
    conversation = {"system": "Answer in one sentence.", "thinking": True,
                    "turns": [["Hi!", "The user greets me.", "Hello!"], ["What is x?", "About x.", "`x`\n\nIt is x."]]}
    ids, mask = chat_corpus.encode(conversation, tokenizer)
    scored = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert scored == "model\nHello!<turn|>model\n<|channel>thought\nAbout x.<channel|>`x`\n\nIt is x.<turn|>"
    rest = tokenizer.decode([i for i, m in zip(ids, mask) if not m])
    assert rest.startswith("<bos><|turn>system\n<|think|>Answer in one sentence.<turn|>\n<|turn>user\nHi!")
    # the prompt `minigemma chat --think` builds is exactly the conversation's start, unscored up to
    # the role name of the model's turn
    prompt = tokenizer.encode_chat([{"role": "system", "content": "Answer in one sentence."},
                                    {"role": "user", "content": "Hi!"}], enable_thinking=True)
    role = len(prompt) - prompt[::-1].index(tokenizer.token_id("sot_token"))  # just after the last <|turn>
    assert ids[: len(prompt)] == prompt and not any(mask[:role]) and all(mask[role : len(prompt)])


SMOKE_HP = {"seq_len": 16, "batch_size": 2, "steps": 4, "warmup_steps": 1, "checkpoint_every": 1, "log_every": 1}


def test_masked_training_ignores_unscored_targets_and_resumes_exactly(tmp_path, tokenizer):
    ids, mask = [], []
    for c in chat_corpus.conversations(chat_corpus.page_entries("library/shelf.rst.txt", PAGE) * 4, seed=0):
        i, m = chat_corpus.encode(c, tokenizer)
        ids, mask = ids + i, mask + m
    ids, mask = np.array(ids, dtype=np.uint16), np.array(mask, dtype=np.uint8)
    g = torch.Generator().manual_seed(0)
    inputs, targets = train_tiny.sample_batch(torch.from_numpy(ids.astype(np.int64)), 4, 32, g, torch.from_numpy(mask))
    kept = targets != -100
    assert kept.any() and (~kept).any()

    hp = {**train_tiny.training_defaults(), **SMOKE_HP}

    def run(work, stop_after=None):
        return train_tiny.train(train_tiny.SMOKE_CONFIG, ids, str(tmp_path / work), hp, stop_after, quiet=True, mask=mask)

    straight = run("straight").state_dict()
    run("interrupted", stop_after=2)
    resumed = run("interrupted").state_dict()
    for name in straight:
        np.testing.assert_array_equal(straight[name].numpy(), resumed[name].numpy(), err_msg=name)
    unmasked = train_tiny.train(train_tiny.SMOKE_CONFIG, ids, str(tmp_path / "unmasked"), hp, quiet=True).state_dict()
    assert not np.array_equal(unmasked["model.embed_tokens.weight"].numpy(), straight["model.embed_tokens.weight"].numpy())

"""The embedded model (`minigemma/data/tiny`): it is a real Gemma 4 with every text feature on, it
has learned something, minigemma runs it exactly as the reference does, and the script that trained
it is deterministic and resumable.

Quality is measured by minigemma on `heldout_sample.txt`, text the training never saw; the
baseline is a unigram model fitted on the training split's token counts (kept in
`training_log.json`). Equality is with `transformers.Gemma4ForCausalLM` in float32, eager attention.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import sentencepiece as spm

import minigemma
from minigemma.weights.checkpoint import Checkpoint
from minigemma.text.config import GLOBAL, SLIDING
from minigemma.model import default_model_path
from weights_tools import tiny_corpus, tiny_eval, train_tiny

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MAX_PARAMETERS = 10_000_000
MAX_FILE_BYTES = 25_000_000
MAX_CE_FRACTION_OF_UNIGRAM = 0.60
MIN_EXPERT_SHARE = 0.02
LOGITS_TOLERANCE = 1e-4
GREEDY_TOKENS = 20
MODEL_DIR = default_model_path()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """A model this small runs fastest on one thread: more only spin-wait on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return minigemma.load()


@pytest.fixture(scope="module")
def sp():
    return spm.SentencePieceProcessor(model_file=os.path.join(MODEL_DIR, "tokenizer.model"))


@pytest.fixture(scope="module")
def training_log():
    with open(os.path.join(MODEL_DIR, "training_log.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def held_out(sp):
    with open(os.path.join(MODEL_DIR, train_tiny.HELD_OUT_SAMPLE), encoding="utf-8") as f:
        return tiny_eval.encode_documents(f.read(), sp)


@pytest.fixture(scope="module")
def reference():
    model = transformers.Gemma4ForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


# --------------------------------------------------------------------------------------------
# what ships


def test_default_load_is_the_shipped_model(model):
    assert os.path.samefile(model.path, os.path.join(os.path.dirname(minigemma.__file__), "data", "tiny"))
    for name in ("config.json", "model.safetensors", "tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                 "README.md", "loss.png"):
        assert os.path.isfile(os.path.join(MODEL_DIR, name)), name


def test_size_budget_in_bf16():
    ckpt = Checkpoint(MODEL_DIR)
    n_params = sum(int(np.prod(ckpt.refs[name].shape)) for name in ckpt.names())
    assert n_params <= MAX_PARAMETERS
    assert os.path.getsize(os.path.join(MODEL_DIR, "model.safetensors")) <= MAX_FILE_BYTES
    assert {ckpt.refs[name].dtype for name in ckpt.names()} == {"BF16"}


def test_every_gemma4_text_feature_is_on(model, training_log):
    cfg = model.config.text
    sliding = [s for s in cfg.layers if s.layer_type == SLIDING]
    full = [s for s in cfg.layers if s.layer_type == GLOBAL]
    assert cfg.has_ple
    assert sliding and full and cfg.layers[-1].layer_type == GLOBAL
    assert cfg.sliding_window < training_log["hyperparameters"]["seq_len"]  # the window cuts in training
    assert cfg.rope[SLIDING].rope_type == "default"
    assert cfg.rope[GLOBAL].rope_type == "proportional" and cfg.rope[GLOBAL].partial_rotary_factor < 1
    assert full[0].head_dim != sliding[0].head_dim
    assert full[0].num_kv_heads < sliding[0].num_kv_heads < cfg.num_attention_heads  # GQA both ways
    assert all(s.k_eq_v for s in full)
    shared = [s for s in cfg.layers if s.reuses_kv]
    assert shared and shared[-1].index == cfg.num_hidden_layers - 1
    assert all(s.mlp_intermediate == 2 * cfg.intermediate_size for s in shared)
    assert cfg.enable_moe_block and cfg.num_experts >= 8 and cfg.top_k_experts == 2
    assert cfg.final_logit_softcapping is not None
    # the router's scales were trained, not left at their initial ones
    for layer in model.weights.layers:
        assert not np.allclose(layer.moe.router.scale, 1.0)
        assert not np.allclose(layer.moe.router.per_expert_scale, 1.0)


# --------------------------------------------------------------------------------------------
# (a) it has learned: measured by minigemma on held-out text


@pytest.fixture(scope="module")
def held_out_scores(model, held_out, training_log):
    return tiny_eval.evaluate(model, held_out, training_log["hyperparameters"]["seq_len"])


def test_held_out_cross_entropy_well_below_unigram(held_out_scores, held_out, training_log):
    ce, _ = held_out_scores
    targets = tiny_eval.predicted_targets(held_out, training_log["hyperparameters"]["seq_len"])
    unigram = tiny_eval.unigram_cross_entropy(targets, np.array(training_log["train_token_counts"]))
    assert len(targets) > 4000  # enough text for the average to mean something
    assert ce <= MAX_CE_FRACTION_OF_UNIGRAM * unigram, f"model {ce:.3f} nats/token vs unigram {unigram:.3f}"


def test_every_expert_gets_routing_slots(held_out_scores, model):
    _, load = held_out_scores
    assert load.shape == (model.config.text.num_hidden_layers, model.config.text.num_experts)
    np.testing.assert_allclose(load.sum(axis=1), 1.0)
    assert load.min() >= MIN_EXPERT_SHARE, f"least used expert gets {load.min():.1%} of its layer's slots"


# --------------------------------------------------------------------------------------------
# (b) minigemma runs the trained weights exactly as the reference does


def prompts(sp, held_out) -> dict[str, list[int]]:
    chat = "<|turn>user\nWhat does a list comprehension do?<turn|>\n<|turn>model\n"
    return {
        "held-out text, crossing the sliding window": held_out[1000:1060].tolist(),
        "start of a document": [sp.bos_id(), *sp.encode("The Python interpreter")],
        # `<|turn>` and `<turn|>` are user-defined pieces, matched in text; `<bos>` is a control
        # piece that SentencePiece never produces from text, so it is prepended as an id
        "chat turn with special tokens": [sp.bos_id(), *sp.encode(chat)],
    }


def test_logits_equal_reference(model, reference, sp, held_out):
    cases = {**prompts(sp, held_out), "one token": [sp.bos_id()], "a full context": held_out[:256].tolist()}
    for name, ids in cases.items():
        np.testing.assert_allclose(
            model.forward(np.array(ids)), reference_logits(reference, ids),
            rtol=LOGITS_TOLERANCE, atol=LOGITS_TOLERANCE, err_msg=name,
        )


def reference_logits(reference, ids) -> np.ndarray:
    with torch.no_grad():
        return reference(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy()


def test_batched_logits_equal_reference(model, reference, held_out):
    batch = np.stack([held_out[0:80], held_out[2000:2080]])  # (2, 80)
    with torch.no_grad():
        expected = reference(input_ids=torch.from_numpy(batch), use_cache=False).logits.numpy()
    np.testing.assert_allclose(model.forward(batch), expected, rtol=LOGITS_TOLERANCE, atol=LOGITS_TOLERANCE)


def reference_greedy(reference, ids, n) -> list[int]:
    ids, new = list(ids), []
    for _ in range(n):
        next_id = int(np.argmax(reference_logits(reference, ids)[-1]))
        new.append(next_id)
        ids.append(next_id)
    return new


def test_greedy_continuations_equal_reference(model, reference, sp, held_out):
    for name, ids in prompts(sp, held_out).items():
        ours = tiny_eval.greedy(model, ids, GREEDY_TOKENS)
        assert ours == reference_greedy(reference, ids, GREEDY_TOKENS), name


# --------------------------------------------------------------------------------------------
# tokenizer files in Hugging Face layout


def test_tokenizer_loads_in_transformers_and_agrees_with_sentencepiece(sp):
    hf = transformers.AutoTokenizer.from_pretrained(MODEL_DIR)
    with open(os.path.join(MODEL_DIR, train_tiny.HELD_OUT_SAMPLE), encoding="utf-8") as f:
        text = f.read()
    text += " <|turn>user\n<|image|> ünïcødé ✓ 12345"  # special tokens, byte fallback, split digits
    assert hf(text).input_ids == [sp.bos_id(), *sp.encode(text)]
    assert hf.decode(sp.encode(text)) == sp.decode(sp.encode(text))


def test_special_tokens_are_declared_with_their_ids(sp):
    with open(os.path.join(MODEL_DIR, "tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    declared = {entry["content"]: int(i) for i, entry in config["added_tokens_decoder"].items()}
    for name, token in {**tiny_corpus.NAMED_TOKENS, "bos_token": "<bos>", "eos_token": "<eos>",
                        "pad_token": "<pad>", "unk_token": "<unk>"}.items():
        assert config[name] == token
        assert declared[token] == sp.piece_to_id(token) and sp.id_to_piece(declared[token]) == token
    with open(os.path.join(MODEL_DIR, "config.json")) as f:
        model_config = json.load(f)
    for key, token in (("bos_token_id", "<bos>"), ("eos_token_id", "<eos>"), ("pad_token_id", "<pad>")):
        assert model_config[key] == declared[token]


def test_chat_template_renders_gemma4_turns():
    hf = transformers.AutoTokenizer.from_pretrained(MODEL_DIR)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A snake."},
        {"role": "user", "content": "And a list?"},
    ]
    rendered = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\n<|image|>What is this?<turn|>\n"
        "<|turn>model\nA snake.<turn|>\n<|turn>user\nAnd a list?<turn|>\n<|turn>model\n"
    )
    thinking = hf.apply_chat_template(messages[3:], tokenize=False, enable_thinking=True)
    assert thinking == "<bos><|turn>system\n<|think|><turn|>\n<|turn>user\nAnd a list?<turn|>\n"


# --------------------------------------------------------------------------------------------
# (c) the training script: deterministic for a seed, and resumes exactly

SMOKE_STEPS = 6  # 1 warm-up step, constant learning rate, decay over the last 2 (decay_fraction 0.3)
SMOKE_HP = {"seq_len": 16, "batch_size": 2, "steps": SMOKE_STEPS, "warmup_steps": 1, "checkpoint_every": 1,
            "log_every": 1}


def smoke_tokens() -> np.ndarray:
    return np.random.default_rng(0).integers(0, tiny_corpus.VOCAB_SIZE, 2000).astype(np.uint16)


def weights(model) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def run(work, stop_after=None, **overrides):
    hp = {**train_tiny.training_defaults(), **SMOKE_HP, **overrides}
    return train_tiny.train(train_tiny.SMOKE_CONFIG, smoke_tokens(), str(work), hp, stop_after=stop_after, quiet=True)


def test_training_command_runs_and_is_deterministic(tmp_path):
    work = tmp_path / "command"
    work.mkdir()
    np.save(work / "train_tokens.npy", smoke_tokens())
    args = ["--work", str(work), "--smoke"] + [f"--{k.replace('_', '-')}={v}" for k, v in SMOKE_HP.items()]
    assert train_tiny.main(args) == 0
    from_command = torch.load(work / train_tiny.CHECKPOINT, weights_only=False)

    again = weights(run(tmp_path / "again"))
    assert_same_weights({k: v.numpy() for k, v in from_command["model"].items()}, again)
    assert from_command["state"]["step"] == SMOKE_STEPS

    initial = weights(train_tiny.build_model(train_tiny.SMOKE_CONFIG, seed=0))
    other_seed = weights(run(tmp_path / "other", seed=1))
    for name in ("model.embed_tokens.weight", "model.layers.0.router.per_expert_scale"):
        assert not np.array_equal(initial[name], again[name]), f"{name} did not train"
        assert not np.array_equal(other_seed[name], again[name]), f"{name} ignores the seed"


def test_interrupted_training_resumes_exactly(tmp_path):
    straight = run(tmp_path / "straight")
    half = SMOKE_STEPS // 2
    run(tmp_path / "interrupted", stop_after=half)  # as if killed after the checkpoint at `half`
    saved = torch.load(tmp_path / "interrupted" / train_tiny.CHECKPOINT, weights_only=False)
    assert saved["state"]["step"] == half
    resumed = run(tmp_path / "interrupted")
    assert_same_weights(weights(straight), weights(resumed))
    log = torch.load(tmp_path / "interrupted" / train_tiny.CHECKPOINT, weights_only=False)["state"]["log"]
    straight_log = torch.load(tmp_path / "straight" / train_tiny.CHECKPOINT, weights_only=False)["state"]["log"]
    assert [row[:4] for row in log] == [row[:4] for row in straight_log]  # same losses, same tokens seen


def test_run_length_can_change_before_the_decay(tmp_path):
    """How the shipped run was steered: started for more steps, resumed with its final length
    before the decay began; the result is exactly a run of the final length from scratch."""
    straight = run(tmp_path / "straight")
    first = SMOKE_STEPS // 2  # still on the constant learning rate of either length
    longer = SMOKE_STEPS + 2
    assert train_tiny.learning_rate(first - 1, {**train_tiny.training_defaults(), **SMOKE_HP, "steps": longer}) == (
        train_tiny.learning_rate(first - 1, {**train_tiny.training_defaults(), **SMOKE_HP}))
    run(tmp_path / "steered", stop_after=first, steps=longer)
    steered = run(tmp_path / "steered")
    assert_same_weights(weights(straight), weights(steered))

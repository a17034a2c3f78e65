"""Small tokenizer directories shaped like a Gemma 4 checkpoint's, trained in the test run.

* `write_bpe_tokenizer(dir)`: a `tokenizer.json` (BPE with byte fallback, trained with the
  `tokenizers` package, with the pipeline of transformers' `GemmaTokenizer`: spaces become `▁`,
  no pre-splitting, decoder `▁` -> space + byte fallback) — what hub checkpoints ship;
* `write_sentencepiece_tokenizer(dir)`: a `tokenizer.model` (SentencePiece BPE, byte fallback,
  Gemma's normaliser settings) — what the embedded model ships;
* both with a `tokenizer_config.json` naming Gemma 4's special tokens by their attribute names and a
  chat template shaped like Gemma 4's (turns `<|turn>ROLE\\n...<turn|>\\n`, the assistant's role
  spelled `model`, a system turn carrying `<|think|>` when thinking is on, reasoning in
  `<|channel>thought\\n...<channel|>`, and the generation prompt closing an empty thought channel
  when thinking is off).

Nothing here is copied from a real checkpoint; the ids are whatever training assigns.
"""

from __future__ import annotations

import json
import os
import random

PAD, EOS, BOS, UNK, MASK = "<pad>", "<eos>", "<bos>", "<unk>", "<mask>"
GEMMA4_NAMED_TOKENS = {  # tokenizer_config.json attribute -> token, as Gemma 4 names them
    "sot_token": "<|turn>", "eot_token": "<turn|>",  # a turn
    "soc_token": "<|channel>", "eoc_token": "<channel|>",  # the thinking channel
    "think_token": "<|think|>",
    "boi_token": "<|image>", "image_token": "<|image|>", "eoi_token": "<image|>",
    "boa_token": "<|audio>", "audio_token": "<|audio|>", "eoa_token": "<audio|>",
    "stc_token": "<|tool_call>", "etc_token": "<tool_call|>",
    "str_token": "<|tool_response>", "etr_token": "<tool_response|>",
}
CLASSIC = {"pad_token": PAD, "eos_token": EOS, "bos_token": BOS, "unk_token": UNK, "mask_token": MASK}
SPECIAL_TOKENS = [PAD, EOS, BOS, UNK, MASK, *GEMMA4_NAMED_TOKENS.values()]

# The template exercises what transformers' Jinja set-up decides: `{% ... %}` blocks on lines of
# their own (trim_blocks / lstrip_blocks), `namespace`, `raise_exception`, `trim`, the special
# tokens as variables, `reasoning_content`, `enable_thinking` and `add_generation_prompt`.
CHAT_TEMPLATE = """{{ bos_token }}
{%- set ns = namespace(first=0, thinking=enable_thinking is defined and enable_thinking) -%}
{%- macro text(content) -%}
    {%- if content is string -%}{{ content | trim }}
    {%- else -%}
        {%- for item in content -%}
            {%- if item['type'] == 'text' -%}{{ item['text'] | trim }}
            {%- elif item['type'] == 'image' -%}{{ image_token }}
            {%- elif item['type'] == 'audio' -%}{{ audio_token }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{% if messages and messages[0]['role'] == 'system' or ns.thinking %}
{{ sot_token }}system
    {% if ns.thinking %}
{{ think_token }}
    {% endif %}
    {% if messages and messages[0]['role'] == 'system' %}
{{ text(messages[0]['content']) }}{% set ns.first = 1 %}
    {% endif %}
{{ eot_token }}
{% endif %}
{%- for message in messages[ns.first:] -%}
    {%- if message['role'] not in ['user', 'assistant'] -%}
        {{ raise_exception('Conversation roles must be user or assistant, found ' + message['role']) }}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}
    {{ sot_token + role + '\\n' }}
    {%- if role == 'model' and message['reasoning_content'] is defined and preserve_thinking is defined and preserve_thinking -%}
        {{ soc_token + 'thought\\n' + message['reasoning_content'] | trim + eoc_token }}
    {%- endif -%}
    {{ text(message['content']) + eot_token + '\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{ sot_token + 'model\\n' }}
    {%- if not ns.thinking -%}{{ soc_token + 'thought\\n' + eoc_token }}{%- endif -%}
{%- endif -%}
"""

_WORDS = (
    "the model reads one token at a time and a cache keeps what it has seen . "
    "Gemma sliding window global layer attention keys values thought answer user model "
    "naïve café 日本語 テキスト 😀 Ωmega über ß 12 345 6789 tabs\tand\nnew lines   indent"
).split(" ")


def corpus(n_lines: int = 1500, seed: int = 0) -> list[str]:
    """Prose-like lines plus rendered chats, so that turn markers and `thought\\n` get merged."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 14)))
        if i % 3 == 0:
            sentence = f"<|turn>user\n{sentence}<turn|>\n<|turn>model\n<|channel>thought\nhmm {sentence}<channel|>ok<turn|>\n"
        lines.append(sentence)
    return lines


def tokenizer_config(with_template: bool, **extra) -> dict:
    return {
        "tokenizer_class": "GemmaTokenizer",
        **CLASSIC,
        **GEMMA4_NAMED_TOKENS,
        "add_bos_token": True,
        "add_eos_token": False,
        "padding_side": "left",
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        **({"chat_template": CHAT_TEMPLATE} if with_template else {}),
        **extra,
    }


def _write_config(out: str, config: dict) -> None:
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)


def write_bpe_tokenizer(out: str, vocab_size: int = 600, template_file: bool = True) -> str:
    """tokenizer.json + tokenizer_config.json (+ chat_template.jinja, where transformers 5 puts it)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    os.makedirs(out, exist_ok=True)
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]  # byte fallback: every byte has a token

    def gemma_pipeline(tok):
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        return tok

    trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS + byte_tokens, show_progress=False)
    trained = gemma_pipeline(Tokenizer(BPE(unk_token=UNK)))
    trained.train_from_iterator(corpus(), trainer)
    model = json.loads(trained.to_str())["model"]
    tok = gemma_pipeline(Tokenizer(BPE(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]],
                                       unk_token=UNK, fuse_unk=True, byte_fallback=True)))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    bos = (BOS, tok.token_to_id(BOS))  # the file itself puts <bos> in front of a text
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[bos])
    tok.save(os.path.join(out, "tokenizer.json"))
    _write_config(out, tokenizer_config(with_template=not template_file))
    if template_file:
        with open(os.path.join(out, "chat_template.jinja"), "w", encoding="utf-8") as f:
            f.write(CHAT_TEMPLATE)
    return out


def write_sentencepiece_tokenizer(out: str, vocab_size: int = 600) -> str:
    """tokenizer.model (trained here, Gemma's settings) + tokenizer_config.json with the template."""
    import sentencepiece as spm

    os.makedirs(out, exist_ok=True)
    text = os.path.join(out, "corpus.txt")
    with open(text, "w", encoding="utf-8") as f:
        f.write("\n".join(line.replace("\n", " ") for line in corpus()))
    spm.SentencePieceTrainer.train(
        input=text, model_prefix=os.path.join(out, "sp"), vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=0.9995, split_digits=True, add_dummy_prefix=False,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, normalization_rule_name="identity",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece=PAD, eos_piece=EOS, bos_piece=BOS, unk_piece=UNK,
        user_defined_symbols=[MASK, *GEMMA4_NAMED_TOKENS.values()], shuffle_input_sentence=False,
        num_threads=1, minloglevel=2,
    )
    os.replace(os.path.join(out, "sp.model"), os.path.join(out, "tokenizer.model"))
    for leftover in ("sp.vocab", "corpus.txt"):
        os.remove(os.path.join(out, leftover))
    _write_config(out, tokenizer_config(with_template=True))
    return out

"""Write the embedded model's tokenizer in Hugging Face layout, as Gemma 4's checkpoints ship it.

    tokenizer.model          the SentencePiece model itself (what minigemma and sentencepiece read)
    tokenizer.json           the same tokenizer converted for `tokenizers` (what transformers reads)
    tokenizer_config.json    class, special tokens by name (Gemma 4's attribute names: `sot_token`,
                             `image_token`, ...), every special token's id in `added_tokens_decoder`,
                             and the chat template
    chat_template.jinja      the chat template again, where transformers 5 writes it
    special_tokens_map.json  the five classic special tokens

The ids are the SentencePiece model's: pad 0, eos 1, bos 2, unk 3, then Gemma 4's named tokens in
the order of `tiny_corpus.NAMED_TOKENS`. Nothing here hard-codes an id: each is read back from the
model, so these files cannot disagree with it.

The conversion to `tokenizer.json` goes through transformers' SentencePiece extractor, which needs
the `protobuf` package at export time (only then: loading the written files does not).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from weights_tools.tiny_corpus import BOS, EOS, NAMED_TOKENS, PAD, UNK

# Shaped like Gemma 4's: `<bos>`, then turns `<|turn>ROLE\n ... <turn|>\n`; the assistant's role is
# spelled `model`; a system turn comes first and carries `<|think|>` when thinking is enabled;
# images and audio in a message's content become their placeholder tokens, which the processor
# later expands to `<|image>` + soft tokens + `<image|>`.
CHAT_TEMPLATE = """\
{%- macro render_content(content) -%}
    {%- if content is string -%}
        {{- content | trim -}}
    {%- else -%}
        {%- for item in content -%}
            {%- if item['type'] == 'text' -%}{{- item['text'] | trim -}}
            {%- elif item['type'] == 'image' -%}{{- '<|image|>' -}}
            {%- elif item['type'] == 'audio' -%}{{- '<|audio|>' -}}
            {%- elif item['type'] == 'video' -%}{{- '<|video|>' -}}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- set thinking = enable_thinking is defined and enable_thinking -%}
{%- if messages and messages[0]['role'] == 'system' -%}
    {{- '<|turn>system\\n' -}}
    {%- if thinking -%}{{- '<|think|>' -}}{%- endif -%}
    {{- render_content(messages[0]['content']) -}}
    {{- '<turn|>\\n' -}}
    {%- set messages = messages[1:] -%}
{%- elif thinking -%}
    {{- '<|turn>system\\n<|think|><turn|>\\n' -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if message['role'] not in ('user', 'assistant', 'model') -%}
        {{- raise_exception('Roles are system (first), user and assistant (or model); found ' + message['role']) -}}
    {%- endif -%}
    {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
    {{- '<|turn>' + role + '\\n' -}}
    {{- render_content(message['content']) -}}
    {{- '<turn|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|turn>model\\n' -}}
{%- endif -%}
"""
MODEL_MAX_LENGTH = 4096
ADD_SPECIAL = {"add_bos_token": True, "add_eos_token": False}  # encoding text starts it with <bos>, as Gemma  # the model's max_position_embeddings


def write_hf_tokenizer(sentencepiece_model: str, out: str) -> None:
    import sentencepiece as spm
    from transformers import AutoTokenizer

    sp = spm.SentencePieceProcessor(model_file=sentencepiece_model)
    shutil.copy(sentencepiece_model, os.path.join(out, "tokenizer.model"))

    # tokenizer.json: let transformers convert the SentencePiece model, keep only that file
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(sentencepiece_model, os.path.join(tmp, "tokenizer.model"))
        with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "GemmaTokenizer", **ADD_SPECIAL}, f)  # bos goes into tokenizer.json
        converted = AutoTokenizer.from_pretrained(tmp)
        converted.save_pretrained(tmp)
        shutil.copy(os.path.join(tmp, "tokenizer.json"), os.path.join(out, "tokenizer.json"))

    classic = {"pad_token": PAD, "eos_token": EOS, "bos_token": BOS, "unk_token": UNK, "mask_token": NAMED_TOKENS["mask_token"]}
    special = [PAD, EOS, BOS, UNK, *NAMED_TOKENS.values()]
    ids = {token: sp.piece_to_id(token) for token in special}
    unknown = [t for t, i in ids.items() if sp.id_to_piece(i) != t]
    if unknown:
        raise ValueError(f"{sentencepiece_model}: special tokens missing from the model: {unknown}")
    config = {
        "tokenizer_class": "GemmaTokenizer",
        "backend": "tokenizers",
        **ADD_SPECIAL,
        **classic,
        **{name: token for name, token in NAMED_TOKENS.items() if name != "mask_token"},
        "added_tokens_decoder": {
            str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": True}
            for t, i in sorted(ids.items(), key=lambda kv: kv[1])
        },
        "padding_side": "left",
        "model_max_length": MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    with open(os.path.join(out, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(classic, f, indent=2)
    with open(os.path.join(out, "chat_template.jinja"), "w", encoding="utf-8") as f:
        f.write(CHAT_TEMPLATE)

"""A GGUF file's tokenizer, rebuilt as a SentencePiece model (`tokenizer.model`) plus the Hugging
Face settings beside it (`tokenizer_config.json`, `special_tokens_map.json`).

A GGUF carries no tokenizer file, only llama.cpp's record of one in its metadata:

    tokenizer.ggml.model          "llama": a SentencePiece vocabulary (Gemma's is BPE with byte fallback)
    tokenizer.ggml.tokens         every piece, in id order (262,144 for Gemma 3)
    tokenizer.ggml.scores         its SentencePiece score: the merge priority of a BPE piece
    tokenizer.ggml.token_type     1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte:
                                  SentencePiece's own `ModelProto.SentencePiece.Type` numbers
    tokenizer.ggml.{bos,eos,unknown,padding}_token_id, add_bos_token, add_eos_token, add_space_prefix

which is everything a SentencePiece `ModelProto` holds, so we write one back: the bytes
`minigemma.weights.sentencepiece_model` builds (with the repairs that make it encode exactly as the
reference, transformers' GGUF tokenizer, does), which is also what `minigemma.load("x.gguf")`
reads in memory. Control pieces (`<bos>`, `<start_of_turn>`, ...) go into `tokenizer_config.json`
as special tokens, as Hugging Face writes them, so a loader matches them whole in a prompt.
"""

from __future__ import annotations

import json
import os

from minigemma.errors import ConfigError
from minigemma.weights.sentencepiece_model import CONTROL, UNKNOWN, USER_DEFINED, gguf_vocabulary, model_proto

SUPPORTED_TOKENIZERS = ("llama",)  # llama.cpp's name for a SentencePiece vocabulary
SPECIAL_IDS = {  # tokenizer_config.json name -> GGUF metadata key
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def write_tokenizer(meta: dict, out: str) -> None:
    """Write tokenizer.model, tokenizer_config.json and special_tokens_map.json into `out`.
    `meta`: the GGUF metadata (key -> value, arrays as lists)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind not in SUPPORTED_TOKENIZERS:
        raise ConfigError(f"tokenizer.ggml.model: expected one of {SUPPORTED_TOKENIZERS} (SentencePiece), found {kind!r}")
    tokens, scores, types = (meta.get(f"tokenizer.ggml.{k}") for k in ("tokens", "scores", "token_type"))
    if not tokens or len(scores or ()) != len(tokens) or len(types or ()) != len(tokens):
        raise ConfigError(
            f"tokenizer.ggml.tokens / scores / token_type: expected three lists of one length, found "
            f"{len(tokens or ())} / {len(scores or ())} / {len(types or ())}"
        )
    specials = {name: tokens[meta[key]] for name, key in SPECIAL_IDS.items() if meta.get(key) is not None}
    pieces, scores, types, special_ids = gguf_vocabulary(meta)  # respelled space pieces: normal, <unk>: unknown
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(model_proto(pieces, scores, types, special_ids, bool(meta.get("tokenizer.ggml.add_space_prefix", False))))

    added = {
        str(i): {"content": t, "special": t_type in (CONTROL, UNKNOWN), "lstrip": False, "normalized": False,
                 "rstrip": False, "single_word": False}
        for i, (t, t_type) in enumerate(zip(tokens, types)) if t_type in (CONTROL, UNKNOWN, USER_DEFINED)
    }
    settings = {
        "tokenizer_class": "GemmaTokenizer",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", True)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        **specials,
        "added_tokens_decoder": added,
        "clean_up_tokenization_spaces": False,
    }
    if meta.get("tokenizer.chat_template"):
        settings["chat_template"] = meta["tokenizer.chat_template"]
    write_json(os.path.join(out, "tokenizer_config.json"), settings)
    write_json(os.path.join(out, "special_tokens_map.json"), specials)


def write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)

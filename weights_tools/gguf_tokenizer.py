"""A GGUF file's tokenizer, rebuilt as a SentencePiece model (`tokenizer.model`) plus the Hugging
Face settings beside it (`tokenizer_config.json`, `special_tokens_map.json`).

A GGUF carries no tokenizer file, only llama.cpp's record of one in its metadata:

    tokenizer.ggml.model          "llama": a SentencePiece vocabulary (Gemma's is BPE with byte fallback)
    tokenizer.ggml.tokens         every piece, in id order (262,144 for Gemma 3)
    tokenizer.ggml.scores         its SentencePiece score: the merge priority of a BPE piece
    tokenizer.ggml.token_type     1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte:
                                  SentencePiece's own `ModelProto.SentencePiece.Type` numbers
    tokenizer.ggml.{bos,eos,unknown,padding}_token_id, add_bos_token, add_eos_token, add_space_prefix

which is everything a SentencePiece `ModelProto` holds, so we write one back, with three repairs
that make it encode exactly as the reference (transformers' GGUF tokenizer) does:

* llama.cpp stores a piece made only of spaces ("   ") with real spaces, where SentencePiece,
  which turns every space into "▁" before it looks anything up, needs "▁▁▁"; and such a piece is
  user-defined in the file (matched whole, longest first), but the reference merges runs of "▁"
  like any other BPE piece, so it becomes a normal piece here (a run of 33 spaces: 16 + 17, not 31 + 2);
* a BPE piece's merge priority is its position in the file (Gemma's merge order); the file's
  scores of normal pieces follow it, shifted, and a respelled space piece gets the same rule, so
  every normal piece's score is written as minus its id;
* SentencePiece wants exactly one UNKNOWN piece; llama.cpp records Gemma's `<unk>` as control.

The normaliser is Gemma's: no dummy prefix space (unless the file says `add_space_prefix`), spaces
kept as they come (no collapsing), escaped as "▁". Control pieces (`<bos>`, `<start_of_turn>`, ...)
go into `tokenizer_config.json` as special tokens, as Hugging Face writes them, so a loader matches
them whole in a prompt.
"""

from __future__ import annotations

import json
import os

from minigemma.errors import ConfigError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE, WORD_BOUNDARY = " ", "\u2581"  # SentencePiece writes a space as "▁"
SUPPORTED_TOKENIZERS = ("llama",)  # llama.cpp's name for a SentencePiece vocabulary
SPECIAL_IDS = {  # tokenizer_config.json name -> GGUF metadata key
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
}


def sentencepiece_spelling(piece: str) -> str:
    """A piece of spaces only, as SentencePiece looks it up: "   " -> "▁▁▁"."""
    return WORD_BOUNDARY * len(piece) if piece and set(piece) == {SPACE} else piece


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
    pieces = [sentencepiece_spelling(t) for t in tokens]
    types = [NORMAL if p != t else int(k) for p, t, k in zip(pieces, tokens, types)]  # respelled: merged
    scores = [-float(i) if k == NORMAL else float(s) for i, (s, k) in enumerate(zip(scores, types))]
    unk = meta.get(SPECIAL_IDS["unk_token"])
    if unk is not None:
        types[unk] = UNKNOWN
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(sentencepiece_model(pieces, scores, types, meta).SerializeToString())

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


def sentencepiece_model(pieces, scores, types, meta: dict):
    """The `ModelProto` of a BPE SentencePiece model with byte fallback."""
    from sentencepiece import sentencepiece_model_pb2 as sp  # needs `protobuf`: a weights_tools dependency

    model = sp.ModelProto()
    for text, score, kind in zip(pieces, scores, types):
        piece = model.pieces.add()
        piece.piece, piece.score, piece.type = text, score, kind
    trainer = model.trainer_spec
    trainer.model_type = sp.TrainerSpec.BPE
    trainer.vocab_size = len(pieces)
    trainer.byte_fallback = BYTE in types
    for name, key in SPECIAL_IDS.items():  # unk_id, bos_id, eos_id, pad_id (-1: none)
        value = meta.get(key)
        setattr(trainer, name.replace("_token", "_id"), -1 if value is None else int(value))
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", False))
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return model


def write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, ensure_ascii=False)

"""The vocabulary of a GGUF file written by `gguf_write.py`: pieces, scores and token types exactly as
llama.cpp's converter derives them (`conversion/gemma.py`, `conversion/base.py`), from Gemma 4's
`tokenizer.json` (what its `LlamaHfVocab` reads, without needing transformers) or Gemma 3's
SentencePiece `tokenizer.model`. Merges, special ids and the chat template are the `gguf` package's
`SpecialVocab`, added by `gguf_write.add_tokenizer`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import CheckpointError

# Gemma 4 tokens the converter marks USER_DEFINED so that llama.cpp renders them (its chat parser reads them)
VISIBLE_TOKENS = {"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>'}
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def named_special_tokens(src: Path) -> set[str]:
    """Tokens transformers counts as special: every `*_token` of tokenizer_config.json (Gemma 4 names
    its turn, channel, tool and media markers there) and special_tokens_map.json, plus the extra lists."""
    found = set()
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        path = src / file
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        for key, value in config.items():
            value = value.get("content") if isinstance(value, dict) else value
            if key.endswith("_token") and isinstance(value, str):
                found.add(value)
            elif key in ("extra_special_tokens", "additional_special_tokens") and isinstance(value, list | dict):
                found.update(v if isinstance(v, str) else v.get("content") for v in (value.values() if isinstance(value, dict) else value))
    return found


def gemma4_vocabulary(src: Path, hp: dict):
    """Pieces, scores and types from tokenizer.json, as the converter's gemma4 vocabulary has them:
    every score -1000, byte pieces BYTE, special tokens CONTROL, the visible ones USER_DEFINED."""
    import gguf

    path = src / "tokenizer.json"
    if not path.exists():
        raise CheckpointError(f"{path}: missing (a Gemma 4 GGUF takes its vocabulary from tokenizer.json)")
    try:
        with open(path, encoding="utf-8") as f:
            tokenizer = json.load(f)
        vocab = tokenizer["model"]["vocab"]  # piece -> id
        pieces = {i: p for p, i in vocab.items()}
        added = sorted(tokenizer.get("added_tokens", []), key=lambda a: a["id"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a tokenizers BPE vocabulary ({type(e).__name__}: {e})") from None
    if sorted(pieces) != list(range(len(vocab))):
        raise CheckpointError(f"{path}: the vocabulary's ids are not 0..{len(vocab) - 1}")
    n_base = len(vocab)
    specials = named_special_tokens(src)
    tokens, types = [], []
    T = gguf.TokenType
    for i in range(n_base):
        piece = pieces[i]
        kind = T.BYTE if BYTE_PIECE.fullmatch(piece) else T.CONTROL if piece in specials else T.NORMAL
        tokens.append(piece)
        types.append(kind)
    for a in added:
        if a["id"] >= n_base:  # tokens added past the base vocabulary, in id order
            tokens.append(a["content"])
            types.append(T.CONTROL if a["content"] in specials else T.USER_DEFINED)
    types = [T.USER_DEFINED if p in VISIBLE_TOKENS else t for p, t in zip(tokens, types)]
    return tokens, [-1000.0] * len(tokens), [int(t) for t in types]


def gemma3_vocabulary(src: Path, hp: dict):
    """Pieces, scores and types from the SentencePiece model, padded to the config's vocabulary
    (`[PADn]` pieces), with tokenizer_config.json's added tokens written over their ids."""
    import gguf
    from sentencepiece import SentencePieceProcessor

    path = src / "tokenizer.model"
    if not path.exists():
        raise CheckpointError(f"{path}: missing (a Gemma 3 GGUF takes its vocabulary from the SentencePiece model)")
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(path))
    T = gguf.TokenType
    n = hp.get("vocab_size") or sp.vocab_size()
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = [-10000.0] * n
    types = [int(T.UNUSED)] * n
    for i in range(min(n, sp.vocab_size())):
        kind = (T.UNKNOWN if sp.IsUnknown(i) else T.CONTROL if sp.IsControl(i) else T.UNUSED if sp.IsUnused(i)
                else T.BYTE if sp.IsByte(i) else T.NORMAL)
        tokens[i], scores[i], types[i] = sp.IdToPiece(i), sp.GetScore(i), int(kind)
    added_path = src / "added_tokens.json"
    if added_path.exists():
        with open(added_path, encoding="utf-8") as f:
            for piece, i in json.load(f).items():
                if i < n:
                    tokens[i], scores[i], types[i] = piece, -1000.0, int(T.USER_DEFINED)
    config_path = src / "tokenizer_config.json"
    if config_path.exists():
        with open(config_path, encoding="utf-8") as f:
            decoder = json.load(f).get("added_tokens_decoder", {})
        for key, data in decoder.items():
            i, piece = int(key), data["content"]
            if i >= n:
                continue
            if data.get("special") or looks_special(piece):
                types[i] = int(T.CONTROL)
            else:
                piece = piece.replace("\u2581", " ")  # user-defined spaces, pre-normalised
                types[i] = int(T.USER_DEFINED)
            tokens[i], scores[i] = piece, -1000.0
    return tokens, scores, types


def looks_special(piece: str) -> bool:
    """Added tokens Gemma's tokenizer_config does not flag as special but llama.cpp treats as control."""
    return (piece in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or piece.startswith("<|") and piece.endswith("|>")
            or piece.startswith("<unused") and piece.endswith(">"))

"""A SentencePiece model (`tokenizer.model`) written from a GGUF's vocabulary, as bytes, without
the protobuf package (mirrors what transformers' GGUF tokenizer encodes; the format is
SentencePiece's `sentencepiece_model.proto`).

A Gemma 3 GGUF (`tokenizer.ggml.model` "llama") stores a SentencePiece BPE vocabulary with byte
fallback: pieces, scores and types, the same numbers as SentencePiece's `ModelProto`. Handing that
model straight to the `sentencepiece` package costs 0.15 s and ~40 MB for Gemma 3's 262,144
pieces; rebuilding it as a Hugging Face BPE, which needs the merges spelled out (half a million
of them, derived from the vocabulary), cost 6 s and ~130 MB (260 MB at its peak) — more than the
270M model's own weights in memory.

Three repairs make it encode exactly as the reference (transformers' GGUF tokenizer) does:

* llama.cpp stores a piece made only of spaces ("   ") with real spaces, where SentencePiece,
  which turns every space into "▁" before it looks anything up, needs "▁▁▁"; and such a piece is
  user-defined in the file (matched whole, longest first), but the reference merges runs of "▁"
  like any other BPE piece, so it becomes a normal piece here (33 spaces: 16 + 17, not 31 + 2);
* a BPE piece's merge priority is its position in the file (Gemma's merge order); the file's
  scores of normal pieces follow it, shifted, and a respelled space piece gets the same rule, so
  every normal piece's score is written as minus its id;
* SentencePiece wants exactly one UNKNOWN piece; llama.cpp records Gemma's `<unk>` as control.

The normaliser is Gemma's: no dummy prefix space (unless the file says `add_space_prefix`), spaces
kept as they come (no collapsing), escaped as "▁".

The protobuf wire format, as much of it as a `ModelProto` needs: every field is a key
(field number << 3 | wire type) followed by its value — a varint (wire type 0: ints, bools,
enums; negative int32s as ten-byte two's complement), four little-endian bytes (5: float), or
a varint length and that many bytes (2: strings and nested messages).
"""

from __future__ import annotations

import struct

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # SentencePiece.Type (and GGUF's)
SPACE, WORD_BOUNDARY = " ", "\u2581"
BPE = 2  # TrainerSpec.ModelType
VARINT, FIXED32, LENGTH = 0, 5, 2  # wire types
SPECIAL_IDS = {  # TrainerSpec field -> GGUF metadata key
    "unk_id": "tokenizer.ggml.unknown_token_id",
    "bos_id": "tokenizer.ggml.bos_token_id",
    "eos_id": "tokenizer.ggml.eos_token_id",
    "pad_id": "tokenizer.ggml.padding_token_id",
}
# field numbers in sentencepiece_model.proto
PIECES, TRAINER_SPEC, NORMALIZER_SPEC = 1, 2, 3  # ModelProto
PIECE, SCORE, TYPE = 1, 2, 3  # ModelProto.SentencePiece
MODEL_TYPE, VOCAB_SIZE, BYTE_FALLBACK = 3, 4, 35  # TrainerSpec
TRAINER_IDS = {"unk_id": 40, "bos_id": 41, "eos_id": 42, "pad_id": 43}
NAME, ADD_DUMMY_PREFIX, REMOVE_EXTRA_WHITESPACES, ESCAPE_WHITESPACES = 1, 3, 4, 5  # NormalizerSpec


def sentencepiece_spelling(piece: str) -> str:
    """A piece of spaces only, as SentencePiece looks it up: "   " -> "▁▁▁"."""
    return WORD_BOUNDARY * len(piece) if piece and set(piece) == {SPACE} else piece


def repaired_vocabulary(tokens: list[str], scores: list[float], types: list[int], unk: int | None) -> tuple[list, list, list]:
    """(pieces, scores, types) with the three repairs of the module docstring."""
    pieces = [sentencepiece_spelling(t) for t in tokens]
    types = [NORMAL if p != t else int(k) for p, t, k in zip(pieces, tokens, types)]  # respelled: merged
    scores = [-float(i) if k == NORMAL else float(s) for i, (s, k) in enumerate(zip(scores, types))]
    if unk is not None:
        types[unk] = UNKNOWN
    return pieces, scores, types


ONE_BYTE = [bytes((v,)) for v in range(0x80)]  # the varints of 0..127: most lengths and enums


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return ONE_BYTE[value]
    value &= (1 << 64) - 1  # a negative int32 is sent as its 64-bit two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, VARINT) + _varint(int(value))


def _bytes(field: int, value: bytes) -> bytes:
    return _key(field, LENGTH) + _varint(len(value)) + value


PIECE_KEY, SCORE_KEY, TYPE_KEY = _key(PIECE, LENGTH), _key(SCORE, FIXED32), _key(TYPE, VARINT)


def _piece(text: str, score: float, kind: int) -> bytes:
    """One `SentencePiece` message (262,144 of them for Gemma 3: written without a call per field)."""
    utf8 = text.encode("utf-8")
    return PIECE_KEY + _varint(len(utf8)) + utf8 + SCORE_KEY + struct.pack("<f", score) + TYPE_KEY + _varint(kind)


def model_proto(pieces: list[str], scores: list[float], types: list[int], special_ids: dict[str, int | None],
                add_dummy_prefix: bool = False) -> bytes:
    """The serialised `ModelProto` of a BPE model with byte fallback. `special_ids`: unk_id,
    bos_id, eos_id, pad_id (None: the model has none, written -1)."""
    trainer = _int(MODEL_TYPE, BPE) + _int(VOCAB_SIZE, len(pieces)) + _int(BYTE_FALLBACK, BYTE in types)
    trainer += b"".join(_int(TRAINER_IDS[name], -1 if special_ids.get(name) is None else special_ids[name]) for name in TRAINER_IDS)
    normalizer = (_bytes(NAME, b"identity") + _int(ADD_DUMMY_PREFIX, add_dummy_prefix)
                  + _int(REMOVE_EXTRA_WHITESPACES, False) + _int(ESCAPE_WHITESPACES, True))
    body = b"".join(_bytes(PIECES, _piece(p, s, k)) for p, s, k in zip(pieces, scores, types))
    return body + _bytes(TRAINER_SPEC, trainer) + _bytes(NORMALIZER_SPEC, normalizer)


def gguf_vocabulary(meta: dict) -> tuple[list, list, list, dict]:
    """(pieces, scores, types, special ids) of a Gemma 3 GGUF's metadata, repaired (tokens and
    token_type checked by the caller; scores only matter for non-normal pieces, 0 when missing)."""
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    types = types.tolist() if hasattr(types, "tolist") else list(types)
    scores = meta.get("tokenizer.ggml.scores")
    scores = [0.0] * len(tokens) if scores is None or len(scores) != len(tokens) else scores.tolist() if hasattr(scores, "tolist") else list(scores)
    special_ids = {name: meta.get(key) for name, key in SPECIAL_IDS.items()}
    return (*repaired_vocabulary(tokens, scores, types, special_ids["unk_id"]), special_ids)


def gguf_sentencepiece(meta: dict) -> bytes:
    """The `tokenizer.model` bytes a Gemma 3 GGUF's metadata describes."""
    pieces, scores, types, special_ids = gguf_vocabulary(meta)
    return model_proto(pieces, scores, types, special_ids, bool(meta.get("tokenizer.ggml.add_space_prefix", False)))

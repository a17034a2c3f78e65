"""A GGUF's tokenizer, rebuilt in memory from its metadata (mirrors transformers'
`integrations/gguf/gguf_tokenizer_mapping.py`, the reference's own GGUF tokenizer).

A GGUF carries no tokenizer file, only llama.cpp's record of one:

    tokenizer.ggml.model        "llama" (Gemma 3: a SentencePiece vocabulary, no merges) or
                                "gemma4" (Gemma 4: the BPE of its tokenizer.json, merges included)
    tokenizer.ggml.tokens       every piece, in id order
    tokenizer.ggml.scores       SentencePiece scores (Gemma's merge order is the file order)
    tokenizer.ggml.token_type   1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
    tokenizer.ggml.merges       "a b" pairs, best first (Gemma 4 only)
    tokenizer.ggml.{bos,eos,unknown,padding,eot}_token_id, add_bos_token, tokenizer.chat_template

Both are Gemma's byte-fallback BPE: spaces become "▁", unknown characters fall back to their
UTF-8 bytes (`<0xE2>`), decoding turns "▁" back into spaces.

* "llama" is a SentencePiece model in all but the file: its pieces, scores and types are written
  into a `ModelProto` in memory (`sentencepiece_model.py`, with the repairs that make it encode as
  the reference does) and read by the `sentencepiece` package, as a checkpoint's `tokenizer.model`
  is. (The reference rebuilds it as a Hugging Face BPE, deriving half a million merges from the
  vocabulary: 6 s and ~130 MB for Gemma 3, against 0.2 s and ~40 MB.)
* "gemma4" is built with the `tokenizers` package exactly as `GemmaTokenizer` builds it: text is
  split after each space, control pieces (`<bos>`, `<|turn>`) are matched whole as special tokens,
  user-defined ones whole as ordinary ones.

No protobuf and no file is written: `tokenizer.model` does not exist for a GGUF
(`weights_tools/gguf_tokenizer.py` writes one from the same bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .sentencepiece_model import gguf_sentencepiece

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE, WORD_BOUNDARY = " ", "\u2581"
UNK_PIECE = "<unk>"  # `GemmaTokenizer`'s unknown token, whatever the file says
SPECIAL_IDS = {  # named token -> GGUF metadata key
    "bos_token": "tokenizer.ggml.bos_token_id",
    "eos_token": "tokenizer.ggml.eos_token_id",
    "unk_token": "tokenizer.ggml.unknown_token_id",
    "pad_token": "tokenizer.ggml.padding_token_id",
    "eot_token": "tokenizer.ggml.eot_token_id",
}
SUPPORTED = ("llama", "gemma4")
END_OF_TURN = ("<turn|>", "<end_of_turn>")  # Gemma 4's, Gemma 3's
MEDIA_MARKS = {"image_token": "<|image|>", "boi_token": "<|image>", "eoi_token": "<image|>", "audio_token": "<|audio|>",
               "boa_token": "<|audio>", "eoa_token": "<audio|>", "video_token": "<|video|>"}  # Gemma 4's, by name


@dataclass(frozen=True)
class GGUFTokenizer:
    """What `generate/tokenizer.py` needs: the `tokenizers.Tokenizer` or the SentencePiece model,
    the named and special tokens, whether <bos> goes in front of a text, and the chat template."""

    backend: object  # tokenizers.Tokenizer, or None for a SentencePiece model
    sentencepiece: bytes | None  # a serialised ModelProto ("llama"), or None
    named: dict[str, str]  # "bos_token" -> "<bos>"
    specials: dict[str, int]  # every control piece -> its id
    add_bos: bool
    chat_template: str | None


def gguf_tokenizer(meta: dict, where: str) -> GGUFTokenizer:
    """Build the tokenizer a GGUF's metadata describes."""
    kind = meta.get("tokenizer.ggml.model")
    if kind not in SUPPORTED:
        raise ConfigError(f"{where}: metadata tokenizer.ggml.model is {kind!r}; minigemma reads {SUPPORTED} (Gemma's BPE)")
    tokens, types = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.token_type")
    types = types.tolist() if hasattr(types, "tolist") else types
    if not isinstance(tokens, list) or not isinstance(types, list) or len(tokens) != len(types) or not tokens:
        raise ConfigError(
            f"{where}: metadata tokenizer.ggml.tokens / token_type: expected two lists of one length, found "
            f"{len(tokens) if isinstance(tokens, list) else tokens!r} / {len(types) if isinstance(types, list) else types!r}"
        )
    vocab = {p: i for i, p in enumerate(tokens)}  # a repeated piece: its last id (as the reference)
    named = {}
    for name, key in SPECIAL_IDS.items():
        i = meta.get(key)
        if i is not None:
            if not isinstance(i, int) or not 0 <= i < len(tokens):
                raise ConfigError(f"{where}: metadata {key}: expected a token id below {len(tokens)}, found {i!r}")
            named[name] = tokens[i]
    eot = next((t for t in END_OF_TURN if t in vocab), None)  # llama.cpp finds it by name (`llama-vocab.cpp`)
    if "eot_token" not in named and eot is not None:
        named["eot_token"] = eot
    control = [t for t, k in zip(tokens, types) if k == CONTROL]
    specials = {t: vocab[t] for t in dict.fromkeys(control + list(named.values()))}
    # the media marks a prompt with images / audio needs (`vision/prompt.py`, `audio/prompt.py`): a GGUF
    # keeps their pieces, not tokenizer_config.json's names for them; llama.cpp's mtmd knows them by piece too
    named |= {name: piece for name, piece in MEDIA_MARKS.items() if piece in vocab and name not in named}
    # llama.cpp adds <bos> unless told not to; transformers follows it, except for Gemma 4, whose
    # chat template writes <bos> itself (transformers sets add_bos_token False for "gemma4")
    add_bos = kind == "llama" and bool(meta.get("tokenizer.ggml.add_bos_token", True)) and "bos_token" in named
    template = meta.get("tokenizer.chat_template")
    template = template if isinstance(template, str) else None
    if kind == "llama":
        return GGUFTokenizer(None, gguf_sentencepiece(meta), named, specials, add_bos, template)
    backend = bpe_tokenizer(tokens, types, meta, vocab, list(specials), where)
    return GGUFTokenizer(backend, None, named, specials, add_bos, template)


def bpe_tokenizer(tokens: list[str], types: list[int], meta: dict, vocab: dict, specials: list[str], where: str):
    """Gemma 4's BPE, with the file's merges, as a `tokenizers.Tokenizer` (`GemmaTokenizer`'s build)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    raw = meta.get("tokenizer.ggml.merges")
    if not isinstance(raw, list) or not all(isinstance(m, str) and m.count(" ") == 1 for m in raw):
        raise ConfigError(f"{where}: metadata tokenizer.ggml.merges: expected a list of 'left right' pairs")
    merges = [tuple(m.split(" ")) for m in raw]
    tok = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=True, unk_token=UNK_PIECE, dropout=None, byte_fallback=True))
    tok.normalizer = normalizers.Replace(SPACE, WORD_BOUNDARY)
    tok.pre_tokenizer = pre_tokenizers.Split(pattern=SPACE, behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace(WORD_BOUNDARY, SPACE), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == USER_DEFINED])
    return tok

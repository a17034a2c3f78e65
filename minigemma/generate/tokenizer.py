"""Text <-> token ids, as the checkpoint's own tokenizer files say (mirrors `GemmaTokenizer` and
`AutoTokenizer.from_pretrained` on a Gemma 4 checkpoint directory).

A Gemma 4 directory ships its tokenizer in one of two forms, plus its settings:

* `tokenizer.model`: a SentencePiece BPE model with byte fallback (characters outside the
  vocabulary become their UTF-8 bytes, `<0xE2>` ...), read with the `sentencepiece` package;
* `tokenizer.json`: the same kind of BPE serialised for Hugging Face `tokenizers` (the hub's
  checkpoints ship this one), read with the `tokenizers` package;
* `tokenizer_config.json`: the special tokens by name (`bos_token: "<bos>"`, and Gemma 4's own:
  `sot_token: "<|turn>"`, `eot_token: "<turn|>"`, `soc_token: "<|channel>"`, `image_token`, ...),
  `add_bos_token`, and the chat template (or `chat_template.jinja` beside it).

Special tokens are matched as whole units before the text is split into pieces, so the literal
string `<|turn>` in a prompt becomes its one token, as in the reference. No id is hard-coded here:
every one is looked up in the checkpoint's files.
"""

from __future__ import annotations

import os
import re

from .chat_template import render_chat
from ..weights.config_reader import read_json_object
from ..errors import ConfigError, InputError

SENTENCEPIECE_FILE = "tokenizer.model"
TOKENIZERS_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
REPLACEMENT_CHAR = "\ufffd"  # what decoding yields for an incomplete UTF-8 byte sequence
WORD_BOUNDARY = "\u2581"  # "▁": how SentencePiece writes a space inside a piece


class SentencePieceBackend:
    """`tokenizer.model` through the `sentencepiece` package. Special tokens are split off first
    (SentencePiece would read `<bos>` in a text as five characters)."""

    def __init__(self, file: str, specials: dict[str, int], bos: int | None = None, eos: int | None = None,
                 model_proto: bytes | None = None):
        """`file`: a tokenizer.model, or where `model_proto` (the same bytes, built in memory) came from."""
        import sentencepiece as spm

        try:
            self.sp = spm.SentencePieceProcessor(**({"model_proto": model_proto} if model_proto is not None else {"model_file": file}))
        except (OSError, RuntimeError) as e:
            raise ConfigError(f"{file}: cannot read the SentencePiece model ({e})") from None
        self.specials = specials
        self.bos, self.eos = bos, eos  # added around the text by encode(add_special_tokens=True)
        self.vocab_size = self.sp.get_piece_size()
        longest_first = sorted(specials, key=len, reverse=True)
        self.split = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")") if specials else None

    def piece_id(self, token: str) -> int | None:
        i = self.sp.piece_to_id(token)
        return i if self.sp.id_to_piece(i) == token else None

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        parts = self.split.split(text) if self.split else [text]  # odd parts are special tokens
        ids = []
        for i, part in enumerate(parts):
            if i % 2:
                ids.append(self.specials[part])
            elif part:
                ids.extend(self.sp.encode(part))
        if add_special_tokens:
            ids = ([self.bos] if self.bos is not None else []) + ids + ([self.eos] if self.eos is not None else [])
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        """As transformers' Gemma decoder does it: special ids become their text (SentencePiece
        would print control tokens such as <bos> as nothing), `▁` becomes a space, and each run
        of byte tokens is read as UTF-8, an invalid run giving one U+FFFD per byte."""
        by_id = {i: t for t, i in self.specials.items()}
        if skip_special_tokens:  # dropped first: byte tokens on either side join into one run
            ids = [i for i in ids if i not in by_id]
        out, run = [], bytearray()
        for i in ids:
            if self.sp.is_byte(i):
                run.append(int(self.sp.id_to_piece(i)[3:5], 16))  # "<0xE2>" -> 0xE2
                continue
            out.append(_utf8_or_replacement(run))
            run.clear()
            if i in by_id:
                out.append(by_id[i])
            else:
                out.append(self.sp.id_to_piece(i).replace(WORD_BOUNDARY, " "))
        out.append(_utf8_or_replacement(run))
        return "".join(out)


def _utf8_or_replacement(run: bytes) -> str:
    try:
        return run.decode("utf-8")
    except UnicodeDecodeError:
        return REPLACEMENT_CHAR * len(run)


class TokenizersBackend:
    """`tokenizer.json` through the `tokenizers` package, which matches special tokens itself and
    adds <bos> as the file's post-processor says (transformers, too, follows the file there)."""

    def __init__(self, file: str, specials: dict[str, int], bos=None, eos=None):
        from tokenizers import AddedToken, Tokenizer

        try:
            self.tok = Tokenizer.from_file(file)
        except Exception as e:  # the Rust side raises plain Exceptions for malformed files
            raise ConfigError(f"{file}: cannot read the tokenizer ({e})") from None
        # as transformers does: special tokens named in tokenizer_config.json are matched whole
        self.tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
        self.vocab_size = self.tok.get_vocab_size()

    @classmethod
    def wrap(cls, tok) -> "TokenizersBackend":
        """A `tokenizers.Tokenizer` built in memory (a GGUF's: `weights/gguf_tokenizer.py`)."""
        backend = cls.__new__(cls)
        backend.tok, backend.vocab_size = tok, tok.get_vocab_size()
        return backend

    def piece_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self.tok.decode(ids, skip_special_tokens=skip_special_tokens)


class Tokenizer:
    """encode / decode / special tokens / chat template of one checkpoint."""

    def __init__(self, path: str, backend, named: dict[str, str], specials: dict[str, int], chat_template):
        self.path = path
        self.backend = backend
        self.named = named  # "bos_token" -> "<bos>", "eot_token" -> "<turn|>", ...
        self.specials = specials  # "<bos>" -> 2, every special token of the vocabulary
        self.chat_template = chat_template

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size

    def token_id(self, name: str) -> int | None:
        """Id of a named special token (`"bos_token"`, `"eot_token"`, ...), None if it has none."""
        token = self.named.get(name)
        return self.specials.get(token) if token is not None else None

    @property
    def bos_id(self) -> int | None:
        return self.token_id("bos_token")

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Text -> ids. `add_special_tokens`: <bos> in front (and <eos> after) as the tokenizer's
        settings say, like `tokenizer(text)`; chat templates write <bos> themselves."""
        if not isinstance(text, str):
            raise InputError(f"prompt: expected a str, found {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        """The conversation as the checkpoint's chat template writes it (`apply_chat_template`)."""
        if self.chat_template is None:
            where = "tokenizer.chat_template in its metadata" if os.path.isfile(self.path) else (
                f"`chat_template` in {CONFIG_FILE} or one of {', '.join(CHAT_TEMPLATE_FILES)}")
            raise InputError(f"{self.path}: no chat template (expected {where})")
        return render_chat(self.chat_template, messages, self.named, add_generation_prompt, **kwargs)

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True, **kwargs) -> list[int]:
        return self.encode(self.render_chat(messages, add_generation_prompt, **kwargs))


class TextStream:
    """Decode a growing list of ids into text pieces as they come.

    One token may hold part of a character (byte fallback: an emoji is four `<0x..>` tokens), so
    a piece is only released once it does not end in an incomplete character; pieces are the
    difference between decoding a short window with and without the newest tokens, so the cost
    per token stays constant and the concatenation equals decoding all ids at once."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.start = 0  # window start: the tokens of the last released piece
        self.released = 0  # ids[:released] are out as text

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        done = self.tokenizer.decode(self.ids[self.start : self.released])
        text = self.tokenizer.decode(self.ids[self.start :])
        if text.endswith(REPLACEMENT_CHAR) or not text.startswith(done):
            return ""  # wait: the last character is not complete yet
        self.start, self.released = self.released, len(self.ids)
        return text[len(done) :]

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character decodes as U+FFFD)."""
        done = self.tokenizer.decode(self.ids[self.start : self.released])
        text = self.tokenizer.decode(self.ids[self.start :])
        self.start = self.released = len(self.ids)
        return text[len(done) :]


# --------------------------------------------------------------------------------------------- loading


def has_tokenizer(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, f)) for f in (SENTENCEPIECE_FILE, TOKENIZERS_FILE))


def load_tokenizer(path: str) -> Tokenizer:
    """The tokenizer of a checkpoint directory: `tokenizer.model` (SentencePiece) when present,
    else `tokenizer.json`, with `tokenizer_config.json` for special tokens and the chat template."""
    settings = read_json_object(os.path.join(path, CONFIG_FILE)) if os.path.exists(os.path.join(path, CONFIG_FILE)) else {}
    named = named_tokens(settings)
    candidates = set(named.values()) | set(extra_tokens(settings)) | set(added_tokens(settings))
    if os.path.exists(os.path.join(path, SENTENCEPIECE_FILE)):
        probe = SentencePieceBackend(os.path.join(path, SENTENCEPIECE_FILE), {})
        backend_class, file = SentencePieceBackend, SENTENCEPIECE_FILE
    elif os.path.exists(os.path.join(path, TOKENIZERS_FILE)):
        probe = TokenizersBackend(os.path.join(path, TOKENIZERS_FILE), {})
        backend_class, file = TokenizersBackend, TOKENIZERS_FILE
    else:
        raise ConfigError(
            f"{path}: no tokenizer (expected {SENTENCEPIECE_FILE} (SentencePiece) or {TOKENIZERS_FILE} "
            "(Hugging Face tokenizers) beside config.json)"
        )
    # a special token the vocabulary lacks could not be fed to the model anyway: leave it out
    specials = {t: i for t in candidates if (i := probe.piece_id(t)) is not None}
    # SentencePiece: <bos>/<eos> around a text when tokenizer_config.json asks (off by default, as in
    # transformers); tokenizer.json brings its own post-processor for that
    bos = specials.get(named.get("bos_token")) if settings.get("add_bos_token", False) else None
    eos = specials.get(named.get("eos_token")) if settings.get("add_eos_token", False) else None
    backend = backend_class(os.path.join(path, file), specials, bos, eos)
    return Tokenizer(path, backend, named, specials, read_chat_template(path, settings))


def load_gguf_tokenizer(path: str, metadata: dict) -> Tokenizer:
    """The tokenizer a GGUF's metadata describes, built in memory (`weights/gguf_tokenizer.py`)."""
    from ..weights.gguf_tokenizer import gguf_tokenizer

    t = gguf_tokenizer(metadata, path)
    if t.sentencepiece is not None:
        bos = t.specials[t.named["bos_token"]] if t.add_bos else None
        backend = SentencePieceBackend(path, t.specials, bos, model_proto=t.sentencepiece)
    else:
        backend = TokenizersBackend.wrap(t.backend)
    return Tokenizer(path, backend, t.named, t.specials, t.chat_template)


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def named_tokens(settings: dict) -> dict[str, str]:
    """Every `*_token` entry (`bos_token`, `sot_token`, `image_token`, ...) and the named entries
    of `extra_special_tokens`: what transformers hands the chat template as variables."""
    named = {k: t for k, v in settings.items() if k.endswith("_token") and (t := _token_text(v)) is not None}
    extra = settings.get("extra_special_tokens")
    if isinstance(extra, dict):
        named.update({k: t for k, v in extra.items() if (t := _token_text(v)) is not None})
    return named


def extra_tokens(settings: dict) -> list[str]:
    extra = settings.get("extra_special_tokens", settings.get("additional_special_tokens")) or []
    values = extra.values() if isinstance(extra, dict) else extra
    return [t for v in values if (t := _token_text(v)) is not None]


def added_tokens(settings: dict) -> list[str]:
    """Tokens of `added_tokens_decoder` marked special."""
    decoder = settings.get("added_tokens_decoder") or {}
    return [t for v in decoder.values() if isinstance(v, dict) and v.get("special", True) and (t := _token_text(v))]


def read_chat_template(path: str, settings: dict) -> str | None:
    """`chat_template.jinja` (or a processor's `chat_template.json`) wins over tokenizer_config's, as
    in transformers. A list of named templates picks the one named `default`."""
    jinja, as_json = (os.path.join(path, f) for f in CHAT_TEMPLATE_FILES)
    if os.path.exists(jinja):
        with open(jinja, encoding="utf-8") as f:
            return f.read()
    template = read_json_object(as_json).get("chat_template") if os.path.exists(as_json) else settings.get("chat_template")
    if isinstance(template, list):
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"), None)
    return template if isinstance(template, str) else None

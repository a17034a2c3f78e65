"""The embedded model's corpus and tokenizer: English prose from the Python documentation.

Corpus: the reStructuredText sources of the Python 3.11 documentation (tutorial, FAQ, HOWTOs,
language and library reference, setup and extending guides), as Debian ships them in the
`python3.11-doc` package (`/usr/share/doc/python3.11/html/_sources/**.rst.txt`). Licence: the
PSF License Agreement (the documentation's example code also under the Zero-Clause BSD licence).
Get it without installing anything system-wide:

    apt-get download python3.11-doc && dpkg-deb -x python3.11-doc_*.deb /tmp/pydoc
    # sources: /tmp/pydoc/usr/share/doc/python3.11/html/_sources

The split is by document, decided by a hash of the document's path, so it does not depend on
file-system order and a held-out page is never seen in training, not even in part.

Tokenizer: a SentencePiece BPE model trained on the training split, with byte fallback (any
character outside the pieces still encodes, as UTF-8 bytes) and Gemma 4's special tokens at the
front of the vocabulary, spelled as Gemma 4 spells them.
"""

from __future__ import annotations

import hashlib
import os
import re

# Sections of the documentation that are prose; the C API, the changelogs ("whatsnew") and the
# deprecated distutils manual are mostly declarations and lists, so they stay out.
SECTIONS = ("tutorial", "faq", "howto", "reference", "library", "using", "extending", "installing", "distributing")
HELD_OUT_ONE_IN = 40  # documents whose path hash is 0 modulo this are held out (about 2.5%)

# Gemma 4's special tokens. The first four are SentencePiece's own (pad, eos, bos, unk, at the
# ids Gemma uses: 0, 1, 2, 3); the rest are user-defined pieces that follow them in this order.
PAD, EOS, BOS, UNK = "<pad>", "<eos>", "<bos>", "<unk>"
NAMED_TOKENS = {  # tokenizer_config.json attribute -> token, as Gemma 4's tokenizer names them
    "mask_token": "<mask>",
    "sot_token": "<|turn>",  # start of turn
    "eot_token": "<turn|>",  # end of turn
    "soc_token": "<|channel>",  # start of the thinking channel
    "eoc_token": "<channel|>",
    "think_token": "<|think|>",
    "boi_token": "<|image>",  # begin image
    "image_token": "<|image|>",  # one image soft token
    "eoi_token": "<image|>",
    "boa_token": "<|audio>",
    "audio_token": "<|audio|>",
    "eoa_token": "<audio|>",
    "video_token": "<|video|>",
    "stc_token": "<|tool_call>",
    "etc_token": "<tool_call|>",
    "std_token": "<|tool>",
    "etd_token": "<tool|>",
    "str_token": "<|tool_response>",
    "etr_token": "<tool_response|>",
    "escape_token": '<|"|>',
}
VOCAB_SIZE = 4096

# reStructuredText markup that carries no prose: index entries, link targets, author lines...
_DROP_LINE = re.compile(
    r"^\s*(\.\. (index|highlight|sectionauthor|moduleauthor|testsetup|testcleanup|currentmodule"
    r"|module|program|toctree|only|raw|include|tabularcolumns|impl-detail|audit-event)::"
    r"|\.\. _[^:]*:|:(synopsis|platform|noindex|maxdepth|no-typesetting|audit-event|canonical)\b)"
)
# :role:`text`, :role:`~dotted.name` and :role:`title <target>` render as their text
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`<]*?)\s*(?:<[^`>]*>)?`")


def clean(text: str) -> str:
    """Light clean-up of reStructuredText: drop markup-only lines, render roles as their text."""
    lines = [_ROLE.sub(r"\1", line.rstrip()) for line in text.splitlines() if not _DROP_LINE.match(line)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def is_held_out(relpath: str) -> bool:
    digest = hashlib.sha256(relpath.replace(os.sep, "/").encode()).digest()
    return int.from_bytes(digest[:8], "little") % HELD_OUT_ONE_IN == 0


def documents(sources: str) -> list[tuple[str, str]]:
    """(relative path, cleaned text) of every prose document under `sources`, sorted by path."""
    if not os.path.isdir(os.path.join(sources, "tutorial")):
        raise SystemExit(
            f"{sources}: not the Python documentation's _sources directory (no tutorial/ inside); "
            "see `python -m weights_tools.train_tiny --help` for how to get it"
        )
    docs = []
    for section in SECTIONS:
        for root, _, files in os.walk(os.path.join(sources, section)):
            for name in files:
                if name.endswith(".rst.txt"):
                    path = os.path.join(root, name)
                    with open(path, encoding="utf-8") as f:
                        docs.append((os.path.relpath(path, sources), clean(f.read())))
    return sorted(docs)


def write_splits(sources: str, train_path: str, held_out_path: str) -> tuple[int, int]:
    """Write the training and held-out texts, documents separated by a blank line (as a
    `<eos>` later separates them in token space, see `encode_documents`). Returns their sizes."""
    docs = documents(sources)
    train = [text for path, text in docs if not is_held_out(path)]
    held_out = [text for path, text in docs if is_held_out(path)]
    for path, texts in ((train_path, train), (held_out_path, held_out)):
        with open(path, "w", encoding="utf-8") as f:
            f.write(DOC_SEPARATOR.join(texts))
    return len(train), len(held_out)


HELD_OUT_SAMPLE = "heldout_sample.txt"  # the start of the held-out split, shipped beside the model for tests

DOC_SEPARATOR = "\n\x1e\n"  # ASCII record separator: never occurs in the documentation


def split_documents(text: str) -> list[str]:
    return [d for d in text.split(DOC_SEPARATOR) if d.strip()]


def train_tokenizer(train_path: str, model_prefix: str, vocab_size: int = VOCAB_SIZE) -> str:
    """Train the SentencePiece model; returns the path of `<model_prefix>.model`."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        input=train_path,
        model_prefix=model_prefix,
        vocab_size=vocab_size,
        model_type="bpe",  # Gemma's tokenizers are BPE SentencePiece models
        byte_fallback=True,
        character_coverage=0.9995,  # the rarest characters go to bytes instead of pieces
        split_digits=True,  # as Gemma: numbers are read digit by digit
        add_dummy_prefix=False,  # as Gemma: no space invented in front of the text
        remove_extra_whitespaces=False,  # keep indentation: code blocks are part of the prose
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece=PAD, eos_piece=EOS, bos_piece=BOS, unk_piece=UNK,
        user_defined_symbols=list(NAMED_TOKENS.values()),
        shuffle_input_sentence=False,  # together with one thread: the same pieces on every run
        num_threads=1,
        minloglevel=2,
    )
    return model_prefix + ".model"

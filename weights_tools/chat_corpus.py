"""The chat model's corpus: conversations about Python, made from the Python documentation.

Every documented function, method, class, exception and data item of the documentation's
reStructuredText sources (`.. function:: name(args)` and its indented body), every module
(`:mod:`os.path` --- Common pathname manipulations`) and every section heading with prose under it
becomes an entry: a name, what kind of thing it is, where it lives, and the first paragraphs of
its documentation. Each entry becomes a question ("What does os.path.join do?") and its answer,
the documentation's own words:

    user:   What does os.path.join do?
    model:  `os.path.join(path, *paths)`

            Join one or more path segments intelligently. ...

Conversations are drawn from the entries with a seeded generator, so the corpus is the same on
every run: most are one question; some carry a system prompt (one of them, "Answer in one
sentence.", really changes the answer: its first sentence only); some have two or three turns
about neighbouring entries of the same page, some open with a greeting; and some are rendered with
thinking on (`enable_thinking`: `<|think|>` in the system turn), their last answer preceded by a
short thought in the channel:

    <|channel>thought\\nThe user asks about os.path.join, a function of the os.path module.<channel|>answer

Earlier answers carry no thought, as a conversation's history does at inference time
(`generate/chat.py` keeps answers only). Conversations are rendered through the model's own chat
template and tokenized by minigemma's tokenizer, exactly as `minigemma chat` will present them;
the loss mask covers the model's turns only (from the role name to `<turn|>` inclusive).

The split is by document, with the same hash as the plain model's corpus (`tiny_corpus`): the
held-out conversations come from pages neither model ever saw.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import numpy as np

from weights_tools.tiny_corpus import _ROLE, SECTIONS, is_held_out

API_KINDS = ("function", "method", "class", "exception", "data", "attribute", "decorator", "classmethod",
             "staticmethod", "coroutinefunction", "coroutinemethod", "abstractmethod", "decoratormethod")
_DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. (?P<kind>[a-z]+)::\s*(?P<arg>.*)$")
_UNDERLINE = re.compile(r"^([=\-~^*#\"+'`])\1{2,}\s*$")
_MODULE_TITLE = re.compile(r"^:mod:`(?P<name>[\w.]+)`\s*-+\s*(?P<what>.+)$")
ANSWER_CHARS = 420  # answers end at the first sentence end past this many characters (or the paragraph's end)
MIN_ANSWER_CHARS = 40


@dataclass(frozen=True)
class Entry:
    doc: str  # the page's path under _sources, e.g. library/os.path.rst.txt
    kind: str  # an API kind, "module" or "section"
    name: str  # os.path.join, os.path, "The pass statement"
    signature: str  # os.path.join(path, *paths); "" for modules and sections
    module: str | None
    text: str  # the answer: the documentation's first paragraphs


# --------------------------------------------------------------------------------------------
# reading the documentation


def prose(text: str) -> str:
    """reStructuredText inline markup -> plain chat text: roles as their text, ``code`` as `code`,
    emphasis dropped, lines joined."""
    text = _ROLE.sub(r"`\1`", text)
    text = re.sub(r"``(.+?)``", r"`\1`", text)
    text = re.sub(r"\*\*(.+?)\*\*|\*(\S(?:.*?\S)?)\*", lambda m: m.group(1) or m.group(2), text)
    text = re.sub(r"`([^`<]+?)\s*<[^`>]+>`_+", r"\1", text)  # `link text <url>`_
    text = re.sub(r"\\(.)", r"\1", text)
    return " ".join(text.split())


def shorten(text: str, limit: int = ANSWER_CHARS) -> str:
    """Cut after the first sentence that ends past `limit` characters."""
    for m in re.finditer(r"[.!?](?=\s+[A-Z`(])", text):
        if m.end() >= limit:
            return text[: m.end()]
    return text


def first_sentence(text: str) -> str:
    m = re.search(r"[.!?](?=\s+[A-Z`(])", text)
    return text[: m.end()] if m else text


def paragraphs(lines: list[str], indent: int) -> str:
    """The prose paragraphs at the start of a block (lines at `indent` or deeper), up to the first
    nested directive, literal block or heading; then shortened."""
    out, current = [], []
    for line in lines + [""]:
        if not line.strip():
            if current:
                out.append(" ".join(current))
                current = []
                if sum(map(len, out)) >= ANSWER_CHARS:
                    break
            continue
        stripped = line.strip()
        if len(line) - len(line.lstrip()) != indent or stripped.startswith((".. ", ">>>", ":")) or _UNDERLINE.match(stripped):
            if current or out:
                break
            continue  # leading options, index lines, version notes: skip until the prose starts
        current.append(stripped)
        if stripped.endswith("::"):  # a literal block follows: stop at this paragraph
            out.append(" ".join(current)[:-1])
            current = []
            break
    text = prose(" ".join(p for p in out if p))
    return shorten(text)


def block(lines: list[str], start: int, indent: int) -> tuple[list[str], int]:
    """The indented body after line `start` (lines deeper than `indent`), and its indent."""
    body = []
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        body.append(line)
    deeper = [len(line) - len(line.lstrip()) for line in body if line.strip() and not line.strip().startswith(":")]
    return body, (min(deeper) if deeper else indent + 3)


def page_entries(doc: str, source: str) -> list[Entry]:
    """Every entry of one page, in page order."""
    lines = source.splitlines()
    module, classes, entries = None, [], []  # classes: (indent, qualified name) of enclosing class directives
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and line.strip() and not line.startswith(" ") and _UNDERLINE.match(lines[i + 1]) \
                and len(lines[i + 1].strip()) >= len(line.strip()) and not _UNDERLINE.match(line):
            entries.extend(heading_entry(doc, line.strip(), lines, i + 1))
            continue
        m = _DIRECTIVE.match(line)
        if not m:
            continue
        indent, kind, arg = len(m["indent"]), m["kind"], m["arg"].strip()
        if kind in ("module", "currentmodule"):
            module = arg or None
            continue
        if kind not in API_KINDS or not arg:
            continue
        classes = [(n, c) for n, c in classes if n < indent]
        name_m = re.match(r"[\w.]+", arg)
        if not name_m:
            continue
        name = name_m.group(0)
        if classes and "." not in name:
            name = classes[-1][1] + "." + name
        elif module and not name.startswith(module + ".") and module != "builtins":
            name = module + "." + name
        signature = name + arg[name_m.end() :] if kind not in ("data", "attribute") else ""
        body, body_indent = block(lines, i, indent)
        if kind in ("class", "exception"):
            classes.append((indent, name))
        text = paragraphs(body, body_indent)
        if len(text) >= MIN_ANSWER_CHARS:
            entries.append(Entry(doc, kind, name, signature.strip(), module, text))
    return entries


def heading_entry(doc: str, title: str, lines: list[str], underline: int) -> list[Entry]:
    """A module page's title, or a section heading, with the prose that follows it."""
    body = []
    for j in range(underline + 1, len(lines)):
        if j + 1 < len(lines) and lines[j].strip() and _UNDERLINE.match(lines[j + 1]):
            break
        body.append(lines[j])
    text = paragraphs(body, 0)
    if len(text) < MIN_ANSWER_CHARS:
        return []
    m = _MODULE_TITLE.match(title)
    if m:
        return [Entry(doc, "module", m["name"], "", m["name"], f"The `{m['name']}` module: {prose(m['what'])}. {text}")]
    title = prose(title).replace("`", "")
    return [Entry(doc, "section", title, "", None, text)] if 2 <= len(title.split()) <= 8 else []


def entries(sources: str) -> list[Entry]:
    """Every entry of the documentation's prose sections, sorted by page then page order."""
    import os

    out = []
    for section in SECTIONS:
        for root, _, files in sorted(os.walk(os.path.join(sources, section))):
            for name in sorted(files):
                if name.endswith(".rst.txt"):
                    path = os.path.join(root, name)
                    with open(path, encoding="utf-8") as f:
                        out.extend(page_entries(os.path.relpath(path, sources).replace(os.sep, "/"), f.read()))
    return out


# --------------------------------------------------------------------------------------------
# questions, answers, thoughts


QUESTIONS = {
    "callable": ("What does {q} do?", "What does the {q} {kind} do?", "How do I use {q}?", "Explain {q}.",
                 "What is {q} for?", "Tell me about {q}.", "what does {q} do", "Can you explain {q}?"),
    "class": ("What is the {q} class?", "What is {q}?", "Explain the {q} class.", "Tell me about {q}.",
              "What is {q} for?"),
    "exception": ("When is {q} raised?", "What is the {q} exception?", "What does {q} mean?", "Explain {q}."),
    "data": ("What is {q}?", "What does {q} hold?", "Explain {q}.", "Tell me about {q}."),
    "module": ("What is the {q} module?", "What is {q} for?", "Tell me about the {q} module.",
               "What does the {q} module do?", "Which module is {q}?"),
    "section": ("Tell me about {t}.", "Explain {t}.", "What should I know about {t}?", "{T}?",
                "Can you tell me about {t}?"),
    "statement": ("What does the {s} statement do?", "Explain the {s} statement.", "How does {s} work in Python?"),
}
KIND_GROUP = {"class": "class", "exception": "exception", "data": "data", "attribute": "data", "module": "module",
              "section": "section"}
GREETINGS = ("Hi!", "Hello", "Hi there.", "Hello! Who are you?", "Hey", "Good morning!", "Who are you?")
GREETING_ANSWERS = (
    "Hello! I am minigemma's tiny chat model. Ask me what a Python function, module or statement does, "
    "and I will answer from the Python documentation.",
    "Hi! Ask me about Python: a function, a class, a module or a statement, and I will tell you what the "
    "documentation says about it.",
)
THANKS = ("Thanks!", "Thank you.", "Great, thanks.", "OK, thank you!")
THANKS_ANSWERS = ("You are welcome! Ask me about anything else in Python.", "Glad to help. What else would you like to know?")
SYSTEM_PROMPTS = (
    "You are a helpful assistant that answers questions about Python.",
    "You are minigemma, a small model trained on the Python documentation.",
    "Answer questions about the Python standard library.",
    "Answer in one sentence.",
)
ONE_SENTENCE = "Answer in one sentence."


def question(entry: Entry, rng: random.Random) -> str:
    statement = re.fullmatch(r"The (\w+) statement", entry.name)
    if statement:
        return rng.choice(QUESTIONS["statement"]).format(s=statement.group(1))
    group = KIND_GROUP.get(entry.kind, "callable")
    short = entry.name.rsplit(".", 1)[-1] if entry.kind not in ("module", "section") else entry.name
    q = entry.name if rng.random() < 0.75 or group == "section" else short
    if group == "callable" and rng.random() < 0.3:
        q += "()"
    kind = entry.kind.replace("coroutine", "coroutine ").replace("abstract", "abstract ").replace("decoratormethod", "decorator")
    title = entry.name[0].lower() + entry.name[1:] if not entry.name[:2].isupper() else entry.name
    return rng.choice(QUESTIONS[group]).format(q=q, kind=kind.strip(), t=title, T=entry.name)


def answer(entry: Entry, one_sentence: bool) -> str:
    if one_sentence:
        return first_sentence(entry.text)
    return f"`{entry.signature}`\n\n{entry.text}" if entry.signature else entry.text


def thought(entry: Entry) -> str:
    page = entry.doc.removesuffix(".rst.txt")
    if entry.kind == "section":
        return f"The user asks about {entry.name}. The page {page} of the documentation covers it."
    if entry.kind == "module":
        return f"The user asks about the {entry.name} module. Its page is {page}."
    where = f"of the {entry.module} module" if entry.module and entry.module != "builtins" else "built into Python"
    return f"The user asks about {entry.name}, a {entry.kind} {where}. I answer from its documentation."


# --------------------------------------------------------------------------------------------
# conversations


def conversations(items: list[Entry], seed: int) -> list[dict]:
    """Conversations over every entry, each used once: {"system", "thinking", "turns": [(user,
    thought or None, answer)]}, in a seeded order."""
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(items):
        system = rng.choice(SYSTEM_PROMPTS) if rng.random() < 0.2 else None
        thinking = rng.random() < 0.3
        same_page = 1
        while same_page < 3 and i + same_page < len(items) and items[i + same_page].doc == items[i].doc:
            same_page += 1
        n = 1 if rng.random() < 0.7 else rng.randint(1, same_page)
        turns = []
        if rng.random() < 0.06:
            turns.append((rng.choice(GREETINGS), "The user greets me.", rng.choice(GREETING_ANSWERS)))
        for entry in items[i : i + n]:
            turns.append((question(entry, rng), thought(entry), answer(entry, system == ONE_SENTENCE)))
        if rng.random() < 0.04:
            turns.append((rng.choice(THANKS), "The user thanks me.", rng.choice(THANKS_ANSWERS)))
        out.append({"system": system, "thinking": thinking, "turns": turns})
        i += n
    rng.shuffle(out)
    return out


def messages(conversation: dict) -> list[dict]:
    """The chat template's messages; with thinking, the last answer opens with its thought."""
    msgs = [{"role": "system", "content": conversation["system"]}] if conversation["system"] else []
    turns = conversation["turns"]
    for k, (user, thought_text, reply) in enumerate(turns):
        if conversation["thinking"] and k == len(turns) - 1:
            reply = f"<|channel>thought\n{thought_text}<channel|>{reply}"
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return msgs


def encode(conversation: dict, tokenizer) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation, and the loss mask (1 on the model's turns)."""
    switches = {"enable_thinking": True} if conversation["thinking"] else {}
    ids = tokenizer.encode_chat(messages(conversation), add_generation_prompt=False, **switches)
    return ids, model_turn_mask(ids, tokenizer)


def model_turn_mask(ids: list[int], tokenizer) -> list[int]:
    """1 on every token of a model turn: its role name, its content, its `<turn|>`."""
    start, end = tokenizer.token_id("sot_token"), tokenizer.token_id("eot_token")
    mask, inside = [0] * len(ids), False
    for k, token in enumerate(ids):
        if token == start:
            role = tokenizer.decode(ids[k + 1 : k + 3])
            inside = role.startswith("model")
            continue
        if inside:
            mask[k] = 1
        if token == end:
            inside = False
    return mask


def build(sources: str, tokenizer, seed: int) -> dict:
    """Training and held-out token streams with their masks, and the conversations themselves."""
    items = entries(sources)
    split = {"train": [e for e in items if not is_held_out(e.doc)], "heldout": [e for e in items if is_held_out(e.doc)]}
    out = {}
    for name, part in split.items():
        convs = conversations(part, seed)
        ids, mask = [], []
        for c in convs:
            i, m = encode(c, tokenizer)
            ids += i
            mask += m
        out[name] = {"entries": len(part), "conversations": convs,
                     "tokens": np.array(ids, dtype=np.uint16), "mask": np.array(mask, dtype=np.uint8)}
    return out

"""Chat prompts from the checkpoint's own Jinja chat template (mirrors transformers'
`apply_chat_template` / `render_jinja_template`).

A chat model was trained on conversations written in one exact format; for Gemma 4:

    <bos><|turn>system\\n{system}<turn|>\\n            (with <|think|> in it when thinking is on)
    <|turn>user\\n{question}<turn|>\\n
    <|turn>model\\n<|channel>thought\\n{reasoning}<channel|>{answer}<turn|>\\n
    <|turn>model\\n                                   the generation prompt: the model's turn

The checkpoint carries that format as a Jinja template, so we render it the way the ecosystem
does: a sandboxed environment with `trim_blocks` and `lstrip_blocks`, the `loopcontrols`
extension, a `tojson` that keeps non-ASCII text, the globals `raise_exception`, `strftime_now`
and `namespace`, the special tokens as variables (`bos_token`, `sot_token`, ...), and messages
cleaned as transformers cleans them (keys set to None dropped; reasoning also offered as
`reasoning_content` and `thinking`).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from ..errors import InputError

REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")  # names a message's reasoning comes under


@lru_cache(maxsize=8)
def compile_template(source: str):
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """`{% generation %}...{% endgeneration %}` marks the assistant's tokens for training masks;
        rendering just writes its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise InputError(f"chat template: line {e.lineno}: {e.message}") from None


def clean_messages(messages) -> list[dict]:
    """Drop keys whose value is None; give reasoning under every name templates read it by."""
    if not isinstance(messages, list | tuple) or not all(isinstance(m, dict) for m in messages):
        raise InputError("messages: expected a list of dicts like {'role': 'user', 'content': '...'}")
    cleaned = []
    for message in messages:
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in REASONING_FIELDS if k in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        cleaned.append(message)
    return cleaned


def render_chat(source: str, messages, special_tokens: dict[str, str], add_generation_prompt: bool = True, **kwargs) -> str:
    """Render a conversation. `special_tokens`: name -> text (`bos_token` -> `<bos>`);
    `kwargs`: template switches such as `enable_thinking=True`."""
    import jinja2

    template = compile_template(source)
    variables = {**special_tokens, **kwargs}
    try:
        return template.render(
            messages=clean_messages(messages),
            tools=None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **variables,
        )
    except jinja2.exceptions.TemplateError as e:
        raise InputError(f"chat template: {e}") from None

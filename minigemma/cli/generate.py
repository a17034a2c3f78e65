"""`minigemma generate` and `minigemma chat`: text streams to stdout as it is decoded; progress and
the tokens/s line go to stderr.

    minigemma generate "Once upon a time" --model DIR --max-new-tokens 64 --temperature 0.8 --seed 1
    minigemma generate "Describe this image." --model DIR --image photo.jpg [--max-soft-tokens 280]
    minigemma generate "Transcribe this." --model DIR --audio clip.wav
    minigemma chat --model DIR [--system TEXT] [--think] [--image photo.jpg] [--audio clip.wav]
                                                  one user turn per line of stdin
    minigemma generate "Once upon a time" --model DIR --assistant ASSISTANT_DIR [--draft-tokens 4]
                                                  speculative decoding with an MTP assistant (chat too)
    minigemma generate "..." --model DIR --kv-cache-dtype float16
                                                  keys and values cached in float16: half the memory (chat too)

Sampling flags are spelled as the ecosystem spells them (`--temperature 0` is greedy; unset ones
take the checkpoint's generation_config.json values). Flags are checked before the model loads.
Images and audio: `--image` and `--audio` files are read before the model loads (a bad file is a
one-line error, not a wasted load); `prompt_inputs` puts both into a generate prompt,
`user_content` puts both into chat's first turn.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from ..errors import InputError
from ..vision.image import DEFAULT_SOFT_TOKENS, SUPPORTED_SOFT_TOKENS
from ..generate.cache import STORAGE
from ..generate.loop import DEFAULT_MAX_NEW_TOKENS
from ..generate.sampling import check_sampling, load_generation_config, resolve

KV_CACHE_DTYPES = tuple(np.dtype(t).name for t in STORAGE)  # float32 first: the default
DIM, RESET = "\x1b[2m", "\x1b[0m"  # faint text for the thinking channel on a terminal
THINKING_LABEL = "(thinking) "


def add_sampling_flags(p) -> None:
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                   help=f"stop after N new tokens (default {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--temperature", type=float, metavar="T",
                   help="0: greedy; higher: more varied (default: the checkpoint's generation_config.json, else greedy)")
    p.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, metavar="P", help="sample among the most likely tokens holding probability P, in (0, 1]")
    p.add_argument("--seed", type=int, metavar="S", help="make sampling repeat exactly")


def add_cache_flag(p) -> None:
    p.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES, default=KV_CACHE_DTYPES[0],
                   help="how the KV cache stores keys and values: float16 takes half the memory of float32 "
                   "(widened inside the attention kernels; a long context's cache is mostly its global layers') "
                   f"(default {KV_CACHE_DTYPES[0]})")


def add_assistant_flags(p) -> None:
    p.add_argument("--assistant", metavar="DIR",
                   help="an MTP assistant checkpoint (e.g. gemma-4-E2B-it-assistant): speculative decoding, "
                   "the same text when greedy, the same distribution when sampling")
    p.add_argument("--draft-tokens", type=int, metavar="N",
                   help="tokens the assistant drafts per round (default: its generation_config.json's num_assistant_tokens)")


def load_assistant_for(args, model):
    """The --assistant checkpoint, loaded with the target's backend and checked against it; or None."""
    if args.assistant is None:
        return None
    from ..generate.speculative import resolve_assistant

    start = time.perf_counter()
    assistant = resolve_assistant(model, args.assistant)
    print(f"minigemma: loaded assistant {assistant.path} ({assistant.config.text.num_hidden_layers} layers) "
          f"in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    return assistant


def report_speculation(stats, new_tokens: int, decode_s: float) -> None:
    """The stderr line of a speculative run: acceptance rate, tokens per target pass, tokens/s."""
    rounds = len(stats.accepted_per_round)
    per_pass = (stats.accepted + rounds) / rounds if rounds else 1.0
    rate = (new_tokens - 1) / decode_s if new_tokens > 1 and decode_s > 0 else 0.0
    print(f"minigemma: assistant: {stats.accepted} of {stats.drafted} drafts accepted "
          f"({100 * stats.acceptance_rate:.0f}%), {per_pass:.2f} tokens per target pass, {rate:.1f} tokens/s",
          file=sys.stderr)


def sampling_for(args, model):
    """The flags, with unset ones from the checkpoint's generation_config.json."""
    return resolve(args.temperature, args.top_k, args.top_p, args.seed, load_generation_config(model.path))


def check_flags(args) -> None:
    check_sampling(args.temperature, args.top_k, args.top_p, args.seed, args.max_new_tokens,
                   spell=lambda name: "--" + name.replace("_", "-"))
    if getattr(args, "draft_tokens", None) is not None and args.draft_tokens < 1:
        raise InputError(f"--draft-tokens: expected an integer >= 1, found {args.draft_tokens}")
    if getattr(args, "assistant", None) is not None and not os.path.isdir(os.path.join(args.assistant, ".")):
        raise InputError(f"--assistant: {args.assistant}: not a directory (expected an assistant checkpoint directory)")


def load_with_progress(path, kernels=None, mmproj=None):
    from ..loading import load

    start = time.perf_counter()
    model = load(path, kernels=kernels, mmproj=mmproj)
    model.tokenizer  # a directory without a tokenizer fails here, before any prompt is read
    t = model.config.text
    print(f"minigemma: loaded {model.path} ({t.num_hidden_layers} layers, vocab {t.vocab_size}) "
          f"in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    return model


def notice(message: str) -> None:
    print(f"minigemma: {message}", file=sys.stderr)


def clamp_to_context(model, prompt_tokens: int, max_new_tokens: int) -> int:
    """--max-new-tokens, no more than the context leaves after the prompt (said once, on stderr)."""
    from ..generate.loop import room_for_new_tokens

    room = room_for_new_tokens(model, prompt_tokens)
    if max_new_tokens > room:
        notice(f"--max-new-tokens {max_new_tokens}: the {prompt_tokens}-token prompt leaves room for {room} in the "
               f"model's {model.config.text.max_position_embeddings}-token context; generating at most {room}")
    return min(max_new_tokens, room)


def say_if_context_full(model, total_tokens: int, stopped: bool) -> None:
    """A generation cut by the context, not by a stop token or --max-new-tokens, says so."""
    context = model.config.text.max_position_embeddings
    if not stopped and total_tokens > context:
        notice(f"stopped: the model's context of {context} tokens is full")


def read_prompt(args) -> str:
    """The prompt argument, else stdin (with a hint when stdin is a terminal); never empty without media."""
    if args.prompt is not None:
        text = args.prompt
    else:
        if sys.stdin.isatty():
            notice('reading the prompt from stdin; end it with Ctrl-D (or give it as an argument: minigemma generate "...")')
        text = sys.stdin.read()
    if not text.strip() and not (args.images or args.audio):
        raise InputError('prompt: empty; give the text to continue as an argument (minigemma generate "Once upon a time") '
                         "or on stdin")
    return text


def report(prompt_tokens: int, prefill_s: float, new_tokens: int, decode_s: float) -> None:
    rate = (new_tokens - 1) / decode_s if new_tokens > 1 and decode_s > 0 else 0.0
    print(f"minigemma: prompt {prompt_tokens} tokens in {prefill_s:.2f} s; {new_tokens} new tokens, "
          f"{rate:.1f} tokens/s", file=sys.stderr)


# ------------------------------------------------------------------------------------------ generate


def add_generate(sub) -> None:
    from .common import add_model_flag

    p = sub.add_parser("generate", help="continue a prompt, streaming the text",
                       description="Continue a prompt with the model, printing the new text as it comes.")
    p.add_argument("prompt", nargs="?", help="the text to continue (default: read it from stdin)")
    add_model_flag(p)
    add_sampling_flags(p)
    add_image_flags(p)
    p.add_argument("--audio", action="append", type=audio_file, metavar="PATH",
                   help="a WAV clip to hear (repeatable); placed at the prompt's <|audio|> markers in order, "
                   "or before the prompt when it has none")
    add_assistant_flags(p)
    add_video_flag(p)
    add_cache_flag(p)
    p.set_defaults(run=run_generate)


def add_video_flag(p, help="a video (animated GIF, folder of frames, MP4/WebM with the video extra) for the prompt "
                           "(repeatable), at each <|video|> of the prompt, else in front: 32 frames, each with its "
                           "mm:ss time and 70 soft tokens") -> None:
    p.add_argument("--video", dest="videos", action="append", type=video_file, metavar="PATH", help=help)


def video_file(path: str):
    """Decode a --video now, before the model loads; an unreadable file is a one-line error."""
    from ..vision.video import read_video

    try:
        return read_video(path)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_image_flags(p, help="an image for the prompt (repeatable), placed at each <|image|> of the prompt, else in front") -> None:
    p.add_argument("--image", dest="images", action="append", type=image_file, metavar="PATH", help=help)
    p.add_argument("--max-soft-tokens", type=int, choices=SUPPORTED_SOFT_TOKENS, default=DEFAULT_SOFT_TOKENS,
                   help=f"tokens per image: more, finer detail (default {DEFAULT_SOFT_TOKENS})")


def image_file(path: str):
    """Decode an --image now, before the model loads; an unreadable file is a one-line error."""
    from ..vision.image import load_image

    try:
        return load_image(path)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def audio_file(path: str):
    """Read an --audio WAV now, before the model loads; an unreadable file is a one-line error."""
    from ..audio.wav import read_clip

    try:
        return read_clip(path)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def prompt_inputs(model, text: str, args):
    """Prompt text -> (token ids, soft tokens). `--image` / `--audio` (in `args`) add their
    placeholders and soft tokens here."""
    if args.images or args.audio or getattr(args, "videos", None):
        from ..generate.media_prompt import prompt_with_media

        ids, _, soft = prompt_with_media(model, text, args.images, args.max_soft_tokens, args.audio, getattr(args, "videos", None))
        return ids, soft
    return model.tokenizer.encode(text, add_special_tokens=True), ()


def run_generate(args) -> int:
    from ..generate.loop import check_prompt_fits, new_ids, stop_token_ids, text_pieces
    from ..generate.speculative import SpeculationStats

    check_flags(args)
    text = read_prompt(args)
    model = load_with_progress(args.model, args.kernels, args.mmproj)
    assistant, speculation = load_assistant_for(args, model), SpeculationStats()
    ids, soft = prompt_inputs(model, text, args)
    check_prompt_fits(model, len(ids))
    max_new_tokens = clamp_to_context(model, len(ids), args.max_new_tokens)
    stops = stop_token_ids(model)
    tokens, times = [], []

    def timed(token_iter):
        for token in token_iter:
            tokens.append(token)
            times.append(time.perf_counter())
            yield token

    start = time.perf_counter()
    new = new_ids(model, ids, sampling_for(args, model), max_new_tokens, stops, soft=soft, assistant=assistant,
                  draft_tokens=args.draft_tokens, stats=speculation, kv_cache_dtype=args.kv_cache_dtype)
    for piece in text_pieces(model.tokenizer, timed(new), stops):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    report(len(ids), times[0] - start, len(tokens), times[-1] - times[0])
    if assistant is not None:
        report_speculation(speculation, len(tokens), times[-1] - times[0])
    say_if_context_full(model, len(ids) + len(tokens), tokens[-1] in stops)
    return 0


# ---------------------------------------------------------------------------------------------- chat


def add_chat(sub) -> None:
    from .common import add_model_flag

    p = sub.add_parser("chat", help="talk with a chat model, one turn per line of stdin",
                       description="Multi-turn chat through the checkpoint's chat template. Each line of stdin "
                       "is a user turn (works piped); the reply streams to stdout, the model's thinking "
                       "shown apart, labelled (thinking). End with Ctrl-D. Without --model: the embedded "
                       "chat model (minigemma/data/tiny-chat), which samples unless given --temperature 0.")
    add_model_flag(p)
    add_sampling_flags(p)
    p.add_argument("--system", metavar="TEXT", help="a system prompt")
    p.add_argument("--think", action="store_true", help="let the model think first (the template's enable_thinking)")
    add_image_flags(p, "an image the first turn is about (repeatable)")
    p.add_argument("--audio", action="append", type=audio_file, metavar="PATH",
                   help="a WAV clip the first turn is about (repeatable)")
    add_assistant_flags(p)
    add_video_flag(p, "a video the first turn is about (repeatable; the chat template must write a mark for "
                      "{'type': 'video'} items)")
    add_cache_flag(p)
    p.set_defaults(run=run_chat)


def user_content(text: str, args):
    """A user turn's content. `--image` / `--audio` / `--video` files (in `args`) join as {"type":
    "image"}, {"type": "audio"} and {"type": "video"} items, to the first turn only (they are taken
    out of `args`)."""
    images, clips, videos = args.images or [], args.audio or [], args.videos or []
    args.images, args.audio, args.videos = None, None, None
    if images or clips or videos:
        return [*({"type": "video", "video": video} for video in videos), *({"type": "image", "image": image} for image in images),
                *({"type": "audio", "audio": clip} for clip in clips), {"type": "text", "text": text}]
    return text


def run_chat(args) -> int:
    from ..generate.chat import THOUGHT, Conversation

    from ..model import default_chat_model_path

    check_flags(args)
    model = load_with_progress(args.model if args.model is not None else default_chat_model_path(), args.kernels, args.mmproj)
    chat = Conversation(model, sampling_for(args, model), args.max_new_tokens, args.system, args.think, args.max_soft_tokens,
                        load_assistant_for(args, model), args.draft_tokens, args.kv_cache_dtype)
    interactive = sys.stdin.isatty()
    dim = sys.stdout.isatty()
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        if not line.strip():
            continue
        channel = None
        for now, piece in chat.reply(user_content(line.rstrip("\n"), args)):
            if now != channel:  # entering or leaving the thinking channel
                if channel == THOUGHT:
                    sys.stdout.write((RESET if dim else "") + "\n")
                if now == THOUGHT:
                    sys.stdout.write((DIM if dim else "") + THINKING_LABEL)
                channel = now
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write((RESET if dim and channel == THOUGHT else "") + "\n")
        sys.stdout.flush()
        s = chat.last
        report(s.prompt_tokens, s.prefill_seconds, s.new_tokens, s.decode_seconds)
        if chat.assistant is not None:
            report_speculation(chat.speculation, s.new_tokens, s.decode_seconds)
        say_if_context_full(model, s.prompt_tokens + s.new_tokens, stopped=False)
        print(f"minigemma: {s.prompt_tokens - s.prefilled} of the prompt's tokens came from the cache", file=sys.stderr)

"""Measure an assistant on the embedded model: acceptance on held-out text and the decode speed
with and without speculation (greedy, so both give the same tokens; the script checks it).

    python -m weights_tools.assistant_eval [--assistant minigemma/data/tiny_assistant] [--prompts 6] [--new 48]

Prompts are the starts of held-out paragraphs (`heldout_sample.txt`, never trained on by the
model or the assistant). Prints one table row per number of drafts per round.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import minigemma
from minigemma.assistant import load_assistant
from minigemma.generate.loop import generate_ids
from minigemma.generate.sampling import Sampling
from minigemma.generate.speculative import SpeculationStats, speculative_ids
from minigemma.model import default_model_path

DEFAULT_ASSISTANT = os.path.join(os.path.dirname(default_model_path()), "tiny_assistant")


def heldout_prompts(model, n: int, words: int = 24) -> list[np.ndarray]:
    with open(os.path.join(default_model_path(), "heldout_sample.txt"), encoding="utf-8") as f:
        paragraphs = [p for p in f.read().split("\n\n") if len(p.split()) > 2 * words]
    step = max(1, len(paragraphs) // n)
    return [np.array(model.tokenizer.encode(" ".join(p.split()[:words]), add_special_tokens=True))
            for p in paragraphs[::step][:n]]


def decode_speed(run, prompts) -> tuple[float, list]:
    """Tokens per second after the first token (the prefill excluded), and the tokens."""
    tokens, seconds = [], 0.0
    for ids in prompts:
        it = run(ids)
        out = [next(it)]
        start = time.perf_counter()
        out += list(it)
        seconds += time.perf_counter() - start
        tokens.append(out)
    return sum(len(t) - 1 for t in tokens) / seconds, tokens


def evaluate(model, assistant, prompts, new: int, ks) -> list[dict]:
    greedy = Sampling()
    plain_rate, plain = decode_speed(lambda ids: generate_ids(model, ids, greedy, new), prompts)
    rows = [{"k": 0, "tokens_per_s": plain_rate, "acceptance": None, "speedup": 1.0}]
    for k in ks:
        stats = SpeculationStats()
        rate, spec = decode_speed(lambda ids: speculative_ids(model, assistant, ids, greedy, new, draft_tokens=k,
                                                              stats=stats), prompts)
        assert spec == plain, "greedy speculation must give the plain greedy tokens"
        per_position = np.bincount(stats.accepted_per_round, minlength=k + 1) / max(1, len(stats.accepted_per_round))
        rows.append({"k": k, "tokens_per_s": rate, "acceptance": stats.acceptance_rate, "speedup": rate / plain_rate,
                     "accepted_lengths": per_position.tolist()})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--assistant", default=DEFAULT_ASSISTANT)
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--new", type=int, default=48)
    p.add_argument("--max-k", type=int, default=5)
    args = p.parse_args(argv)
    model = minigemma.load()
    assistant = load_assistant(args.assistant)
    rows = evaluate(model, assistant, heldout_prompts(model, args.prompts), args.new, range(1, args.max_k + 1))
    print("| drafts per round | acceptance | decode tokens/s | speedup |\n| --- | --- | --- | --- |")
    for r in rows:
        acc = "-" if r["acceptance"] is None else f"{100 * r['acceptance']:.0f}%"
        print(f"| {r['k'] or 'none'} | {acc} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

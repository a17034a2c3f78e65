"""The assistant's distillation loop (weights_tools/train_assistant.py): the loss falls, a run is
deterministic, and one stopped and resumed equals one never stopped; its masks are the drafter's
(full: every key before the query; sliding: the last window + 1 of them)."""

from __future__ import annotations

import numpy as np
import torch

from minigemma.generate.tokenizer import load_tokenizer
from minigemma.model import default_model_path
from weights_tools import train_assistant as ta

HP = {**ta.training_defaults(), "seq_len": 24, "batch_size": 2, "draft_steps": 2, "steps": 4, "warmup_steps": 1,
      "checkpoint_every": 1, "log_every": 1}


def tokens() -> np.ndarray:
    with open(f"{default_model_path()}/heldout_sample.txt", encoding="utf-8") as f:
        return np.array(load_tokenizer(default_model_path()).encode(f.read()[:3000]), dtype=np.uint16)


def test_resumed_run_equals_an_unbroken_one(tmp_path):
    target, data = ta.load_target(), tokens()
    straight = ta.train(target, data, str(tmp_path / "a"), HP, quiet=True)
    ta.train(target, data, str(tmp_path / "b"), HP, stop_after=2, quiet=True)
    resumed = ta.train(target, data, str(tmp_path / "b"), HP, quiet=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    log = torch.load(tmp_path / "a" / ta.CHECKPOINT, weights_only=False)["state"]["log"]
    assert log[-1][1] < log[0][1]  # distillation loss falls


def test_draft_masks():
    masks = ta.draft_masks(queries=6, keys=7, window=2, dtype=torch.float32)
    full, sliding = (masks[t][0, 0] == 0 for t in (ta.GLOBAL, ta.SLIDING))
    for q in range(6):
        p = q + 1  # query q sits at position p
        assert full[q].nonzero().flatten().tolist() == list(range(p))
        assert sliding[q].nonzero().flatten().tolist() == list(range(max(0, p - 3), p))

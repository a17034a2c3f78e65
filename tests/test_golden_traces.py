"""Golden traces: one command (`python -m weights_tools.golden_traces`) writes the reference's
activations on fixed prompts, only when minigemma agrees with them; the shipped ones in
`minigemma/data/golden_traces/` are those of the embedded model as it is now."""

import os

import numpy as np
import pytest
import torch
from tokenizer_fixtures import write_sentencepiece_tokenizer

import minigemma
from minigemma.cli import main
from minigemma.verify.compare import compare_traces
from minigemma.model import default_model_path
from minigemma.generate.tokenizer import load_tokenizer
from minigemma.verify.trace import config_hash, kv_sources
from minigemma.verify.trace_file import Trace, load_trace
from minigemma.verify import reference as reference_trace
from weights_tools import golden_traces
from weights_tools.random_checkpoint import PRESETS, write_random_checkpoint

SHIPPED = os.path.join(os.path.dirname(minigemma.__file__), "data", "golden_traces")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random checkpoint (every text feature on) with a tokenizer of its vocabulary size."""
    path = tmp_path_factory.mktemp("ckpt")
    write_random_checkpoint(str(path), PRESETS["tiny"], dtype="BF16", seed=1)
    write_sentencepiece_tokenizer(str(path), vocab_size=PRESETS["tiny"]["vocab_size"])
    return path


def expected_names(prompt, model, ids) -> list[str]:
    if prompt.every_name:
        return list(model.trace(ids))
    return ["embed", *(f"layers.{i}.out" for i in range(model.config.text.num_hidden_layers)), "final_norm"]


def test_golden_traces_are_the_reference_on_fixed_prompts(checkpoint, tmp_path, capsys):
    assert golden_traces.main([str(tmp_path / "golden"), "--model", str(checkpoint)]) == 0
    printed = capsys.readouterr().out
    model = minigemma.load(checkpoint)
    cfg = model.config.text
    tok = load_tokenizer(str(checkpoint))
    ref = reference_trace.load_reference(str(checkpoint))
    for prompt in golden_traces.PROMPTS:
        path = tmp_path / "golden" / f"{prompt.name}.safetensors"
        assert f"wrote {path} (" in printed
        t = load_trace(str(path))
        ids = tok.encode(prompt.text, add_special_tokens=True)
        assert t.token_ids == ids and ids[0] == tok.bos_id and t.metadata["prompt"] == prompt.text
        assert t.metadata["config_sha256"] == config_hash(model.config)
        assert t.kv_sources == kv_sources(model.config.text)
        assert t.metadata["source"].startswith("transformers 5.23.0")
        assert list(t.activations) == expected_names(prompt, model, ids)
        assert prompt.every_name or len(ids) > cfg.sliding_window  # the long prompt outruns the window
        for name, value in reference_trace.capture(ref, ids, list(t.activations)).items():
            np.testing.assert_array_equal(t.activations[name], value, err_msg=name)
        # an implementer's check: their trace (here minigemma's, from the CLI) against the golden file
        ours = tmp_path / f"ours_{prompt.name}.npz"
        assert main(["trace", "--model", str(checkpoint), "--prompt", prompt.text, "--out", str(ours)]) == 0
        capsys.readouterr()
        subset = [] if prompt.every_name else [flag for name in t.activations for flag in ("--names", name)]
        assert main(["compare", str(ours), str(path), *subset]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == f"all {len(t.activations)} activations agree (rtol 0.0001, atol 0.0001)"


def test_golden_traces_refuse_to_freeze_a_disagreement(checkpoint, tmp_path, monkeypatch):
    load = reference_trace.load_reference

    def perturbed(path):
        ref = load(path)
        with torch.no_grad():
            ref.model.layers[1].mlp.up_proj.weight.mul_(1.01)
        return ref

    monkeypatch.setattr(reference_trace, "load_reference", perturbed)
    with pytest.raises(SystemExit, match="disagree on 'short' from layers.1.mlp.gated on"):
        golden_traces.main([str(tmp_path / "golden"), "--model", str(checkpoint)])
    assert not (tmp_path / "golden" / "short.safetensors").exists()


@pytest.mark.parametrize("prompt", golden_traces.PROMPTS, ids=lambda p: p.name)
def test_shipped_golden_traces_are_of_the_embedded_model_as_it_is(prompt):
    """Retraining the embedded model without making the golden traces again fails here; so does
    any change to minigemma that moves one of its activations past the tolerance."""
    model = minigemma.load()
    t = load_trace(os.path.join(SHIPPED, f"{prompt.name}.safetensors"))
    ids = load_tokenizer(default_model_path()).encode(prompt.text, add_special_tokens=True)
    assert t.token_ids == ids and t.metadata["prompt"] == prompt.text
    assert t.metadata["config_sha256"] == config_hash(model.config)
    assert t.kv_sources == kv_sources(model.config.text) == {4: 3, 5: 2}  # S S G S | S G
    assert list(t.activations) == expected_names(prompt, model, ids)
    rows = compare_traces(Trace("minigemma", model.trace(ids, list(t.activations))), t)
    assert [r.name for r in rows if not r.ok] == []

"""`python -m weights_tools.golden_traces`: one command writes the golden traces (the reference's
activations on fixed prompts), only when minigemma agrees with them, in files `compare` reads."""

import numpy as np
import pytest
import torch

import minigemma
from minigemma.cli import main
from minigemma.trace import config_hash
from minigemma.trace_file import load_trace
from weights_tools import golden_traces, reference_trace
from weights_tools.random_checkpoint import PRESETS, write_random_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    write_random_checkpoint(str(path), PRESETS["tiny"], dtype="BF16", seed=1)
    return path


def test_golden_traces_are_the_reference_on_fixed_prompts(checkpoint, tmp_path, capsys):
    assert golden_traces.main([str(tmp_path / "golden"), "--model", str(checkpoint)]) == 0
    printed = capsys.readouterr().out
    model = minigemma.load(checkpoint)
    cfg = model.config.text
    ref = reference_trace.load_reference(str(checkpoint))
    for prompt in golden_traces.PROMPTS:
        path = tmp_path / "golden" / f"{prompt.name}.safetensors"
        assert f"wrote {path} (" in printed
        t = load_trace(str(path))
        ids = prompt.token_ids(cfg.vocab_size, cfg.sliding_window)
        assert t.token_ids == ids and ids[0] == cfg.bos_token_id
        assert t.metadata["config_sha256"] == config_hash(model.config)
        assert t.metadata["source"].startswith("transformers 5.23.0")
        expected = reference_trace.capture(ref, ids, prompt.names(cfg.num_hidden_layers))
        assert list(t.activations) == list(expected)
        for name, value in expected.items():
            np.testing.assert_array_equal(t.activations[name], value, err_msg=name)
        if prompt.every_name:
            assert list(t.activations) == list(model.trace(ids))
        else:  # past the sliding window, the residual stream only
            assert len(ids) > cfg.sliding_window
            assert list(t.activations) == ["embed", *(f"layers.{i}.out" for i in range(cfg.num_hidden_layers)), "final_norm"]
        # an implementer's check: their trace (here minigemma's, from the CLI) against the golden file
        ours = tmp_path / f"ours_{prompt.name}.npz"
        assert main(["trace", "--model", str(checkpoint), "--ids", ",".join(map(str, ids)), "--out", str(ours)]) == 0
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

"""Checkpoints and golden traces in the released layouts: `weights_tools.random_checkpoint`
writes the published config.json dialect and, optionally, the unused k/v tensors E2B ships on
its KV-shared layers (minigemma and transformers ignore them); the shipped release-like golden
traces (E2B-like and 26B-A4B-like, at toy size) are the reference's on checkpoints the writer
makes again from the command in their metadata."""

import os

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import Gemma4ForCausalLM, Gemma4TextConfig

import minigemma
from minigemma.text.config import config_from_dict
from minigemma.verify.compare import compare_traces
from minigemma.verify.trace import config_hash
from minigemma.verify.trace_file import Trace, load_trace
from weights_tools import golden_traces
from weights_tools.random_checkpoint import PRESETS, published_dialect, write_random_checkpoint

SHIPPED = os.path.join(os.path.dirname(minigemma.__file__), "data", "golden_traces")
SLIDING, GLOBAL = "sliding_attention", "full_attention"


def test_published_dialect_from_a_save_pretrained_config():
    """save_pretrained writes `per_layer_config`; the published checkpoints `global_head_dim` and
    `num_global_key_value_heads`: the same model either way, for minigemma and transformers."""
    kw = dict(PRESETS["a4b-like"])
    saved = Gemma4TextConfig(**{k: v for k, v in kw.items() if k != "model_type"}).to_dict()
    assert "per_layer_config" in saved and "global_head_dim" not in saved
    published = published_dialect(saved)
    assert "per_layer_config" not in published
    assert published["global_head_dim"] == kw["global_head_dim"]
    assert published["num_global_key_value_heads"] == kw["num_global_key_value_heads"]
    assert config_hash(config_from_dict(published)) == config_hash(config_from_dict(saved))
    again = Gemma4TextConfig(**{k: v for k, v in published.items() if k not in ("model_type", "transformers_version")})
    assert {int(k): v for k, v in again.to_dict()["per_layer_config"].items()} == {
        int(k): v for k, v in saved["per_layer_config"].items()
    }
    with pytest.raises(ValueError, match="overrides a sliding layer"):
        published_dialect(dict(saved, per_layer_config={"0": {"head_dim": 8}}))


@pytest.fixture(scope="module")
def e2b_pair(tmp_path_factory):
    """The E2B-like checkpoint with and without the unused k/v tensors of its shared layers."""
    base = tmp_path_factory.mktemp("e2b")
    for name, kv in (("plain", False), ("with_kv", True)):
        write_random_checkpoint(str(base / name), PRESETS["e2b-like"], "BF16", seed=0, kv_on_shared=kv, random_scalars=True)
    return base / "plain", base / "with_kv"


def test_unused_kv_tensors_of_shared_layers_are_written_and_ignored(e2b_pair):
    plain, with_kv = e2b_pair
    cfg = config_from_dict(PRESETS["e2b-like"]).text
    shared = [s.index for s in cfg.layers if s.reuses_kv]
    assert shared == [5, 6, 7, 8, 9]
    with safe_open(str(plain / "model.safetensors"), "pt") as a, safe_open(str(with_kv / "model.safetensors"), "pt") as b:
        extra = set(b.keys()) - set(a.keys())
        assert extra == {f"model.layers.{i}.self_attn.{t}.weight" for i in shared for t in ("k_proj", "v_proj", "k_norm")}
        for i in shared:  # shaped as the layer would need them: its type's head dim
            head_dim = cfg.layers[i].head_dim
            assert b.get_slice(f"model.layers.{i}.self_attn.k_norm.weight").get_shape() == [head_dim]
            k_proj = b.get_slice(f"model.layers.{i}.self_attn.k_proj.weight").get_shape()
            assert k_proj == [cfg.layers[i].num_kv_heads * head_dim, cfg.hidden_size]
        for name in a.keys():  # the tensors the model reads keep their values
            assert torch.equal(a.get_tensor(name), b.get_tensor(name)), name
    ids = [2, 9, 33, 4, 100, 7, 5, 61, 12, 3, 8, 77]
    ours = minigemma.load(with_kv).forward(ids)
    np.testing.assert_array_equal(ours, minigemma.load(plain).forward(ids))
    ref = Gemma4ForCausalLM.from_pretrained(with_kv, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = ref(input_ids=torch.tensor([ids]), use_cache=False, output_hidden_states=True).logits[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("golden", golden_traces.RELEASE_LIKE, ids=lambda g: g.name)
def test_shipped_release_like_traces(golden, tmp_path):
    t = load_trace(os.path.join(SHIPPED, f"{golden.name}.safetensors"))
    assert t.metadata["checkpoint"] == golden.command() and t.token_ids == list(golden.ids)
    write_random_checkpoint(str(tmp_path), PRESETS[golden.preset], "BF16", golden.seed, golden.kv_on_shared, random_scalars=True)
    model = minigemma.load(tmp_path)
    cfg = model.config.text
    assert len(golden.ids) == 2 * cfg.sliding_window
    assert t.metadata["config_sha256"] == config_hash(model.config)
    if golden.preset == "e2b-like":  # 4:1, the shared tail reading layers 3 (sliding) and 4 (global), PLE
        assert cfg.layer_types == (SLIDING,) * 4 + (GLOBAL,) + (SLIDING,) * 4 + (GLOBAL,)
        assert t.kv_sources == {5: 3, 6: 3, 7: 3, 8: 3, 9: 4}
        assert "ple.inputs" in t.activations and "layers.9.mlp.gated" in t.activations
        assert t.activations["layers.9.mlp.gated"].shape[1] == 2 * cfg.intermediate_size  # double-wide
    else:  # MoE beside the dense MLP, keys = values on the global layer
        assert cfg.layer_types == (SLIDING,) * 5 + (GLOBAL,) and cfg.attention_k_eq_v and cfg.enable_moe_block
        assert t.kv_sources == {} and "layers.5.moe.router.top_k_index" in t.activations
    ours = Trace("minigemma", model.trace(list(golden.ids)))
    assert list(ours.activations) == list(t.activations)
    assert [r.name for r in compare_traces(ours, t) if not r.ok] == []


def test_release_like_tool_writes_what_is_shipped(tmp_path):
    written = golden_traces.release_like_traces(str(tmp_path))
    assert [os.path.basename(p) for p in written] == [f"{g.name}.safetensors" for g in golden_traces.RELEASE_LIKE]
    for path in written:
        fresh, shipped = load_trace(path), load_trace(os.path.join(SHIPPED, os.path.basename(path)))
        assert fresh.metadata == shipped.metadata  # values: torch's thread count moves the last bits
        assert [r.name for r in compare_traces(fresh, shipped) if not r.ok] == []

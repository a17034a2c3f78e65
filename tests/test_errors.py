"""Bad input gets our own error, whose message names the culprit: the file, the tensor or the
argument, what was expected and what was found. Never a bare NumPy traceback."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from gemma_reference import reference_text_model
from test_model import EVERYTHING_ON

import minigemma
from minigemma import CheckpointError, ConfigError, InputError
from minigemma.weights.checkpoint import Checkpoint, write_safetensors


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    reference_text_model(EVERYTHING_ON, "causal", seed=1).save_pretrained(d)
    return d


def copy_of(saved, tmp_path):
    for f in os.listdir(saved):
        (tmp_path / f).write_bytes((saved / f).read_bytes())
    return tmp_path


def rewrite_tensors(path, edit):
    """Rewrite a safetensors file after `edit(dict name -> array)`."""
    ckpt = Checkpoint(path.parent)
    tensors = {n: ckpt.f32(n) for n in ckpt.names()}
    edit(tensors)
    write_safetensors(str(path), {n: (a.shape, lambda a=a: a) for n, a in tensors.items()})


def test_missing_config_json(tmp_path):
    with pytest.raises(ConfigError, match="no config.json found"):
        minigemma.load(tmp_path)


def test_not_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        minigemma.load(tmp_path / "nope")


def test_no_weight_files(saved, tmp_path):
    (tmp_path / "config.json").write_bytes((saved / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors weight files found"):
        minigemma.load(tmp_path)


def test_missing_tensor_is_named(saved, tmp_path):
    d = copy_of(saved, tmp_path)
    rewrite_tensors(d / "model.safetensors", lambda t: t.pop("model.layers.2.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.2\.mlp\.up_proj\.weight'"):
        minigemma.load(d)


def test_wrong_shape_names_tensor_expected_and_found(saved, tmp_path):
    d = copy_of(saved, tmp_path)

    def shrink(t):
        t["model.layers.1.mlp.down_proj.weight"] = t["model.layers.1.mlp.down_proj.weight"][:, :10].copy()

    rewrite_tensors(d / "model.safetensors", shrink)
    with pytest.raises(CheckpointError, match=r"'model\.layers\.1\.mlp\.down_proj\.weight' has shape \[32, 10\], expected \[32, 24\]"):
        minigemma.load(d)


def test_unexpected_tensor_is_named(saved, tmp_path):
    d = copy_of(saved, tmp_path)
    rewrite_tensors(d / "model.safetensors", lambda t: t.update({"model.layers.0.mystery.weight": np.ones(3, np.float32)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'model\.layers\.0\.mystery\.weight'"):
        minigemma.load(d)


@pytest.mark.parametrize("keep", [4, 100, -1000])
def test_truncated_file_is_a_clear_error(saved, tmp_path, keep):
    d = copy_of(saved, tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: (truncated|corrupt)"):
        minigemma.load(d)


def test_corrupt_header_is_a_clear_error(saved, tmp_path):
    d = copy_of(saved, tmp_path)
    data = bytearray((d / "model.safetensors").read_bytes())
    data[8:12] = b"\xff\xfe{["
    (d / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        minigemma.load(d)


def test_missing_shard_is_named(saved, tmp_path):
    d = copy_of(saved, tmp_path)
    index = {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="names shard model-00002-of-00002.safetensors, which is missing"):
        minigemma.load(d)


@pytest.mark.parametrize(
    "ids, message",
    [
        ([1, 2, 128], r"input_ids: token id 128 outside the vocabulary \[0, 128\)"),
        ([1, -1, 3], r"input_ids: token id -1 outside the vocabulary"),
        ([], r"input_ids: empty input"),
        ([[]], r"input_ids: empty input"),
        ([1.0, 2.0], r"input_ids: expected integer token ids, found dtype float64"),
        ([True, False], r"input_ids: expected integer token ids, found dtype bool"),
        ([[[1]]], r"input_ids: expected shape \(seq,\) or \(batch, seq\), found \(1, 1, 1\)"),
        ([[1, 2], [3]], r"input_ids: expected a rectangular array of token ids"),
        ("hello", r"input_ids: expected integer token ids"),
    ],
)
def test_bad_token_ids(saved, ids, message):
    model = minigemma.load(saved)
    with pytest.raises(InputError, match=message):
        model.forward(ids)


def test_media_without_a_tower_is_an_input_error(saved):
    model = minigemma.load(saved)
    with pytest.raises(InputError, match="pixel_values: this checkpoint has no vision tower"):
        model.forward([1, 2], pixel_values=np.zeros((1, 4, 768), np.float32))


def test_cli_prints_one_line_and_exits_nonzero(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minigemma", "info", "--model", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("minigemma: error:")
    assert "no config.json found" in r.stderr and "Traceback" not in r.stderr

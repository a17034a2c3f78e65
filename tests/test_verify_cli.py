"""`minigemma trace` and `minigemma compare` end to end, as a user runs them: files and their
metadata, the reference side (`--reference`, and its error without torch), exit codes 0 / 1,
and every bad input ending in one line and exit status 2."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minigemma
from minigemma.cli import main
from minigemma.verify.trace import config_hash
from minigemma.verify.trace_file import load_trace, save_trace
from minigemma.generate.tokenizer import load_tokenizer
from tokenizer_fixtures import write_sentencepiece_tokenizer
from weights_tools.random_checkpoint import main as random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
IDS = [2, 15, 7, 100, 4, 9]
IDS_FLAG = ",".join(map(str, IDS))


def cli(*args, env=None):
    """Run `minigemma ARGS` in a fresh process; the worktree's minigemma comes first on the path."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-m", "minigemma", *map(str, args)], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random checkpoint with every text feature on (NumPy only, bf16)."""
    path = tmp_path_factory.mktemp("ckpt")
    assert random_checkpoint([str(path), "--preset", "tiny"]) == 0
    return path


@pytest.fixture(scope="module")
def traced(checkpoint, tmp_path_factory):
    """minigemma's trace of the checkpoint, written by the CLI as .safetensors and .npz."""
    out = tmp_path_factory.mktemp("traces")
    for suffix in ("safetensors", "npz"):
        r = cli("trace", "--model", checkpoint, "--ids", IDS_FLAG, "--out", out / f"ours.{suffix}")
        assert r.returncode == 0 and r.stdout == "", r.stderr
        assert f"of {len(IDS)} tokens" in r.stderr and f"ours.{suffix}" in r.stderr
    return out


@pytest.mark.parametrize("suffix", ["safetensors", "npz"])
def test_trace_writes_activations_and_metadata(checkpoint, traced, suffix):
    t = load_trace(str(traced / f"ours.{suffix}"))
    model = minigemma.load(checkpoint)
    expected = model.trace(IDS)
    assert list(t.activations) == list(expected)
    for name, value in expected.items():
        assert t.activations[name].dtype == value.dtype
        np.testing.assert_array_equal(t.activations[name], value, err_msg=name)
    assert t.metadata == {
        "format": "minigemma-trace/1",
        "source": f"minigemma {minigemma.__version__}",
        "minigemma_version": minigemma.__version__,
        "config_sha256": config_hash(model.config),
        "token_ids": IDS,
        "dtype": "float32",
        # the tiny preset: S S G S | S G, the last two KV-shared, each reading the last earlier layer of its type
        "kv_sources": {4: 3, 5: 2},
    }


def test_compare_agrees_then_names_a_divergence(traced, tmp_path):
    r = cli("compare", traced / "ours.npz", traced / "ours.safetensors")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    n = len(load_trace(str(traced / "ours.npz")).activations)
    assert lines[0].split() == ["name", "shape", "max", "abs", "max", "rel", "cosine", "result"]
    assert len(lines) == n + 2 and lines[-1] == f"all {n} activations agree (rtol 0.0001, atol 0.0001)"

    t = load_trace(str(traced / "ours.npz"))
    acts = dict(t.activations)
    acts["layers.3.attn.v"] = acts["layers.3.attn.v"] + np.float32(1e-3)  # outside the default 1e-4
    acts["layers.5.out"] = acts["layers.5.out"] * 2
    save_trace(str(tmp_path / "bad.npz"), acts, t.metadata)
    r = cli("compare", tmp_path / "bad.npz", traced / "ours.safetensors")
    assert r.returncode == 1
    assert r.stdout.splitlines()[-1].startswith("first divergence: layers.3.attn.v (max abs 0.001,")
    assert "2 of" in r.stdout.splitlines()[-1]
    r = cli("compare", tmp_path / "bad.npz", traced / "ours.safetensors", "--atol", "2e-3", "--names", "layers.3.*")
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith("all ")


def test_trace_reference_cli_matches_minigemma(checkpoint, traced, tmp_path):
    """`trace --reference` (in this process; docs/verify.md's tested example runs it in a fresh
    one): the reference loaded from the same directory, hooked; same names, same config hash;
    `compare` agrees at the default tolerance."""
    assert main(["trace", "--reference", "--model", str(checkpoint), "--ids", IDS_FLAG, "--out", str(tmp_path / "ref.safetensors")]) == 0
    ref, ours = load_trace(str(tmp_path / "ref.safetensors")), load_trace(str(traced / "ours.safetensors"))
    assert list(ref.activations) == list(ours.activations)
    assert ref.metadata["source"].startswith("transformers 5.23.0 (torch 2.13.0")
    assert ref.metadata["config_sha256"] == ours.metadata["config_sha256"]
    assert ref.metadata["token_ids"] == IDS
    r = cli("compare", traced / "ours.safetensors", tmp_path / "ref.safetensors")
    assert r.returncode == 0 and r.stderr == "", r.stdout[-2000:] + r.stderr


def test_trace_reference_without_torch_is_a_clear_error(checkpoint, tmp_path):
    fake = tmp_path / "no_torch"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    r = cli("trace", "--reference", "--model", checkpoint, "--ids", "1,2", "--out", tmp_path / "r.npz", env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "minigemma: error: --reference: needs torch and transformers, the test extra: "
        "pip install 'minigemma[test]' (No module named 'torch')"
    ]


def test_bad_trace_file_from_a_fresh_process(tmp_path, traced):
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    r = cli("compare", tmp_path / "bad.safetensors", traced / "ours.npz")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(f"minigemma: error: {tmp_path / 'bad.safetensors'}: corrupt safetensors header")
    assert len(r.stderr.splitlines()) == 1


def bad_inputs(checkpoint, traced, tmp):
    """(argv, expected error text) for every user mistake `trace` and `compare` must report."""
    ours = traced / "ours.npz"
    t = load_trace(str(ours))
    (tmp / "garbage.npz").write_bytes(b"PK\x03\x04 not a zip")
    (tmp / "short.safetensors").write_bytes(b"\x01\x02")
    save_trace(str(tmp / "other_ids.npz"), t.activations, dict(t.metadata, token_ids=[1, 2, 3]))
    save_trace(str(tmp / "fewer.npz"), {n: v for n, v in t.activations.items() if n != "logits"}, t.metadata)
    save_trace(str(tmp / "transposed.npz"), dict(t.activations, embed=t.activations["embed"].T), t.metadata)
    np.savez(tmp / "strings.npz", embed=np.array(["a", "b"]))
    np.savez(tmp / "bad_meta.npz", embed=np.zeros(2), __metadata__=np.array("{oops"))
    np.savez(tmp / "bad_ids.npz", embed=np.zeros(2), __metadata__=np.array('{"token_ids": "1,2"}'))
    np.savez(tmp / "empty.npz")
    trace = ["trace", "--model", str(checkpoint), "--out", str(tmp / "x.npz")]
    return [
        (["compare", str(tmp / "missing.npz"), str(ours)], f"{tmp / 'missing.npz'}: no such trace file"),
        (["compare", str(tmp / "t.txt"), str(ours)], "expected a .safetensors or .npz trace file, found '.txt'"),
        (["compare", str(tmp / "garbage.npz"), str(ours)], "garbage.npz: not a readable .npz file"),
        (["compare", str(tmp / "short.safetensors"), str(ours)], "short.safetensors: truncated (2 bytes"),
        (["compare", str(tmp / "other_ids.npz"), str(ours)], "trace different token ids: [1, 2, 3] vs [2, 15, 7"),
        (["compare", str(tmp / "fewer.npz"), str(ours)], "fewer.npz: missing 1 activation(s) that"),
        (["compare", str(tmp / "transposed.npz"), str(ours)], "embed: shape (64, 6) in"),
        (["compare", str(tmp / "strings.npz"), str(ours)], "strings.npz: activation 'embed' has dtype <U1"),
        (["compare", str(tmp / "bad_meta.npz"), str(ours)], "bad_meta.npz: __metadata__ is not JSON"),
        (["compare", str(tmp / "bad_ids.npz"), str(ours)], "metadata token_ids must be a JSON list of integers"),
        (["compare", str(tmp / "empty.npz"), str(ours)], "empty.npz: the trace holds no activations"),
        (["compare", str(ours), str(ours), "--atol", "-1"], "--atol: expected a tolerance >= 0, found -1.0"),
        (["compare", str(ours), str(ours), "--names", "vision.*"], "pattern 'vision.*' matches no activation"),
        (trace + ["--ids", "2", "--dtype", "bfloat16"], "--dtype bfloat16: minigemma computes in float32; the flag is for --reference"),
        (["compare", str(ours), str(ours), "--spread-factor", "-1"], "--spread-factor: expected a tolerance >= 0, found -1.0"),
        (trace + ["--ids", "2,x"], "--ids: expected comma-separated integers such as 2,15,7, found '2,x'"),
        (trace + ["--ids", "2,99999"], "--ids: token id 99999 outside the vocabulary [0, 512)"),
        (trace + ["--ids", "2", "--names", "layer.*"], "names: pattern 'layer.*' matches no activation"),
        (["trace", "--model", str(tmp / "nowhere"), "--ids", "2", "--out", str(tmp / "x.npz")], "nowhere"),
        (["trace", "--model", str(checkpoint), "--ids", "2", "--out", str(tmp / "x.pt")], "--out "),
        (["trace", "--model", str(checkpoint), "--ids", "2", "--out", str(tmp / "no" / "x.npz")], "cannot write"),
        (["trace", "--model", str(checkpoint), "--ids", "2", "--out", str(tmp / "no" / "x.safetensors")], "cannot write"),
    ]


def test_every_bad_input_is_one_line_and_status_2(checkpoint, traced, tmp_path, capsys):
    for argv, message in bad_inputs(checkpoint, traced, tmp_path):
        capsys.readouterr()
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("minigemma: error: ") and len(err.splitlines()) == 1, (argv, err)
        assert message in err, (argv, err)


def test_compare_notes_what_it_cannot_check(traced, tmp_path, capsys):
    t = load_trace(str(traced / "ours.npz"))
    np.savez(tmp_path / "bare.npz", **t.activations)  # another program's file: no metadata at all
    save_trace(str(tmp_path / "other.npz"), t.activations, dict(t.metadata, config_sha256="0" * 64))
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "bare.npz"), str(traced / "ours.npz")]) == 0
    assert capsys.readouterr().err == (
        f"note: {tmp_path / 'bare.npz'} has no token_ids metadata; cannot check that both traces ran the same input\n"
    )
    assert main(["compare", str(tmp_path / "other.npz"), str(traced / "ours.npz")]) == 0
    assert "come from different model configs (config_sha256 000000000000… vs" in capsys.readouterr().err


def test_trace_prompt_goes_through_the_checkpoints_tokenizer(checkpoint, tmp_path, capsys):
    """--prompt: the checkpoint's own tokenizer, <bos> in front as `generate` does; the text is
    kept in the metadata. Without a tokenizer in the directory, a one-line error."""
    model_dir = tmp_path / "with_tokenizer"
    model_dir.mkdir()
    for f in os.listdir(checkpoint):
        (model_dir / f).symlink_to(checkpoint / f)
    write_sentencepiece_tokenizer(str(model_dir), vocab_size=512)  # the tiny preset's vocabulary
    prompt = "The sliding window"
    assert main(["trace", "--model", str(model_dir), "--prompt", prompt, "--out", str(tmp_path / "p.npz")]) == 0
    t = load_trace(str(tmp_path / "p.npz"))
    tok = load_tokenizer(str(model_dir))
    assert t.token_ids == tok.encode(prompt, add_special_tokens=True) and t.token_ids[0] == tok.bos_id
    assert tok.decode(t.token_ids[1:]) == prompt and t.metadata["prompt"] == prompt
    np.testing.assert_array_equal(t.activations["logits"], minigemma.load(model_dir).forward(t.token_ids))
    capsys.readouterr()
    assert main(["trace", "--model", str(checkpoint), "--prompt", prompt, "--out", str(tmp_path / "q.npz")]) == 2
    assert capsys.readouterr().err.startswith(f"minigemma: error: {checkpoint}: no tokenizer (expected tokenizer.model")

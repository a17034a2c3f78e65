"""A smoke run of the benchmark command (tiny config, a few tokens; no timing is asserted): every
engine runs in its own process on the same reference-built weights (and a bf16 copy), the table
comes out, and minigemma with kernels, NumPy-only minigemma and transformers pick the same
greedy tokens."""

import json
import subprocess
import sys


def test_benchmark_smoke_run(tmp_path):
    args = ["--configs", "tiny", "--prompt", "8", "--new", "3", "--no-sweep", "--no-compile", "--bandwidth-gib", "0.01"]
    r = subprocess.run([sys.executable, "-m", "benchmarks.run", *args, "--weights", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in r.stdout.splitlines() if line.startswith("| tiny ")]
    engines = ["minigemma kernels", "minigemma NumPy-only", "transformers eager", "minigemma kernels, bf16 weights"]
    assert [row[1] for row in rows] == engines
    assert rows[2][5] == "1.00x"  # torch against itself
    assert "roofline" in r.stdout
    engines = json.loads((tmp_path / "results.json").read_text())["runs"]["tiny"]["engines"]
    tokens = {name: e["tokens"] for name, e in engines.items()}
    assert len(tokens["torch"]) == 3 and tokens["kernels"] == tokens["numpy"] == tokens["torch"]
    assert all(e["peak_rss"] > 0 and e["decode_tok_s"] > 0 for e in engines.values())
    assert len(engines["kernels-bf16"]["tokens"]) == 3  # other weights (rounded), so other tokens maybe


def test_benchmark_says_what_it_builds_and_cleans_up(monkeypatch, capsys):
    """Without --weights, the weights go to a fresh temporary directory, announced up front with
    their sizes, and removed at the end unless --keep."""
    import os

    from benchmarks import run

    made = []

    def fake_run(args):  # stands in for the engines: writes what a run writes
        made.append(args.weights)
        open(os.path.join(args.weights, "results.json"), "w").close()
        return 0

    monkeypatch.setattr(run, "run", fake_run)
    assert run.main(["--configs", "tiny", "small-e2b-like"]) == 0
    out = capsys.readouterr().out
    assert f"in {made[0]}; removed at the end" in out and "small-e2b-like (713.4M parameters: 2.85 GB float32" in out
    assert not os.path.exists(made[0])
    assert run.main(["--configs", "tiny", "--keep"]) == 0
    assert f"in {made[1]}; kept" in capsys.readouterr().out and os.path.exists(os.path.join(made[1], "results.json"))
    import shutil

    shutil.rmtree(made[1])


def test_attention_and_long_prompt_benchmarks_smoke_run(tmp_path):
    """The attention benchmark (kernel and twin on small shapes) and the long-prompt one (tiny
    config, minigemma in its own process) print their tables; torch's engines are the ones
    `test_benchmark_smoke_run` already runs."""
    args = ["--prefill", "64", "--decode", "300", "--repeats", "1", "--twin-max", "64", "--bandwidth-gib", "0.01", "--no-torch"]
    r = subprocess.run([sys.executable, "-m", "benchmarks.attention", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [line.split("|")[1].strip() for line in r.stdout.splitlines() if "|     64 |" in line] == ["global", "sliding"]
    assert any(line.startswith("|         300 |") for line in r.stdout.splitlines())
    args = ["--config", "tiny", "--prompts", "40", "--new", "2", "--engines", "kernels", "--time-limit", "300", "--weights", str(tmp_path)]
    r = subprocess.run([sys.executable, "-m", "benchmarks.long_prompt", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in r.stdout.splitlines() if line.startswith("|     40 ")]
    assert [row[1] for row in rows] == ["minigemma kernels"] and float(rows[0][4]) > 0 and rows[0][6] == "-"


def test_kv_cache_sizes_are_those_of_a_filled_cache():
    """`benchmarks.kv_cache` computes sizes from the layout: they equal the bytes of a real cache
    fed 1,300 tokens in chunks of 512 (ring buffers full, global buffers doubled), both dtypes."""
    import numpy as np

    from benchmarks.kv_cache import cache_bytes
    from minigemma.generate.cache import new_cache
    from minigemma.text.config import config_from_dict
    from weights_tools.random_checkpoint import PRESETS

    cfg = config_from_dict(dict(PRESETS["tiny"])).text
    for dtype in (np.float32, np.float16):
        cache, n = new_cache(cfg, dtype), 1300
        for start in range(0, n, 512):
            rows = min(512, n - start)
            for spec, layer in zip(cfg.layers, cache.layers):
                if layer is not None:
                    kv = np.zeros((rows, spec.num_kv_heads, spec.head_dim), np.float32)
                    layer.update(kv, kv, np.arange(start, start + rows))
        assert cache.nbytes == cache_bytes(cfg, n, dtype)


def test_gemv_benchmark_times_the_shapes_a_decode_step_multiplies(tmp_path, monkeypatch, capsys):
    """`benchmarks.gemv` lists exactly the weight shapes the kernels' `linear` gets one row for in
    a real decode step (recorded through `gemv_choice`), and its table says what that rule picks."""
    import numpy as np

    import minigemma
    import minigemma.kernels.linear as kernel_linear
    from benchmarks import gemv
    from weights_tools.random_checkpoint import PRESETS, write_random_checkpoint

    config = dict(PRESETS["tiny"])
    model = minigemma.load(write_random_checkpoint(str(tmp_path), config), kernels=True)
    cache = model.new_cache()
    model.extend(np.arange(3, 10), cache)
    seen, choose = set(), kernel_linear.gemv_choice
    monkeypatch.setattr(kernel_linear, "gemv_choice", lambda rows, shape, dtype: seen.add(tuple(shape)) or choose(rows, shape, dtype))
    model.extend(np.array([11]), cache)
    assert seen == set(gemv.decode_shapes(config))
    assert gemv.main(["--configs", "tiny", "--repeats", "1"]) == 0
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny")]
    assert len(rows) == len(gemv.decode_shapes(gemv.config_dicts(["tiny"])["tiny"]))
    for row in rows:
        shape = tuple(int(n) for n in row[1].split(" x "))
        assert row[6] == choose(1, shape, np.float32) and row[9] == choose(1, shape, np.uint16)


def test_real_sizes_benchmark_smoke_run(tmp_path):
    """`benchmarks.real_sizes` on toy sizes of the E2B and 26B-A4B layouts: each file written,
    loaded and decoded in its own process, a row each with its roofline, the files removed."""
    r = subprocess.run([sys.executable, "-m", "benchmarks.real_sizes", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--shapes" in r.stdout and "--keep" in r.stdout
    args = ["--shapes", "e2b-like", "a4b-like", "--prompt", "8", "--new", "3", "--bandwidth-gib", "0.01", "--dir", str(tmp_path)]
    r = subprocess.run([sys.executable, "-m", "benchmarks.real_sizes", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in r.stdout.splitlines()
            if line.startswith(("| e2b-like", "| a4b-like"))}
    assert set(rows) == {"e2b-like", "a4b-like"} and all(float(row[6]) > 0 and float(row[8]) > 0 for row in rows.values())  # decode, roofline
    result = json.loads(r.stdout.splitlines()[-1])["rows"]
    assert len(result["a4b-like"]["tokens"]) == 3 and "8 experts top-2, k_eq_v" in result["a4b-like"]["config"]
    assert list(tmp_path.iterdir()) == []  # deleted after their rows

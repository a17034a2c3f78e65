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

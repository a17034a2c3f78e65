"""A smoke run of `benchmarks/llama_cpp.py` on a small GGUF written by `minigemma quantize`. No
timing is asserted and no llama.cpp is built here: a stand-in `llama-bench` (given with
--llama-bin) answers in llama-bench's JSON format, so what runs for real is the plumbing around it
(each Python engine in its own process, peak RSS, the table, the ratios) and both Python engines,
which must pick the same greedy tokens from the same weights."""

import json
import subprocess
import sys

from gguf_write_fixtures import write_case

FAKE_LLAMA_BENCH = """#!{python}
import json, sys
a = sys.argv
print(json.dumps([{{"n_prompt": int(a[a.index("-p") + 1]), "n_gen": 0, "avg_ts": 400.0}},
                  {{"n_prompt": 0, "n_gen": int(a[a.index("-n") + 1]), "avg_ts": 40.0}}]))
"""


def test_benchmark_smoke_run(tmp_path):
    src = write_case("gemma4", tmp_path)
    gguf_file = tmp_path / "m.gguf"
    subprocess.run([sys.executable, "-m", "minigemma", "quantize", str(src), str(gguf_file), "--type", "F32"], check=True, capture_output=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bench = bin_dir / "llama-bench"
    bench.write_text(FAKE_LLAMA_BENCH.format(python=sys.executable))
    bench.chmod(0o755)
    args = ["--models", "", "--gguf", str(gguf_file), "--reference", str(src), "--llama-bin", str(bin_dir),
            "--prompt", "8", "--new", "3", "--repeats", "1", "--work", str(tmp_path / "work")]
    r = subprocess.run([sys.executable, "-m", "benchmarks.llama_cpp", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in r.stdout.splitlines() if line.startswith("| m.gguf ")]
    assert [row[1] for row in rows] == ["llama.cpp", "minigemma", "transformers"]
    assert rows[0][2:4] == ["400.0", "40.0"] and rows[0][5] == "1.00x" and rows[2][6] == "1.00x"
    results = json.loads((tmp_path / "work" / "llama_cpp_results.json").read_text())["rows"]
    engines = {row["engine"]: row for row in results}
    assert engines["minigemma"]["tokens"] == engines["transformers"]["tokens"]
    assert all(row["peak_rss"] > 0 and row["decode_tok_s"] > 0 for row in results)

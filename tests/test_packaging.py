"""The runtime stands without torch, the `info` command describes a checkpoint, and the NumPy-only
random checkpoint writer produces files the reference itself loads to the same logits."""

import json
import subprocess
import sys

import numpy as np
import torch
from gemma_reference import reference_logits
from transformers import Gemma4ForCausalLM

import minigemma
from weights_tools.random_checkpoint import PRESETS, expected_tensors, write_random_checkpoint


def test_import_minigemma_never_needs_torch(tmp_path):
    write_random_checkpoint(str(tmp_path), PRESETS["tiny"], dtype="BF16")
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import minigemma\n"
        f"m = minigemma.load({str(tmp_path)!r}); print(m.forward([1, 2, 3]).shape)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(3, 512)"


def test_numpy_written_bf16_checkpoint_loads_in_the_reference_with_equal_logits(tmp_path):
    write_random_checkpoint(str(tmp_path), PRESETS["tiny"], dtype="BF16", seed=4)
    ref = Gemma4ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager").eval()
    assert set(ref.state_dict()) - {"lm_head.weight"} <= set(expected_tensors(PRESETS["tiny"]))
    ids = np.arange(50) % 512  # longer than the tiny preset's window of 16
    np.testing.assert_allclose(minigemma.load(tmp_path).forward(ids), reference_logits(ref, ids), rtol=1e-4, atol=1e-4)


def test_info_describes_layers_sharing_and_memory(tmp_path):
    write_random_checkpoint(str(tmp_path), PRESETS["tiny"], dtype="BF16")
    r = subprocess.run([sys.executable, "-m", "minigemma", "info", "--model", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = minigemma.load(tmp_path).config.text
    pattern = "".join("G" if t == "full_attention" else "S" for t in cfg.layer_types)
    assert f"[{pattern}]" in r.stdout
    assert "[..PPRR]" in r.stdout  # producers and the two KV-shared layers of the tiny preset
    assert "memory-mapped" in r.stdout and json.loads((tmp_path / "config.json").read_text())["model_type"] in r.stdout


def test_help_on_every_command():
    r = subprocess.run([sys.executable, "-m", "minigemma", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    commands = [line.split()[0] for line in r.stdout.split("COMMAND")[-1].splitlines()[1:] if line.startswith("    ") and line.split()]
    assert "info" in commands
    for command in commands:
        sub = subprocess.run([sys.executable, "-m", "minigemma", command, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "usage: minigemma " + command in sub.stdout


def test_version_is_the_package_metadata_version():
    """`minigemma --version`, `minigemma.__version__` and pyproject.toml's version are one."""
    import tomllib
    from pathlib import Path

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    r = subprocess.run([sys.executable, "-m", "minigemma", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == f"minigemma {declared}\n" and minigemma.__version__ == declared


def test_every_package_directory_ships():
    """pyproject.toml lists its packages by name (the lessons live outside minigemma/ and install
    as minigemma.lessons): a new subpackage left off the list would be missing from `pip install .`."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = {setuptools["package-dir"].get(name, name.replace(".", "/")): name for name in setuptools["packages"]}
    for top in ("minigemma", "weights_tools", "lessons"):
        for init in (root / top).rglob("__init__.py"):
            package_dir = init.parent.relative_to(root).as_posix()
            assert package_dir in listed, f"{package_dir} is a package but pyproject.toml's packages leave it out"

"""The plumbing the lessons share: where figures go, the matplotlib backend, watching a function,
and the reference model for the closing checks.

Nothing here computes any part of Gemma 4: every feature a lesson shows is minigemma's own function,
imported from `minigemma/` (the reader test, `tests/test_lessons.py`, holds the lessons to that).

Figures are saved as PNG files in `$MINIGEMMA_LESSONS_OUT`, or `lessons-out/` in the current
directory when that is unset (`minigemma lessons N --out DIR` sets it). Run as a plain script, a
lesson draws with matplotlib's Agg backend (no window, nothing to close); opened as a notebook,
its figures also show inline.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

# One BLAS thread, set before NumPy loads (so a lesson imports this module first). This model's
# matrices are tiny: on a busy machine OpenBLAS's spinning threads make them 30 times slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The lessons step through minigemma's NumPy functions, the ones to read, and swap some of them
# out for a moment to see what they do; so the models they load run those, not the Numba
# kernels that are their faster twins.
os.environ["MINIGEMMA_KERNELS"] = "0"

import numpy as np  # noqa: E402

OUT_ENV = "MINIGEMMA_LESSONS_OUT"
DEFAULT_OUT = "lessons-out"
DPI = 110

try:
    import matplotlib
except ImportError:  # pragma: no cover - the lessons and test extras both install it
    raise SystemExit("the lessons draw figures with matplotlib: pip install 'minigemma[lessons]'") from None


def in_notebook() -> bool:
    return "ipykernel" in sys.modules


if not in_notebook() and "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")  # headless: draw into files only

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

np.set_printoptions(precision=3, suppress=True, linewidth=110)


def out_dir() -> Path:
    path = Path(os.environ.get(OUT_ENV) or DEFAULT_OUT)
    path.mkdir(parents=True, exist_ok=True)
    return path


def save(fig, name: str) -> Path:
    """Save `fig` as `<out>/<name>.png`; in a notebook it also shows inline."""
    path = out_dir() / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    print(f"figure: {path}")
    if not in_notebook():
        plt.close(fig)
    return path


@contextlib.contextmanager
def watch(module, name: str):
    """Record every call of `module.name` while the block runs: a list of (args, result).

    minigemma's features are plain functions, so this is its twin of a PyTorch forward hook: the
    function is wrapped for the duration of the block, then put back. Only calls that look the
    function up in `module` are seen (e.g. `watch(minigemma.text.layer, "apply_per_layer_input")`)."""
    original = getattr(module, name)
    calls = []

    def recording(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, result))
        return result

    setattr(module, name, recording)
    try:
        yield calls
    finally:
        setattr(module, name, original)


def heldout_text() -> str:
    """Python documentation the embedded model never saw in training (its held-out sample)."""
    from minigemma.model import default_model_path

    return (Path(default_model_path()) / "heldout_sample.txt").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------- the reference


def have_reference() -> bool:
    """True when the test extra (torch, transformers) is installed; otherwise say what is skipped."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        print(
            "reference check skipped: it needs the PyTorch reference (torch, transformers), which the "
            "test extra installs: pip install 'minigemma[test]'"
        )
        return False
    quiet_reference()
    return True


def quiet_reference() -> None:
    import torch
    from transformers.utils import logging

    torch.set_num_threads(1)  # tiny ops: more threads only spin-wait
    logging.disable_progress_bar()
    logging.set_verbosity_error()


@functools.cache
def reference_text_model():
    """`transformers.Gemma4ForCausalLM` reading the embedded model's own files, in float32."""
    import torch
    from transformers import Gemma4ForCausalLM

    from minigemma.model import default_model_path

    return Gemma4ForCausalLM.from_pretrained(default_model_path(), dtype=torch.float32, attn_implementation="eager").eval()


def to_numpy(t) -> np.ndarray:
    return t.detach().float().numpy()


def agree(what: str, ours, theirs, tol: float) -> None:
    """Assert ours == the reference's within `tol` (rtol = atol), and print the largest difference."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol, err_msg=what)
    if np.issubdtype(ours.dtype, np.floating):
        print(f"  {what}: equal to the reference (largest difference {np.max(np.abs(ours - theirs)):.1e}, tolerance {tol:g})")
    else:
        print(f"  {what}: identical to the reference")

"""Test set-up shared by every test file.

Hypothesis runs derandomised (the same examples every run, so CI is deterministic) with a bounded
number of examples; a failing example prints its inputs (and our tests print the config they
drew). Set HYPOTHESIS_PROFILE=thorough locally for a longer, randomised search.
"""

import os

# one BLAS thread for NumPy too (set before NumPy loads), for the same reason torch gets one below:
# on a busy machine OpenBLAS's spinning threads made the real 270M decode four times slower
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=10,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("ci"), derandomize=False, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

try:  # one torch thread: the reference models here are tiny, and on a busy machine OpenMP's
    # spin-waiting threads make such small ops a hundred times slower
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - the test extra always has torch
    pass

try:  # quiet the reference's progress bars and warnings
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
except ImportError:  # pragma: no cover
    pass

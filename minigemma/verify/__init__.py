"""Verifying a port: named activations, trace files, and where two traces first diverge.

Read in this order:

    trace.py        the stable names of every step of the forward pass, and the Recorder
    trace_file.py   traces as safetensors (or .npz) with metadata
    compare.py      two traces side by side: the first divergent step
    reference.py    the same names captured from transformers with forward hooks (needs torch;
                    imported only when asked for)
"""

from .compare import compare_traces
from .trace_file import load_trace, save_trace

__all__ = ["compare_traces", "load_trace", "save_trace"]

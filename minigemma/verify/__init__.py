"""Verifying a port: named activations, trace files, and where two traces first diverge.

Read in this order:

    trace.py        the stable names of every step of the forward pass, and the Recorder
    trace_file.py   traces as safetensors (or .npz) with metadata
    compare.py      two traces side by side: the first divergent step
    torch_adapter.py  any PyTorch port's modules hooked from a short table (name, module, point,
                    fix-up), and the table of transformers' module names; torch imported lazily
    reference.py    the same names captured from transformers with forward hooks (needs torch;
                    imported only when asked for)
    llama_cpp.py    llama.cpp's graph tensors (dumped by weights_tools/llama_dump) under these names
"""

from .compare import compare_traces
from .trace_file import load_trace, save_trace

__all__ = ["compare_traces", "load_trace", "save_trace"]

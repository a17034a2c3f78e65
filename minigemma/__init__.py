"""minigemma: a readable NumPy interpreter of Google's Gemma 4 model family.

    import minigemma
    model = minigemma.load("path/to/checkpoint")   # Hugging Face layout; no path: the embedded model
    logits = model.forward([2, 651, 6037])         # (seq,) -> (seq, vocab)
"""

from .errors import CheckpointError, ConfigError, InputError, MinigemmaError
from .loading import load
from .model import Model
from .version import __version__

__all__ = ["load", "Model", "ConfigError", "CheckpointError", "InputError", "MinigemmaError", "__version__"]

"""Where minigemma keeps what it makes for you: converted checkpoints and other caches.

    $MINIGEMMA_CACHE                     when set
    $XDG_CACHE_HOME/minigemma            else, when that is set
    ~/.cache/minigemma                   else

Nothing minigemma makes on its own lands in the current directory: a file goes there only when
you name it (an `--out` path, a conversion's OUT argument).
"""

from __future__ import annotations

import os

CACHE_ENV = "MINIGEMMA_CACHE"


def cache_dir(*parts: str) -> str:
    """The cache directory (not created), or a path inside it."""
    root = os.environ.get(CACHE_ENV)
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "minigemma")
    return os.path.join(root, *parts)

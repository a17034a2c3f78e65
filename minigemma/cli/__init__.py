"""The `minigemma` command line: one file per command group, read in this order.

    main.py       the parser, `main()`, one-line errors and exit codes
    common.py     what every command shares (--model, --kernels, exit codes)
    info.py       `minigemma info`
    generate.py   `minigemma generate`, `minigemma chat`
    verify.py     `minigemma trace`, `minigemma compare`
    lessons.py    `minigemma lessons`
    quantize.py   `minigemma quantize` (a checkpoint as a GGUF file)
"""

from .main import main

__all__ = ["main"]

"""The lessons: Gemma 4 one feature at a time, on the embedded trained model.

Numbered percent-format scripts (`# %%` cells, `# %% [markdown]` for text): run one with
`minigemma lessons N` or `python lessons/NN_name.py`, or open it as a notebook (VS Code, or
Jupyter with jupytext). In an installed minigemma this folder is `minigemma/lessons`.
"""

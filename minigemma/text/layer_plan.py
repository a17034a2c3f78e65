"""The layer plan: how the layers of one Gemma 4 model differ from each other.

A Gemma 4 config states a handful of numbers; the shape of every layer is *derived* from them,
exactly as `Gemma4TextConfig.__post_init__` and `.kv_sharing_modes` derive it in the reference
(`transformers/models/gemma4/configuration_gemma4.py`):

* **layer types**: by default five sliding-window layers, then one global layer (5:1); E2B
  states its own 4:1 list. Whatever the list, the last layer is forced to be global, so the final
  hidden state has seen the whole context;
* **attention shape per layer**: global layers use `global_head_dim` (default 512, twice the
  sliding layers' 256) and, only when `attention_k_eq_v` is set, `num_global_key_value_heads`.
  `save_pretrained` writes the result as a sparse `per_layer_config` instead;
* **KV sharing**: the last `num_kv_shared_layers` layers compute no keys/values; each reuses those
  of the last earlier layer of its own type (that producer is marked `store`);
* **RoPE per layer type**: `default` (theta 10k) on sliding layers, `proportional` partial-rotary
  (theta 1M, a quarter of the pairs) on global layers.
"""

from __future__ import annotations

from ..weights.config_reader import is_int, is_number
from ..errors import ConfigError

SLIDING = "sliding_attention"
GLOBAL = "full_attention"
LAYER_TYPES = (SLIDING, GLOBAL)
DEFAULT_SLIDING_WINDOW_PATTERN = 6  # five sliding layers, then one global: the 5:1 pattern
DEFAULT_GLOBAL_HEAD_DIM = 512
DEFAULT_ROPE = {
    SLIDING: {"rope_type": "default", "rope_theta": 10_000.0},
    GLOBAL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}
ROPE_TYPES = ("default", "proportional", "linear")
PER_LAYER_OVERRIDES = ("head_dim", "num_key_value_heads")  # what the reference reads per layer


def layer_types(value, n_layers: int, where: str, pattern: int = DEFAULT_SLIDING_WINDOW_PATTERN, last_global: bool = True) -> list[str]:
    """The type of every layer: the stated list, or `pattern - 1` sliding layers then one global.
    `last_global`: Gemma 4 forces the last layer global; Gemma 3 keeps whatever the list says."""
    if value is None:
        types = [SLIDING if (i + 1) % pattern else GLOBAL for i in range(n_layers)]
    else:
        if not isinstance(value, list | tuple) or len(value) != n_layers:
            found = len(value) if isinstance(value, list | tuple) else repr(value)
            raise ConfigError(f"{where}layer_types: expected a list of {n_layers} entries (num_hidden_layers), found {found}")
        bad = [t for t in value if t not in LAYER_TYPES]
        if bad:
            raise ConfigError(f"{where}layer_types: expected entries in {LAYER_TYPES}, found {bad[0]!r}")
        types = list(value)
    if last_global:
        types[-1] = GLOBAL  # Gemma 4: the last layer always attends to the whole context
    return types


def rope_params(value, layer_types: list[str], where: str) -> dict:
    value = DEFAULT_ROPE if value is None else value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}rope_parameters: expected an object keyed by layer type, found {value!r}")
    rope = {}
    for layer_type in sorted(set(layer_types)):
        p = value.get(layer_type)
        name = f"{where}rope_parameters.{layer_type}"
        if not isinstance(p, dict):
            raise ConfigError(f"{name}: expected an object with rope_type and rope_theta, found {p!r}")
        rope_type = p.get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            raise ConfigError(f"{name}.rope_type: expected one of {ROPE_TYPES}, found {rope_type!r}")
        theta = p.get("rope_theta")
        if not is_number(theta) or theta <= 0:
            raise ConfigError(f"{name}.rope_theta: expected a positive number, found {theta!r}")
        partial = p.get("partial_rotary_factor", 1.0) if rope_type == "proportional" else 1.0
        factor = p.get("factor", 1.0) if rope_type in ("proportional", "linear") else 1.0
        if not is_number(partial) or not 0 <= partial <= 1:
            raise ConfigError(f"{name}.partial_rotary_factor: expected a number in [0, 1], found {partial!r}")
        if not is_number(factor) or factor <= 0:
            raise ConfigError(f"{name}.factor: expected a positive number, found {factor!r}")
        rope[layer_type] = (rope_type, float(theta), float(partial), float(factor))
    return rope


def attention_shapes(raw: dict, c: dict, layer_types: list[str], where: str):
    """Head dim and KV heads of every layer: the global value, overridden per layer.

    Published dialect: `global_head_dim` (default 512) for every global layer, and
    `num_global_key_value_heads` too, but only when `attention_k_eq_v` is set.
    `save_pretrained` dialect: an explicit, sparse `per_layer_config` (it wins when present)."""
    n = len(layer_types)
    if "per_layer_config" in raw and raw["per_layer_config"] is not None:
        plc = raw["per_layer_config"]
        if not isinstance(plc, dict):
            raise ConfigError(f"{where}per_layer_config: expected an object keyed by layer index, found {plc!r}")
        overrides = {}
        for key, value in plc.items():
            try:
                idx = int(key)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}per_layer_config: expected integer layer indices, found {key!r}") from None
            if not 0 <= idx < n:
                raise ConfigError(f"{where}per_layer_config: layer index {idx} outside [0, {n})")
            if not isinstance(value, dict):
                raise ConfigError(f"{where}per_layer_config.{key}: expected an object, found {value!r}")
            unknown = sorted(set(value) - set(PER_LAYER_OVERRIDES))
            if unknown:
                raise ConfigError(
                    f"{where}per_layer_config.{key}: minigemma supports overriding {PER_LAYER_OVERRIDES}, found {unknown}"
                )
            overrides[idx] = value
    else:
        global_head_dim = raw.get("global_head_dim", DEFAULT_GLOBAL_HEAD_DIM)
        global_kv = raw.get("num_global_key_value_heads")
        layer_override = {"head_dim": global_head_dim}
        if c["attention_k_eq_v"] and global_kv is not None:
            layer_override["num_key_value_heads"] = global_kv
        overrides = {i: layer_override for i, t in enumerate(layer_types) if t == GLOBAL}

    head_dims, kv_heads = [], []
    for i in range(n):
        o = overrides.get(i, {})
        head_dims.append(o.get("head_dim", c["head_dim"]))
        kv_heads.append(o.get("num_key_value_heads", c["num_key_value_heads"]))
        for name, v in (("head_dim", head_dims[-1]), ("num_key_value_heads", kv_heads[-1])):
            if not is_int(v) or v <= 0:
                raise ConfigError(f"{where}{name}: layer {i} needs a positive integer, found {v!r}")
    return head_dims, kv_heads


def kv_sharing(layer_types: list[str], n_shared: int, where: str):
    """`Gemma4TextConfig.kv_sharing_modes`: the last `n_shared` layers reuse the keys/values of the
    last non-shared layer of their own type, which stores them."""
    n = len(layer_types)
    modes: list[str | None] = [None] * n
    producers: list[int | None] = [None] * n
    if n_shared == 0:
        return modes, producers
    first_shared = n - n_shared
    unshared = layer_types[:first_shared]
    if set(unshared) != set(layer_types):
        missing = sorted(set(layer_types) - set(unshared))
        raise ConfigError(
            f"{where}num_kv_shared_layers: {n_shared} shared layers leave no earlier {missing[0]} layer to "
            "produce their keys/values"
        )
    last_of_type = {t: max(i for i, u in enumerate(unshared) if u == t) for t in set(layer_types)}
    for i in range(first_shared, n):
        modes[i] = "reuse"
        producers[i] = last_of_type[layer_types[i]]
    for producer in last_of_type.values():
        modes[producer] = "store"
    return modes, producers

"""Audio speed at the released towers' size, as a table (run by hand; not a test).

    python -m weights_tools.bench_audio [--seconds 1 5 30]

Builds the E2B / E4B audio tower (the `Gemma4AudioConfig` defaults: 12 conformer layers of width
1024, about 305M parameters) with random weights, then times, per clip length: log-mel
features, the subsampling convs, the conformer layers, and the soft tokens that come out.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from minigemma.audio.tower import audio_forward, load_audio
from minigemma.audio.config import audio_config_from_dict
from minigemma.audio.features import FeatureConfig, extract_features
from weights_tools.random_checkpoint import RandomWeights


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m weights_tools.bench_audio", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, nargs="+", default=[1.0, 5.0, 30.0], help="clip lengths")
    args = p.parse_args(argv)
    cfg, features_cfg = audio_config_from_dict({}), FeatureConfig()
    source = RandomWeights()
    start = time.perf_counter()
    weights = load_audio(source, "audio_tower", cfg)
    print(f"audio tower: {cfg.num_hidden_layers} layers x {cfg.hidden_size}, {sum(t.size for t in source.tensors.values()) / 1e6:.0f}M parameters "
          f"(random, made in {time.perf_counter() - start:.1f} s)")
    print(f"{'clip s':>7} {'features s':>11} {'subsample s':>12} {'layers s':>9} {'soft tokens':>12} {'x real time':>12}")
    for seconds in args.seconds:
        clip = np.random.default_rng(1).uniform(-0.5, 0.5, int(seconds * features_cfg.sampling_rate)).astype(np.float32)
        t0 = time.perf_counter()
        features, mask = extract_features([clip], features_cfg)
        t1 = time.perf_counter()
        marks = {}
        out, out_mask = audio_forward(features, mask, weights, cfg, tap=lambda name, _: marks.setdefault(name, time.perf_counter()))
        t2 = time.perf_counter()
        sub = marks["audio.subsample"] - t1
        print(f"{seconds:>7g} {t1 - t0:>11.3f} {sub:>12.3f} {t2 - t1 - sub:>9.3f} {int(out_mask.sum()):>12} "
              f"{seconds / (t2 - t0):>12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

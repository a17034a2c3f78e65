"""Tools around minigemma's weights: making, converting and training checkpoints.

These may use heavier dependencies than the runtime (the reference, `gguf`), each named in
its own module; `import minigemma` never needs them."""

"""The encoder-free Gemma 4 12B "unified" model (`transformers/models/gemma4_unified/`).

No vision tower, no audio tower: pixels and samples go straight into the text model's space.

    config.py   `Gemma4UnifiedConfig`: the text decoder's config (Gemma 4's, without PLE / MoE,
                window 1024), the vision and audio embedders' configs
    vision.py   `Gemma4UnifiedVisionEmbedder`: merged 48x48 patches -> LayerNorm -> Dense ->
                LayerNorm -> + factorised 2-D position embedding -> LayerNorm -> RMSNorm -> Linear
    audio.py    `Gemma4UnifiedAudioFeatureExtractor` + `embed_audio`: raw 640-sample frames ->
                RMSNorm -> Linear, padding frames dropped
    image.py    `Gemma4UnifiedImageProcessor`: resize to the budget, 16-pixel patches merged k x k
                (`patches_merge`), padded
The text decoder is minigemma's own (`text/`), unchanged: what differs is only configuration.
"""

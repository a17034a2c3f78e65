"""The vision tower of Gemma 4 (a SigLIP-style encoder), from image (or video) file to soft tokens.

Read in the order an image goes through it:

    image.py           preprocessing: aspect-ratio resize to a soft-token budget, patches, positions
    config.py          vision_config
    tower.py           patch embedder with the 2-D position table, the encoder, k x k pooling,
                       standardize, and the embedder into the text model's width
    encoder.py         encoder layers with axial 2-D RoPE
    clipped_linear.py  linears with clamped inputs and outputs (the audio tower uses them too)
    prompt.py          the image marks of the tokenizer, and preprocessing for a loaded model
    video.py           videos: reading (GIF, frame folder, MP4/WebM with PyAV), frame sampling,
                       mm:ss timestamps, the marks' expansion; each frame preprocessed as an image
"""

from .image import preprocess

__all__ = ["preprocess"]

"""Video in a prompt: frames read, sampled, and written into the prompt with their timestamps
(mirrors `Gemma4VideoProcessor` / `Gemma4UnifiedVideoProcessor`, `video_utils.default_sample_indices_fn`,
`VideoMetadata.timestamps` and `Gemma4Processor.replace_video_token`).

Gemma 4 has no video encoder: a video is a handful of still frames, each seen as an image at a
small budget (70 soft tokens instead of 280), each preceded in the prompt by its time:

    <|video|>  ->  "00:00 <|image><|video|> x n<image|> 00:02 <|image><|video|> x n<image|> ..."

(frames joined by spaces; n = soft tokens per frame; the placeholders are the video token, so the
frames' soft tokens land there, and each frame is its own bidirectional block).

Sampling: `num_frames` (32) frames spread evenly, frame i of n at index i * total // n; or, with
`fps`, total / video_fps * fps frames (at least one). A frame's timestamp is its index / the video's
fps, written `mm:ss`; a video with no known fps is taken at 24 fps, as the processor does.
One difference from the reference, on purpose: the reference refuses a video with fewer frames
than `num_frames`; minigemma then takes every frame (what the reference gives with
`num_frames=total`).

Reading (`read_video`): an animated GIF (or any multi-frame image Pillow reads: APNG, WebP, TIFF)
with its frame durations as fps, or a folder of frames (sorted by name, fps unknown), through
Pillow with no new dependency; MP4 / WebM / MKV / MOV through PyAV when the optional extra is
installed (`pip install minigemma[video]`), which is FFmpeg's decoders behind a small, well-kept
package with wheels for every platform, the backend transformers' own `load_video` offers too.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from ..errors import InputError
from ..text.multimodal import expand_marks
from .image import to_rgb

DEFAULT_NUM_FRAMES = 32  # `Gemma4VideoProcessor.num_frames`
VIDEO_SOFT_TOKENS = 70  # `Gemma4VideoProcessor.max_soft_tokens`: a frame's budget
DEFAULT_FPS = 24  # what `replace_video_token` assumes when the video's fps is unknown
CONTAINER_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v")
MS_PER_SECOND = 1000


@dataclass(frozen=True)
class Video:
    """Decoded frames (frames, height, width, 3) uint8, at `fps` frames per second (None: unknown)."""

    frames: np.ndarray
    fps: float | None = None
    path: str | None = None

    @property
    def name(self) -> str:
        return f"video {self.path}" if self.path else "video"


def as_video(video, index: int = 0) -> Video:
    """A path (GIF, folder of frames, video file), a `Video`, or frames (n, h, w, 3) uint8 /
    a list of Pillow images or arrays -> a `Video`, checked."""
    if isinstance(video, Video):
        v = video
    elif isinstance(video, str | os.PathLike):
        v = read_video(video)
    elif isinstance(video, list | tuple | np.ndarray):
        try:
            frames = np.stack([to_rgb(f) if isinstance(f, Image.Image) else np.asarray(f) for f in video]) if len(video) else np.zeros((0,))
        except ValueError as e:
            raise InputError(f"video {index}: frames must all have one shape ({e})") from None
        v = Video(frames)
    else:
        raise InputError(f"video {index}: expected a path, a Video or a list of frames, found {type(video).__name__}")
    f = v.frames
    if f.ndim != 4 or f.shape[0] == 0 or f.shape[-1] != 3 or f.dtype != np.uint8 or 0 in f.shape:
        raise InputError(f"{v.name}: expected frames of shape (frames >= 1, height, width, 3) uint8, found {f.dtype} {f.shape}")
    if v.fps is not None and not (math.isfinite(v.fps) and v.fps > 0):
        raise InputError(f"{v.name}: expected a positive frame rate, found {v.fps!r}")
    return v


def read_video(path: str | os.PathLike) -> Video:
    """Decode every frame of a video file or a folder of frames, or raise an InputError naming it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return read_frame_folder(path)
    if path.lower().endswith(CONTAINER_SUFFIXES):
        return read_container(path)
    return read_animation(path)


def read_animation(path: str) -> Video:
    """An animated GIF (APNG, WebP, ...) through Pillow; fps from the frame durations."""
    try:
        with Image.open(path) as im:
            frames, durations = [], []
            for frame in ImageSequence.Iterator(im):
                durations.append(frame.info.get("duration"))
                frames.append(to_rgb(frame.copy()))
    except (OSError, UnidentifiedImageError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot read a video from this file ({e})") from None
    if not frames:
        raise InputError(f"{path}: the file holds no frames")
    if len({f.shape for f in frames}) > 1:
        raise InputError(f"{path}: frames of different sizes {sorted({f.shape for f in frames})}")
    known = [d for d in durations if isinstance(d, int | float) and d > 0]
    fps = len(known) * MS_PER_SECOND / sum(known) if len(known) == len(frames) else None
    return Video(np.stack(frames), fps, path)


def read_frame_folder(path: str) -> Video:
    """Every image file of a folder, in name order, as one frame each (fps unknown)."""
    names = sorted(n for n in os.listdir(path) if not n.startswith("."))
    frames = []
    for n in names:
        try:
            with Image.open(os.path.join(path, n)) as im:
                im.load()
                frames.append(to_rgb(im))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            raise InputError(f"{os.path.join(path, n)}: cannot read a frame from this file ({e})") from None
    if not frames:
        raise InputError(f"{path}: the folder holds no frames")
    if len({f.shape for f in frames}) > 1:
        raise InputError(f"{path}: frames of different sizes {sorted({f.shape for f in frames})}")
    return Video(np.stack(frames), None, path)


def read_container(path: str) -> Video:
    """MP4 / WebM / ... through PyAV (the optional `video` extra)."""
    try:
        import av
    except ImportError:
        raise InputError(
            f"{path}: reading {os.path.splitext(path)[1]} files needs PyAV: pip install 'minigemma[video]' "
            "(or give an animated GIF or a folder of frames)"
        ) from None
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, IndexError, OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read a video from this file ({e})") from None
    if not frames:
        raise InputError(f"{path}: the file holds no frames")
    return Video(np.stack(frames), float(rate) if rate else None, path)


def sample_indices(total: int, num_frames: int | None = DEFAULT_NUM_FRAMES, fps: float | None = None,
                   video_fps: float | None = None, name: str = "video") -> np.ndarray:
    """Which frames to keep (`default_sample_indices_fn`): `num_frames` evenly spread, frame i at
    i * total // num_frames; with `fps` (and `num_frames=None`), total / video_fps * fps of them."""
    if fps is not None and num_frames is not None:
        raise InputError(f"{name}: num_frames and fps are mutually exclusive, found both ({num_frames}, {fps})")
    if fps is not None:
        if video_fps is None:
            raise InputError(f"{name}: sampling at fps={fps} needs the video's own frame rate, which it does not say")
        num_frames = max(1, int(total / video_fps * fps))
    if num_frames is None:
        return np.arange(total)
    if num_frames < 1:
        raise InputError(f"{name}: num_frames: expected a positive integer, found {num_frames}")
    num_frames = min(num_frames, total)  # the reference raises here; every frame is what it takes with num_frames=total
    return np.arange(num_frames, dtype=np.int64) * total // num_frames


def timestamps(indices, fps: float | None) -> list[float]:
    """Seconds of each sampled frame (`VideoMetadata.timestamps`; unknown fps: 24)."""
    fps = DEFAULT_FPS if fps is None else fps
    return [int(i) / fps for i in indices]


def mmss(seconds: float) -> str:
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def video_text(seconds: list[float], soft_tokens: int, boi: str, video_token: str, eoi: str) -> str:
    """What one video mark becomes (`replace_video_token`): each frame's mm:ss, then its placeholders."""
    return " ".join(f"{mmss(t)} {boi}{video_token * soft_tokens}{eoi}" for t in seconds)


def expand_video_marks(text: str, expansions: list[str], video_token: str, separator: str = "\n\n") -> str:
    """Each video mark of `text` becomes its video's expansion, in order; a text without marks
    gets its videos in front."""
    return expand_marks(text, expansions, video_token, "video", separator)


@dataclass(frozen=True)
class VideoInputs:
    """What the video processor hands the model, named as the reference's forward takes them,
    plus what the prompt needs (soft tokens per frame, timestamps)."""

    pixel_values_videos: np.ndarray  # (frames of all videos, patches, patch pixels) float32
    video_position_ids: np.ndarray  # (frames of all videos, patches, 2) int64; (-1, -1) padding
    num_frames_per_video: list[int]
    num_soft_tokens_per_video: list[int]  # soft tokens of each of its frames
    timestamps: list[list[float]]  # seconds of each sampled frame, per video

    def model_inputs(self) -> dict:
        return dict(pixel_values_videos=self.pixel_values_videos, video_position_ids=self.video_position_ids,
                    num_frames_per_video=self.num_frames_per_video)


def preprocess_videos(videos, preprocess_frames, num_frames: int | None = DEFAULT_NUM_FRAMES, fps: float | None = None) -> VideoInputs:
    """Videos -> frames sampled, each preprocessed as a still (`preprocess_frames(list of frames)`
    returns pixel_values, image_position_ids, num_soft_tokens_per_image for them)."""
    if isinstance(videos, str | os.PathLike | Video) or isinstance(videos, np.ndarray) and videos.ndim == 4:
        videos = [videos]
    if len(videos) == 0:
        raise InputError("videos: expected at least one video, found none")
    pixels, positions, counts, tokens, seconds = [], [], [], [], []
    for i, video in enumerate(videos):
        v = as_video(video, i)
        idx = sample_indices(len(v.frames), num_frames, fps, v.fps, v.name)
        inputs = preprocess_frames(list(v.frames[idx]))
        pixels.append(inputs.pixel_values)
        positions.append(inputs.image_position_ids)
        counts.append(len(idx))
        tokens.append(inputs.num_soft_tokens_per_image[0])  # one size for every frame of a video
        seconds.append(timestamps(idx, v.fps))
    return VideoInputs(np.concatenate(pixels), np.concatenate(positions), counts, tokens, seconds)

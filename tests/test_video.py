"""Video for Gemma 4 and the unified model, against the reference:

* frame sampling and timestamps: `transformers.video_utils.default_sample_indices_fn` and
  `VideoMetadata.timestamps` themselves, on drawn frame counts, `num_frames`, `fps` and video fps;
* frames: `Gemma4VideoProcessor._preprocess` step by step with its own functions
  (`get_aspect_ratio_preserving_size`, `convert_video_to_patches`, `pad_to_max_patches`; the
  unified one's through `patches_merge`), 0.0 difference. The video processors are torchvision
  classes, which do not load beside torch 2.13.0: their resize (torchvision's) is Pillow's bicubic
  on both sides, and their rescale the fused normalisation by std 255 they do;
* prompts: `Gemma4Processor` / `Gemma4UnifiedProcessor.__call__` with their own
  `replace_video_token` (mm:ss timestamps), given a stand-in for the video processor that returns
  the frames above and the reference sampling's metadata: token ids equal;
* logits of a Gemma 4 model and of a unified model with a short video (and an image beside it) at
  1e-4; greedy generation with a video identical to the reference's `generate`;
* reading: an animated GIF (frames, fps from durations), a folder of frames; bad input (unreadable
  file, no frames, a video for a model without vision, mutated GIF bytes) -> one InputError line.
"""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from gemma_reference import make_text_config, randomize
from hypothesis import given, note, settings
from hypothesis import strategies as st
from PIL import Image
from test_generate_reference import our_steps
from test_unified_preprocess import reference_preprocess
from tokenizer_fixtures import write_bpe_tokenizer
from unified_reference import reference_functions, reference_unified_model

import minigemma
from minigemma.errors import InputError
from minigemma.generate.media_prompt import processor_inputs, prompt_with_media
from minigemma.generate.tokenizer import load_tokenizer
from minigemma.verify.trace import SECTIONS, order_key
from minigemma.vision.video import Video, as_video, read_video, sample_indices, timestamps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V = reference_functions("transformers.models.gemma4.video_processing_gemma4")
FRAME_BUDGET, NEW_TOKENS = 70, 8
PROMPT = "Watch <mask> then say"  # the test tokenizer has no <|video|>: its <mask> is the video token here


@given(st.integers(1, 400), st.one_of(st.integers(1, 64).map(lambda n: ("frames", n)),
                                      st.floats(0.1, 8).map(lambda f: ("fps", f))),
       st.one_of(st.none(), st.floats(1, 60)))
def test_sampling_and_timestamps_equal_reference(total, how, video_fps):
    from transformers.video_utils import VideoMetadata, default_sample_indices_fn

    kind, value = how
    num_frames, fps = (value, None) if kind == "frames" else (None, value)
    if fps is not None and video_fps is None:
        with pytest.raises(InputError, match="needs the video's own frame rate"):
            sample_indices(total, num_frames, fps, video_fps)
        return
    ours = sample_indices(total, num_frames, fps, video_fps)
    wanted = num_frames if fps is None else max(1, int(total / video_fps * fps))
    meta = VideoMetadata(total_num_frames=total, fps=video_fps)
    if wanted > total:  # the reference refuses; minigemma takes every frame, as the reference does when asked for them all
        with pytest.raises(ValueError):
            default_sample_indices_fn(meta, num_frames=num_frames, fps=fps)
        expected = default_sample_indices_fn(meta, num_frames=total)
    else:
        expected = default_sample_indices_fn(meta, num_frames=num_frames, fps=fps)
    np.testing.assert_array_equal(ours, expected)
    meta.fps = 24 if meta.fps is None else meta.fps  # as `replace_video_token` does before reading them
    meta.frames_indices = expected
    assert timestamps(ours, video_fps) == meta.timestamps


def reference_gemma4_frames(frames: np.ndarray, budget: int, patch: int, k: int):
    """`Gemma4VideoProcessor._preprocess` for one video (resize: Pillow's bicubic)."""
    n, height, width = frames.shape[:3]
    max_patches = budget * k**2
    h, w = V.get_aspect_ratio_preserving_size(height, width, patch, max_patches, k)
    if (h, w) != (height, width):
        frames = np.stack([np.array(Image.fromarray(f).resize((w, h), resample=Image.Resampling.BICUBIC)) for f in frames])
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)  # normalise, std 255 (fused rescale)
    patches = V.convert_video_to_patches(video, patch)
    grid = torch.meshgrid(torch.arange(w // patch), torch.arange(h // patch), indexing="xy")
    positions = torch.stack(grid, dim=-1).reshape(patches.shape[1], 2)[None].repeat(n, 1, 1)
    soft = patches.shape[1] // k**2
    patches, positions = V.pad_to_max_patches(patches, positions, max_patches)
    return patches.numpy(), positions.numpy(), soft


def reference_unified_frames(frames: np.ndarray, budget: int, patch: int, k: int):
    done = [reference_preprocess(f, budget, patch, k, video=True) for f in frames]
    return np.stack([p for p, _, _ in done]), np.stack([q for _, q, _ in done]), done[0][2]


class VideosAsTheReferenceDoes:
    """Stands in for the video processor (a torchvision class): sampling by the reference's own
    `default_sample_indices_fn`, frames by the reference steps above, metadata as it returns it."""

    def __init__(self, unified: bool, patch: int, k: int, fps: list):
        self.unified, self.patch, self.k, self.fps = unified, patch, k, fps

    def __call__(self, videos, **kwargs):
        from transformers.image_processing_utils import BatchFeature
        from transformers.video_utils import VideoMetadata, default_sample_indices_fn

        out = dict(pixel_values_videos=[], video_position_ids=[], num_frames_per_video=[], num_soft_tokens_per_video=[],
                   video_metadata=[])
        for video, fps in zip(videos, self.fps):
            meta = VideoMetadata(total_num_frames=len(video), fps=fps)
            meta.frames_indices = default_sample_indices_fn(meta, num_frames=min(32, len(video)))
            frames = (reference_unified_frames if self.unified else reference_gemma4_frames)(
                video[meta.frames_indices], FRAME_BUDGET, self.patch, self.k)
            for key, value in zip(("pixel_values_videos", "video_position_ids"), frames[:2]):
                out[key].append(value)
            out["num_frames_per_video"].append(len(meta.frames_indices))
            out["num_soft_tokens_per_video"].append(frames[2])
            out["video_metadata"].append(meta)
        out["pixel_values_videos"] = np.concatenate(out["pixel_values_videos"])
        out["video_position_ids"] = np.concatenate(out["video_position_ids"])
        return BatchFeature(out)


TEXT = dict(
    hidden_size=32, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
    head_dim=8, global_head_dim=16, sliding_window=6, final_logit_softcapping=30.0, use_bidirectional_attention="vision",
    layer_types=["sliding_attention", "sliding_attention", "full_attention"],
)
VISION = dict(
    hidden_size=24, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
    head_dim=8, patch_size=2, pooling_kernel_size=3, position_embedding_size=64, use_clipped_linears=True,
    standardize=True,
)
UNIFIED_VISION = dict(patch_size=2, pooling_kernel_size=3, mm_embed_dim=20, output_proj_dims=20, mm_posemb_size=80)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A Gemma 4 model with a vision tower and a unified model, each saved beside a Gemma 4-shaped
    tokenizer; two short videos (9 frames at 12 fps, 40 frames at unknown fps: more than 32)."""
    from transformers import Gemma4Config, Gemma4ForConditionalGeneration

    out = {}
    for kind in ("gemma4", "unified"):
        d = write_bpe_tokenizer(str(tmp_path_factory.mktemp(f"video_{kind}")))
        tok = load_tokenizer(d)
        ids = {f"{name}_token_id": tok.token_id(f"{name}_token") for name in ("image", "boi", "eoi", "audio")}
        ids["video_token_id"] = tok.token_id("mask_token")
        text = dict(TEXT, vocab_size=tok.vocab_size, pad_token_id=tok.token_id("pad_token"), bos_token_id=tok.bos_id,
                    eos_token_id=None)
        if kind == "gemma4":
            cfg = Gemma4Config(text_config=make_text_config(dict(text, hidden_size_per_layer_input=0)).to_dict(),
                               vision_config=VISION, audio_config=None, **ids)
            for c in (cfg, cfg.text_config, cfg.vision_config):
                c._attn_implementation = "eager"
            ref = randomize(Gemma4ForConditionalGeneration(cfg), seed=31).eval()
        else:
            ref = reference_unified_model(text, UNIFIED_VISION, None, seed=32, tokens=ids)
        ref.save_pretrained(d)
        out[kind] = (ref, minigemma.load(d))
    rng = np.random.default_rng(7)
    videos = [Video(rng.integers(0, 256, (9, 20, 33, 3), dtype=np.uint8), 12.0), Video(rng.integers(0, 256, (40, 14, 10, 3), dtype=np.uint8))]
    return out, videos


def reference_processor(model, unified: bool, videos):
    from transformers import AutoTokenizer, Gemma4Processor, Gemma4UnifiedProcessor

    tok = AutoTokenizer.from_pretrained(model.path)
    cls = Gemma4UnifiedProcessor if unified else Gemma4Processor
    p = cls.__new__(cls)
    patch = (UNIFIED_VISION if unified else VISION)["patch_size"]
    p.tokenizer, p.chat_template, p.video_token = tok, None, "<mask>"
    p.video_processor = VideosAsTheReferenceDoes(unified, patch, 3, [v.fps for v in videos])
    for name in ("image_token", "boi_token", "eoi_token", "audio_token", "boa_token", "eoa_token"):
        setattr(p, name, getattr(tok, name))
    p.video_token_id = tok.convert_tokens_to_ids("<mask>")
    return p


@pytest.mark.parametrize("kind", ["gemma4", "unified"])
def test_prompt_frames_and_logits_with_videos_equal_reference(checkpoints, kind):
    models, videos = checkpoints
    ref, model = models[kind]
    prompt = "Compare <mask> with <mask> please"
    expected = reference_processor(model, kind == "unified", videos)(text=[prompt], videos=[v.frames for v in videos], return_tensors="np")
    ids, media = processor_inputs(model, prompt, videos=videos)
    np.testing.assert_array_equal(ids, expected["input_ids"][0])
    for name in ("pixel_values_videos", "video_position_ids", "num_frames_per_video"):
        np.testing.assert_array_equal(media[name], expected[name], err_msg=name)
    assert media["num_frames_per_video"] == [9, 32]
    text = model.tokenizer.decode(ids)
    assert "00:00 <|image><mask>" in text and "00:01 <|image>" in text  # 9 frames at 12 fps: 0 to 0.67 s; 40 at 24: to 1.6 s
    types = expected["mm_token_type_ids"]
    assert set(np.unique(types)) == {0, 2}
    with torch.no_grad():
        want = ref(input_ids=torch.from_numpy(ids[None]), mm_token_type_ids=torch.from_numpy(types),
                   pixel_values_videos=torch.from_numpy(media["pixel_values_videos"]),
                   video_position_ids=torch.from_numpy(media["video_position_ids"]),
                   num_frames_per_video=torch.tensor(media["num_frames_per_video"]),
                   use_cache=False, output_hidden_states=True).logits[0].float().numpy()
    np.testing.assert_allclose(model.forward(ids, **media), want, rtol=1e-4, atol=1e-4)
    acts = model.trace(ids, names="video.*", **media)  # the frames' steps, under video.
    step = "video.unified.vision.soft_tokens" if kind == "unified" else "video.vision.soft_tokens"
    assert acts[step].shape == (int(np.sum(ids == model.config.tokens["video_token_id"])), TEXT["hidden_size"])
    assert all(order_key(n)[0] < len(SECTIONS) for n in acts)  # the frames' names are in the forward-order tables


@pytest.mark.parametrize("kind", ["gemma4", "unified"])
def test_greedy_generation_with_a_video_equals_reference(checkpoints, kind):
    models, videos = checkpoints
    ref, model = models[kind]
    ids, media = processor_inputs(model, PROMPT, videos=videos[:1])
    types = (ids == model.config.tokens["video_token_id"]).astype(np.int64) * 2
    ref.generation_config.eos_token_id = None
    with torch.no_grad():
        out = ref.generate(
            input_ids=torch.from_numpy(ids[None]), mm_token_type_ids=torch.from_numpy(types[None]),
            pixel_values_videos=torch.from_numpy(media["pixel_values_videos"]),
            video_position_ids=torch.from_numpy(media["video_position_ids"]),
            num_frames_per_video=torch.tensor(media["num_frames_per_video"]), max_new_tokens=NEW_TOKENS, do_sample=False,
            eos_token_id=None, pad_token_id=0, output_logits=True, return_dict_in_generate=True, output_hidden_states=True,
        )
    expected, expected_logits = out.sequences[0, len(ids):].numpy(), torch.stack(out.logits)[:, 0].float().numpy()
    _, _, soft = prompt_with_media(model, PROMPT, videos=videos[:1])
    new, logits = our_steps(model, ids, NEW_TOKENS, soft=soft)
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(new, expected)
    text = model.generate(PROMPT, NEW_TOKENS, temperature=0, videos=videos[:1])
    assert text == model.tokenizer.decode(expected)


def write_gif(path, frames, duration_ms=100):
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def test_gif_and_frame_folder_and_cli(checkpoints, tmp_path):
    models, _ = checkpoints
    _, model = models["gemma4"]
    rng = np.random.default_rng(3)
    frames = (rng.integers(0, 4, (5, 12, 18, 1)) * 60).repeat(3, axis=-1).astype(np.uint8)  # few colours: GIF keeps them exactly
    gif = tmp_path / "clip.gif"
    write_gif(gif, frames, 250)
    video = read_video(gif)
    assert video.fps == 4.0 and video.frames.shape == frames.shape
    np.testing.assert_array_equal(video.frames, frames)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:03d}.png")
    from_folder = read_video(folder)
    assert from_folder.fps is None
    np.testing.assert_array_equal(from_folder.frames, frames)
    r = subprocess.run([sys.executable, "-m", "minigemma", "generate", PROMPT, "--model", model.path, "--video", str(gif),
                        "--temperature", "0", "--max-new-tokens", "4"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == model.generate(PROMPT, 4, temperature=0, videos=[str(gif)]) + "\n"


def test_video_mistakes(checkpoints, tmp_path):
    models, videos = checkpoints
    _, model = models["gemma4"]
    text_only = minigemma.load()  # the embedded model: no vision tower
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk.gif"
    junk.write_bytes(b"GIF89a not really")
    with pytest.raises(InputError, match="has no vision tower"):
        text_only.generate("hi <mask>", 2, videos=videos[:1])
    with pytest.raises(InputError, match="the folder holds no frames"):
        read_video(empty)
    with pytest.raises(InputError, match="junk.gif: cannot read a video"):
        read_video(junk)
    with pytest.raises(InputError, match="expected frames of shape"):
        as_video(np.zeros((0, 4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="prompt: 2 video marks"):
        processor_inputs(model, "<mask> and <mask>", videos=videos[:1])
    with pytest.raises(InputError, match="num_frames_per_video: expected positive frame counts"):
        _, media = processor_inputs(model, PROMPT, videos=videos[:1])
        model.forward(processor_inputs(model, PROMPT, videos=videos[:1])[0], **dict(media, num_frames_per_video=[3]))
    for flags, message in [(["--video", str(junk)], "junk.gif: cannot read a video"),
                           (["--video", str(empty)], "the folder holds no frames")]:
        r = subprocess.run([sys.executable, "-m", "minigemma", "generate", PROMPT, "--model", model.path, *flags,
                            "--max-new-tokens", "2"], capture_output=True, text=True, cwd=ROOT, timeout=300)
        error = [line for line in r.stderr.splitlines() if "error" in line]
        assert r.returncode == 2 and len(error) == 1 and message in error[0] and "Traceback" not in r.stderr, r.stderr


@given(st.binary(min_size=1, max_size=64), st.integers(0, 400))
@settings(max_examples=25)
def test_mutated_gif_is_a_named_error_never_a_crash(patch, at):
    """A GIF with bytes overwritten: it reads as frames, or raises the InputError naming the file."""
    buffer = io.BytesIO()
    frames = [Image.fromarray(np.full((6, 7, 3), 40 * i, np.uint8)) for i in range(4)]
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    data = bytearray(buffer.getvalue())
    at = at % len(data)
    data[at:at + len(patch)] = patch
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.gif")
        with open(path, "wb") as f:
            f.write(bytes(data))
        note(f"patched {len(patch)} bytes at {at}")
        try:
            video = read_video(path)
        except InputError as e:
            assert str(e).startswith(path)
        else:
            assert video.frames.ndim == 4 and video.frames.dtype == np.uint8


@pytest.mark.parametrize("codec, suffix", [("mpeg4", ".mp4"), ("libvpx-vp9", ".webm")])
def test_video_files_read_as_transformers_reads_them_with_pyav(tmp_path, codec, suffix):
    """MP4 and WebM through PyAV (the `video` extra): the frames and fps equal those of
    transformers' `read_video_pyav` with the reference sampling, for 40 frames at 20 fps. (For a
    WebM the reference reader finds no frame count in the container and its sampling refuses the
    file; minigemma counts the frames it decodes.)"""
    import av
    from transformers.video_utils import default_sample_indices_fn, read_video_pyav

    path = str(tmp_path / f"clip{suffix}")
    rng = np.random.default_rng(5)
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=20)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for i in range(40):
            frame = np.full((24, 32, 3), (6 * i) % 256, np.uint8) + rng.integers(0, 8, (24, 32, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    video = read_video(path)
    idx = sample_indices(len(video.frames), 32, None, video.fps)
    stored = {}

    def sampler(metadata):  # WebM stores no frame count (0): count the decoded frames, as minigemma does
        stored["frames"] = metadata.total_num_frames
        metadata.total_num_frames = metadata.total_num_frames or len(video.frames)
        return default_sample_indices_fn(metadata, num_frames=32)

    expected, meta = read_video_pyav(path, sample_indices_fn=sampler)
    assert stored["frames"] == (40 if suffix == ".mp4" else 0)
    assert video.fps == meta.fps == 20.0 and len(video.frames) == 40
    np.testing.assert_array_equal(idx, meta.frames_indices)
    np.testing.assert_array_equal(video.frames[idx], expected)
    junk = tmp_path / f"junk{suffix}"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match=f"junk{suffix}: cannot read a video"):
        read_video(junk)


def test_chat_with_a_video_equals_the_reference_processor_and_the_cli(checkpoints, tmp_path):
    """A chat template that writes a mark for {"type": "video"} items (the test tokenizer's
    `<mask>`): the first turn's ids equal `Gemma4Processor`'s for the rendered conversation, the
    video's frames fed where they belong (the reference's greedy reply follows); `chat --video`
    prints the API's replies."""
    import shutil

    from minigemma.generate.chat import ANSWER, Conversation
    from minigemma.generate.sampling import Sampling

    models, videos = checkpoints
    ref, model = models["gemma4"]
    d = shutil.copytree(model.path, tmp_path / "with_video_template")
    template = (d / "chat_template.jinja").read_text()
    audio_item = "{%- elif item['type'] == 'audio' -%}{{ audio_token }}"
    assert audio_item in template
    (d / "chat_template.jinja").write_text(template.replace(audio_item, audio_item + "\n            {%- elif item['type'] == 'video' -%}<mask>"))
    model = minigemma.load(d)
    gif = tmp_path / "clip.gif"
    write_gif(gif, videos[0].frames[:5] // 64 * 64, 500)
    video = read_video(gif)
    chat = Conversation(model, Sampling(temperature=0.0), NEW_TOKENS)
    first = "".join(p for c, p in chat.reply([{"type": "video", "path": str(gif)}, {"type": "text", "text": "What happens?"}]) if c == ANSWER)
    processor = reference_processor(model, False, [video])
    rendered = processor.tokenizer.apply_chat_template(chat.messages[:-1], tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[rendered], videos=[video.frames], return_tensors="np", add_special_tokens=False)
    ids = inputs["input_ids"][0]
    assert "00:01 <|image><mask>" in model.tokenizer.decode(ids)  # 5 frames at 2 fps: 00:00 .. 00:02
    assert chat.cached[: len(ids)] == list(ids)
    ref.generation_config.eos_token_id = None
    with torch.no_grad():
        out = ref.generate(input_ids=torch.from_numpy(ids[None]), mm_token_type_ids=torch.from_numpy(inputs["mm_token_type_ids"]),
                           pixel_values_videos=torch.from_numpy(inputs["pixel_values_videos"]),
                           video_position_ids=torch.from_numpy(inputs["video_position_ids"]),
                           num_frames_per_video=torch.tensor(inputs["num_frames_per_video"]), max_new_tokens=NEW_TOKENS,
                           do_sample=False, eos_token_id=None, pad_token_id=0)
    assert chat.cached == [*ids, *out[0, len(ids):-1].tolist()]  # the last token is sampled, never fed
    second = "".join(p for c, p in chat.reply("And then?") if c == ANSWER)
    r = subprocess.run([sys.executable, "-m", "minigemma", "chat", "--model", str(d), "--video", str(gif), "--temperature", "0",
                        "--max-new-tokens", str(NEW_TOKENS)], input="What happens?\nAnd then?\n", capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{first}\n{second}\n"

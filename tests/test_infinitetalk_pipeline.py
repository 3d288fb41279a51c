"""InfiniteTalk end to end on the tiny models: image and video sources, one and two speakers, a source shorter than
the audio, keep-the-rest, adapter switching on one loaded base, and the errors of each new input."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image

import pipeline_stubs as stubs
from multitalk_serve.engine import (
    Box,
    GenerateOptions,
    ImageInputError,
    InputError,
    MaskInputError,
    MultiTalkPipeline,
    SpeakerCountError,
    VideoInputError,
)
from multitalk_serve.engine.pipeline.composite import psnr
from multitalk_serve.engine.pipeline.video import Mp4Writer, probe

SIZE = (32, 48)  # (height, width) of the generated video: the tiny VAE's cost grows with pixels x frames
SMALL = {"size": SIZE, "steps": 2, "seed": 7, "color_correction": 0.0, "frames_per_clip": 17}  # 8 new frames a window
ALL_ADAPTERS = ["multitalk", "infinitetalk-single", "infinitetalk-multi"]


@pytest.fixture(scope="module")
def pipe(tiny_root):
    return MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32, adapters=ALL_ADAPTERS)


def source_frame(i: float, size=(96, 144)) -> np.ndarray:
    """A frame of a moving test pattern at time ``i`` (in 25 fps frames): a gradient and a bright blob that moves."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = w * (0.2 + 0.6 * ((i / 50) % 1.0))
    img = np.stack([xx / w * 180 + 30, yy / h * 160 + 40, np.full_like(xx, 90 + (i * 3) % 100)], axis=-1)
    img += 70 * np.exp(-(((yy - h / 2) / 12) ** 2 + ((xx - cx) / 12) ** 2))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_source_video(path, seconds: float, fps: int = 25, size=(96, 144), with_audio: bool = False):
    """An H.264 MP4 at ``fps`` whose frame at time t shows ``source_frame(25 t)``; optionally a loud soundtrack
    (which the output must not carry)."""
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.height, v.width = size
        v.pix_fmt = "yuv420p"
        v.options = {"crf": "12"}
        a = c.add_stream("aac", rate=48000) if with_audio else None
        if a is not None:
            a.layout = "mono"
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(source_frame(i * 25 / fps, size), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in v.encode(frame):
                c.mux(packet)
        for packet in v.encode():
            c.mux(packet)
        if a is not None:
            wave = (0.8 * np.sin(2 * np.pi * 1000 * np.arange(int(seconds * 48000)) / 48000)).astype(np.float32)
            for start in range(0, len(wave), 1024):
                chunk = wave[start : start + 1024]
                f = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
                f.sample_rate, f.pts = 48000, start
                for packet in a.encode(f):
                    c.mux(packet)
            for packet in a.encode():
                c.mux(packet)
    return path


def read_frames(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def check_output(result, path, frames: int, seconds: float) -> None:
    info = probe(path)
    assert (info.frames, info.fps, info.height, info.width) == (frames, 25.0, *SIZE)
    assert result.frames == frames
    assert info.audio_codec == "aac" and abs(info.audio_seconds - seconds) < 0.05


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("itk") / "ref.png"
    Image.fromarray(source_frame(0)).save(path)
    return path


def test_image_mode_three_windows(pipe, image_path, tmp_path):
    """InfiniteTalk animates an image: 1.2 s of audio -> windows at frames 0, 8 and 16, 30 frames out."""
    out = tmp_path / "out.mp4"
    result = pipe.generate(
        image_path,
        [stubs.speech_like(1.2, 1)],
        "a man talks",
        out,
        options=GenerateOptions(model="infinitetalk", **SMALL),
    )
    assert result.model == "infinitetalk-single" and result.clips == 3
    assert result.options["motion_frames"] == 9
    check_output(result, out, 30, 1.2)
    assert pipe.adapter == "infinitetalk-single"


def test_video_mode_30fps_two_speakers_new_soundtrack(pipe, tmp_path):
    """A 30 fps source with its own (loud 1 kHz) soundtrack dubbed with two speakers: the multi adapter, the output
    as long as the new audio, its soundtrack the new audio (not the source's)."""
    video = write_source_video(tmp_path / "src.mp4", 2.0, fps=30, with_audio=True)
    out = tmp_path / "out.mp4"
    voices = [stubs.speech_like(0.6, 2), stubs.speech_like(0.7, 3)]
    result = pipe.generate(
        None, voices, "two people talk", out, video=video, options=GenerateOptions(model="infinitetalk", **SMALL)
    )
    assert result.model == "infinitetalk-multi" and result.speakers == 2
    check_output(result, out, 32, 1.3)  # add: 0.6 s + 0.7 s
    with av.open(str(out)) as c:
        wave = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(c.streams.audio[0])])
    spectrum = np.abs(np.fft.rfft(wave[:48000]))
    freqs = np.fft.rfftfreq(48000, 1 / 48000)
    assert spectrum[np.abs(freqs - 1000) < 5].max() < 0.2 * spectrum.max()  # no trace of the source's tone


def test_short_source_hold_and_pingpong(pipe, tmp_path):
    """A 0.4 s source under 1.6 s of audio: both ends give the audio's length; pingpong's later windows start from
    other source frames than hold's (which repeats the last one), so the videos differ from the third window on."""
    video = write_source_video(tmp_path / "short.mp4", 0.4)
    outputs = {}
    for end in ("hold", "pingpong"):
        out = tmp_path / f"{end}.mp4"
        options = GenerateOptions(model="infinitetalk", source_end=end, **SMALL)
        result = pipe.generate(None, [stubs.speech_like(1.6, 4)], "a man talks", out, video=video, options=options)
        check_output(result, out, 40, 1.6)
        outputs[end] = read_frames(out).astype(np.float32)
    # windows start at output frames 0, 8, 16, 24: the source has 10 frames, so hold reads frames 0, 8, 9, 9 and
    # pingpong (period 18) 0, 8, 2, 6. Equal up to the third window's first new frame (16 + 9), different after.
    same = 25
    assert np.abs(outputs["hold"][:same] - outputs["pingpong"][:same]).mean() < 0.5
    assert np.abs(outputs["hold"][same:] - outputs["pingpong"][same:]).mean() > 2


def test_keep_background_outside_equals_source(pipe, tmp_path):
    """keep_background with one speaker's box: outside the feathered region the frames ARE the source frames
    (exactly, before encoding); after H.264 the outside region is compared with the source re-encoded the same way;
    inside the region the frames are generated."""
    from multitalk_serve.engine.pipeline.composite import region_mask
    from multitalk_serve.engine.pipeline.source import VideoSource

    video = write_source_video(tmp_path / "src.mp4", 1.5)
    box = [Box(x_min=40, y_min=20, x_max=100, y_max=80)]  # source pixels (144 x 96)
    options = GenerateOptions(model="infinitetalk", keep_background=True, feather=2, **SMALL)
    job = pipe.prepare(None, [stubs.speech_like(1.0, 5)], "a man talks", video=video, boxes=box, options=options)
    frames = torch.cat(list(pipe.frames(job)), dim=1)  # [3, 25, H, W]
    with VideoSource(video) as source:
        behind = source.clip(0, frames.shape[1], SIZE)
    region = region_mask(SIZE, (96, 144), boxes=box, feather=2)
    outside, inside = region == 0, region == 1
    assert 0.2 < outside.float().mean() < 0.9 and inside.any()
    assert torch.equal(frames[:, :, outside], behind[:, :, outside])  # the source itself, untouched
    assert (frames[:, :, inside] - behind[:, :, inside]).abs().mean() > 0.1  # generated there

    def encode(pixels: torch.Tensor, path):
        writer = Mp4Writer(path, SIZE[1], SIZE[0], crf=job.options.crf)
        writer.write(((pixels.permute(1, 2, 3, 0).clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).numpy())
        writer.close()
        return read_frames(path)

    ours, theirs = encode(frames, tmp_path / "ours.mp4"), encode(behind, tmp_path / "source.mp4")
    outside_psnr, inside_psnr = psnr(ours, theirs, outside.numpy()), psnr(ours, theirs, inside.numpy())
    print(
        f"keep_background {SIZE}: PSNR against the re-encoded source: outside {outside_psnr:.1f} dB, inside {inside_psnr:.1f} dB"
    )
    # at 32 x 48 every outside pixel is within a 16-pixel macroblock of the region, so the encoder's spill shows
    assert outside_psnr > 30 and inside_psnr < 20


def test_adapter_switch_keeps_base_and_results(pipe, image_path, tmp_path):
    """MultiTalk -> InfiniteTalk -> MultiTalk on one loaded base: the same MultiTalk job gives the same frames before
    and after, no parameter object is replaced, and the result reports the model and the switch time."""
    params = {k: id(p) for k, p in pipe.transformer.named_parameters()}
    clip = {**SMALL, "mode": "clip", "num_frames": 13, "frames_per_clip": 13}
    options = GenerateOptions(model="multitalk", motion_frames=5, **clip)
    wave = [stubs.speech_like(1.0, 6)]
    first = pipe.generate(image_path, wave, "x", tmp_path / "a.mp4", options=options)
    other = GenerateOptions(model="infinitetalk-single", **clip)
    mid = pipe.generate(image_path, wave, "x", tmp_path / "b.mp4", options=other)
    again = pipe.generate(image_path, wave, "x", tmp_path / "c.mp4", options=options)
    assert (first.model, mid.model, again.model) == ("multitalk", "infinitetalk-single", "multitalk")
    assert mid.timings["adapter_switch"] > 0 and again.timings["adapter_switch"] > 0
    assert np.array_equal(read_frames(tmp_path / "a.mp4"), read_frames(tmp_path / "c.mp4"))
    assert not np.array_equal(read_frames(tmp_path / "a.mp4"), read_frames(tmp_path / "b.mp4"))
    assert {k: id(p) for k, p in pipe.transformer.named_parameters()} == params


def test_bad_inputs(pipe, image_path, tmp_path):
    video = write_source_video(tmp_path / "src.mp4", 0.5)
    wave = [stubs.speech_like(0.5, 8)]
    itk = GenerateOptions(model="infinitetalk", **SMALL)
    keep = GenerateOptions(model="infinitetalk", keep_background=True, **SMALL)
    out = tmp_path / "o.mp4"
    cases = [
        (dict(image=None, video=video, options=GenerateOptions(motion_frames=5, **SMALL)), InputError, "InfiniteTalk"),
        (dict(image=image_path, video=video, options=itk), InputError, "exactly one"),
        (dict(image=None, options=itk), InputError, "exactly one"),
        (dict(image=str(video), options=itk), ImageInputError, "this is a video"),
        (dict(image=image_path, mask=image_path, options=itk), ImageInputError, "keep_background"),
        (
            dict(image=image_path, options=GenerateOptions(model="infinitetalk", keep_background=True, **SMALL)),
            ImageInputError,
            "boxes or a mask",
        ),
        (  # a mask the size of the output, not of the source (144 x 96)
            dict(image=None, video=video, mask=Image.new("L", (48, 32), 255), options=keep),
            MaskInputError,
            "144x96",
        ),
        (dict(image=None, video=image_path, options=itk), VideoInputError, "image"),  # an image sent as the video
        (dict(image=None, video=b"\x00" * 4096, options=itk), VideoInputError, "video"),
    ]
    for kwargs, error, text in cases:
        image = kwargs.pop("image")
        with pytest.raises(error, match=text):
            pipe.generate(image, wave, "x", out, **kwargs)
    with pytest.raises(SpeakerCountError, match="infinitetalk-single"):
        two = GenerateOptions(model="infinitetalk-single", **SMALL)
        pipe.generate(image_path, [wave[0], wave[0]], "x", out, options=two)
    with pytest.raises(InputError, match="model must be one of"):
        GenerateOptions(model="infinitalk").validate()
    with pytest.raises(InputError, match="source_end"):
        GenerateOptions(source_end="loop").validate()


def test_model_not_held(tiny_root, image_path, tmp_path):
    """A pipeline loaded with MultiTalk only refuses an InfiniteTalk job by naming what it holds."""
    only = MultiTalkPipeline.from_pretrained(tiny_root, dtype=torch.float32, adapters=["multitalk"])
    assert only.adapters == ["multitalk"]
    with pytest.raises(InputError, match=r"model: infinitetalk-single is not loaded here \(loaded: multitalk\)"):
        only.generate(
            image_path,
            [stubs.speech_like(1.0, 9)],
            "x",
            tmp_path / "o.mp4",
            options=GenerateOptions(model="infinitetalk"),
        )


def test_fast_preset_with_speed_lora_and_step_cache(tiny_root, image_path, tmp_path):
    """InfiniteTalk on the same speed machinery as MultiTalk: the fast preset's speed LoRA (a PEFT adapter on the
    base layers) with step caching, then a MultiTalk job and back: the audio layers switch under the LoRA."""
    lora = tiny_root / "Lightx2v" / "lightx2v_I2V_14B_480p_cfg_step_distill_rank4_bf16.safetensors"
    fast = MultiTalkPipeline.from_pretrained(
        tiny_root, dtype=torch.float32, adapters=["infinitetalk-single", "multitalk"], speed_lora=lora
    )
    clip = {"size": SIZE, "seed": 3, "mode": "clip", "num_frames": 13, "frames_per_clip": 13}
    options = GenerateOptions.from_preset("fast", model="infinitetalk", cache_threshold=0.05, **clip)
    wave = [stubs.speech_like(0.5, 10)]
    first = fast.generate(image_path, wave, "x", tmp_path / "a.mp4", options=options)
    assert first.model == "infinitetalk-single" and first.options["speed_lora"]
    assert sum(first.forwards.values()) == 4 * 2  # 4 steps, 2 passes (text scale 1)
    other = GenerateOptions.from_preset("fast", model="multitalk", motion_frames=5, **clip)
    assert fast.generate(image_path, wave, "x", tmp_path / "b.mp4", options=other).model == "multitalk"
    again = fast.generate(image_path, wave, "x", tmp_path / "c.mp4", options=options)
    assert again.timings["adapter_switch"] > 0
    assert np.array_equal(read_frames(tmp_path / "a.mp4"), read_frames(tmp_path / "c.mp4"))

"""Buckets, resize/crop, person masks, colour correction, MP4 writing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from multitalk_serve.engine.pipeline.color import lab_to_rgb, match_colors, rgb_to_lab
from multitalk_serve.engine.pipeline.conditioning import (
    Box,
    ImageInputError,
    choose_bucket,
    crop_masks,
    latent_masks,
    mask_preview,
    person_masks,
    resize_and_center_crop,
)
from multitalk_serve.engine.pipeline.video import Mp4Writer, frames_to_uint8, probe


def test_bucket_choice():
    assert choose_bucket(1080, 1920, "480p") == (448, 896)  # 16:9 landscape
    assert choose_bucket(1920, 1080, "480p") == (832, 448)  # 9:16 portrait
    assert choose_bucket(1000, 1000, "720p") == (960, 960)
    with pytest.raises(ImageInputError, match="resolution must be one of"):
        choose_bucket(10, 10, "1080p")


def test_resize_and_center_crop_covers_then_crops():
    img = Image.fromarray(np.tile(np.arange(500, dtype=np.uint8)[None, :, None] % 251, (300, 1, 3)))
    out = resize_and_center_crop(img, (64, 96))
    assert out.shape == (3, 64, 96) and out.min() >= -1 and out.max() <= 1
    # scale = max(64/300, 96/500) -> 64 x 107, crop columns round(11 / 2) = 6 (Python rounds halves to even)
    expected = np.asarray(img.resize((107, 64), Image.BILINEAR))[:, 6:102]
    assert torch.equal(out, (torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 255 - 0.5) * 2)


def test_official_bbox_order_is_converted():
    box = Box.from_official([160, 120, 1280, 1080])  # MultiTalk's example: rows 160..1280, columns 120..1080
    assert (box.x_min, box.y_min, box.x_max, box.y_max) == (120, 160, 1080, 1280)


def test_person_masks_from_boxes_and_defaults():
    masks = person_masks(100, 200, [Box(10, 20, 60, 90), Box(120, 10, 190, 95)], 2)
    assert masks.shape == (3, 100, 200)
    assert masks[0, 20:90, 10:60].all() and masks[0].sum() == 50 * 70
    assert masks[1, 10:95, 120:190].all()
    assert torch.equal(masks[2], ((masks[0] + masks[1]) == 0).float())
    default = person_masks(100, 200, None, 2)
    assert default[0, 5:95, 5:95].all() and default[0].sum() == 90 * 90  # left half inset 5 %
    assert default[1, 5:95, 105:195].all() and default[1].sum() == 90 * 90
    assert person_masks(100, 200, None, 1).all()


@pytest.mark.parametrize(
    ("box", "message"),
    [
        (Box(50, 10, 40, 20), "inverted or empty"),
        (Box(10, 10, 10, 20), "inverted or empty"),
        (Box(-5, 10, 40, 20), "outside the 200x100 image"),
        (Box(10, 10, 210, 20), "outside the 200x100 image"),
        (Box(float("nan"), 10, 40, 20), "finite"),
        (Box(10.2, 10.2, 10.9, 10.9), "covers no whole pixel"),
    ],
)
def test_bad_boxes_name_the_person(box, message):
    with pytest.raises(ImageInputError, match=f"box of person 2: .*{message}|box of person 2.*{message}"):
        person_masks(100, 200, [Box(0, 0, 50, 50), box], 2)


def test_two_speakers_need_two_boxes():
    with pytest.raises(ImageInputError, match="two speakers need two boxes, got 1"):
        person_masks(100, 200, [Box(0, 0, 50, 50)], 2)


def test_masks_follow_the_image_crop_and_shrink_to_latents():
    masks = person_masks(300, 500, [Box(0, 0, 250, 300), Box(250, 0, 500, 300)], 2)
    cropped = crop_masks(masks, (64, 96))
    assert cropped.shape == (3, 64, 96)
    latent = latent_masks(cropped, (8, 12))
    assert latent[0, :, :5].all() and not latent[0, :, 7:].any() and latent[1, :, 7:].all()
    preview = mask_preview(torch.zeros(3, 64, 96), cropped)
    assert preview.size == (96, 64) and np.asarray(preview)[30, 20, 0] > np.asarray(preview)[30, 20, 2]


def test_lab_conversion_known_values_and_round_trip():
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    lab = rgb_to_lab(rgb)
    torch.testing.assert_close(lab[0], torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64), atol=1e-2, rtol=0)
    torch.testing.assert_close(lab[2], torch.tensor([53.24, 80.09, 67.20], dtype=torch.float64), atol=2e-2, rtol=0)
    torch.testing.assert_close(lab[3], torch.tensor([32.30, 79.19, -107.86], dtype=torch.float64), atol=2e-2, rtol=0)
    x = torch.rand(1000, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(x)), x.double(), atol=1e-6, rtol=0)


def test_colour_correction_pulls_statistics_to_the_reference():
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(3, 32, 32, generator=g) * 2 - 1
    frames = (torch.rand(3, 4, 32, 32, generator=g) * 0.5 + 0.3).clamp(-1, 1)  # brighter, flatter
    out = match_colors(frames, reference, 1.0)
    ref_lab = rgb_to_lab((reference.permute(1, 2, 0) + 1) / 2)
    out_lab = rgb_to_lab((out[:, 0].permute(1, 2, 0) + 1) / 2)
    assert abs(out_lab[..., 0].mean() - ref_lab[..., 0].mean()) < 3.0  # lightness matched (up to clipping)
    assert torch.equal(match_colors(frames, reference, 0.0), frames)
    half = match_colors(frames, reference, 0.5)
    torch.testing.assert_close(half, (frames + out) / 2, atol=1e-5, rtol=0)


def test_mp4_round_trip(tmp_path):
    frames = torch.rand(3, 30, 48, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    writer = Mp4Writer(tmp_path / "v.mp4", 64, 48, crf=18)
    writer.write(frames_to_uint8(frames[:, :10]))
    writer.write(frames_to_uint8(frames[:, 10:]))
    writer.close(np.zeros(48000 * 3, np.float32))  # longer than the video: cut to it
    info = probe(tmp_path / "v.mp4")
    assert (info.frames, info.fps, info.width, info.height) == (30, 25.0, 64, 48)
    assert info.video_codec == "h264" and info.pix_fmt == "yuv420p" and info.audio_codec == "aac"
    assert abs(info.audio_seconds - 1.2) < 0.05

"""Keep the rest of the frame (engine/pipeline/composite.py): the region mask, the blend, PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from multitalk_serve.engine import Box, ImageInputError, MaskInputError, composite, psnr, region_mask
from multitalk_serve.engine.pipeline.composite import auto_feather
from multitalk_serve.engine.pipeline.conditioning import crop_masks, resize_and_center_crop


def test_box_region_hard_edge_follows_the_frames_resize_and_crop():
    """A 200x100 source (w x h) into a 64x64 output: scaled x0.64 to 128x64, then 32 columns cropped each side."""
    mask = region_mask((64, 64), (100, 200), boxes=[Box(80, 25, 120, 75)], feather=0)
    assert mask.shape == (64, 64) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    # nearest: output row r reads source row floor(r * 100 / 64); column c + 32 reads floor((c + 32) * 200 / 128)
    assert (rows.min().item(), rows.max().item()) == (16, 47)  # source rows 25.0 .. 73.4
    assert (cols.min().item(), cols.max().item()) == (20, 44)  # source columns 81.25 .. 118.75
    # the same geometry as the frames: a white square drawn in the source lands where the mask is (to the pixel
    # that the frames' bilinear filter shares between both sides of the edge)
    picture = np.zeros((100, 200, 3), np.uint8)
    picture[25:75, 80:120] = 255
    white = resize_and_center_crop(Image.fromarray(picture), (64, 64))[0] > 0
    box = lambda m: [*m.any(1).nonzero()[[0, -1], 0].tolist(), *m.any(0).nonzero()[[0, -1], 0].tolist()]  # noqa: E731
    assert np.abs(np.subtract(box(white), box(mask > 0))).max() <= 1


def test_two_boxes_and_fractional_edges():
    mask = region_mask((50, 100), (50, 100), boxes=[Box(10.5, 5, 20, 15), Box(60, 30, 70.2, 40)], feather=0)
    assert mask[5:15, 10:20].eq(1).all() and mask[30:40, 60:71].eq(1).all()  # every touched pixel is inside
    assert mask.sum() == 10 * 10 + 10 * 11


def test_mask_image_white_regenerated_and_mapped_like_the_frames():
    source = np.zeros((90, 160), np.uint8)
    source[20:60, 30:70] = 255
    source[0:5, 0:5] = 100  # grey under the threshold: kept
    image = Image.fromarray(source)
    mask = region_mask((48, 64), (90, 160), mask=image, feather=0)
    expected = crop_masks(torch.from_numpy(source >= 128).float()[None], (48, 64))[0]
    assert torch.equal(mask, expected)
    rgba = Image.new("RGBA", (160, 90), (255, 255, 255, 0))  # white but transparent: not regenerated
    rgba.paste((255, 255, 255, 255), (30, 20, 70, 60))
    assert torch.equal(region_mask((48, 64), (90, 160), mask=rgba, feather=0), expected)


def test_mask_errors_name_the_field_and_both_sizes():
    with pytest.raises(MaskInputError, match=r"^mask: 100x50 is not the source's size 160x90"):
        region_mask((48, 64), (90, 160), mask=Image.new("L", (100, 50), 255), name="mask")
    with pytest.raises(MaskInputError, match=r"^mask_image: all black: nothing would be regenerated"):
        region_mask((48, 64), (90, 160), mask=Image.new("L", (160, 90), 0))
    with pytest.raises(MaskInputError, match="give either boxes or mask_image, not both"):
        region_mask((48, 64), (90, 160), boxes=[Box(0, 0, 10, 10)], mask=Image.new("L", (160, 90), 255))
    with pytest.raises(MaskInputError, match=r"give either boxes or mask_image$"):
        region_mask((48, 64), (90, 160))
    with pytest.raises(MaskInputError, match="one box per speaker"):
        region_mask((48, 64), (90, 160), boxes=[Box(0, 0, 10, 10)] * 3)
    with pytest.raises(MaskInputError, match="feather must be a finite number"):
        region_mask((48, 64), (90, 160), boxes=[Box(0, 0, 10, 10)], feather=-1)
    with pytest.raises(MaskInputError, match="outside the part of the picture that is generated"):
        region_mask((64, 64), (100, 200), boxes=[Box(0, 0, 20, 100)])  # cropped away on the left
    with pytest.raises(ImageInputError, match=r"box: x 150\.\.170, y 0\.\.10 is outside the 160x90 image"):
        region_mask((48, 64), (90, 160), boxes=[Box(150, 0, 170, 10)])
    assert issubclass(MaskInputError, ImageInputError)


def test_feather_ramp_lies_outside_the_region():
    """Inside: exactly 1 (the face is never blended); out to `feather` px: strictly between 0 and 1, falling; from
    feather + 1 px: exactly 0."""
    feather = 6
    mask = region_mask((64, 64), (64, 64), boxes=[Box(20, 20, 40, 40)], feather=feather)
    assert mask[20:40, 20:40].eq(1).all()
    row = mask[30]
    ramp = row[40 : 40 + feather]  # columns 40..45: distances 1..6
    assert (ramp > 0).all() and (ramp < 1).all() and (ramp.diff() < 0).all()
    assert ramp.tolist() == pytest.approx([1 - d / (feather + 1) for d in range(1, feather + 1)])
    assert row[40 + feather :].eq(0).all() and row[: 20 - feather].eq(0).all()
    assert mask.min() == 0 and mask.max() == 1


def test_automatic_feather():
    assert auto_feather((480, 832)) == 14 and auto_feather((720, 1280)) == 22 and auto_feather((40, 40)) == 2
    auto = region_mask((64, 64), (64, 64), boxes=[Box(20, 20, 40, 40)])
    assert torch.equal(auto, region_mask((64, 64), (64, 64), boxes=[Box(20, 20, 40, 40)], feather=2))


def test_composite_is_exactly_the_source_outside_and_the_generated_inside():
    generator = torch.Generator().manual_seed(0)
    generated = torch.rand(3, 5, 32, 48, generator=generator) * 2 - 1
    source = torch.rand(3, 5, 32, 48, generator=generator) * 2 - 1
    mask = region_mask((32, 48), (32, 48), boxes=[Box(10, 8, 30, 24)], feather=4)
    out = composite(generated, source, mask)
    assert out.shape == generated.shape
    outside, inside = mask == 0, mask == 1
    assert torch.equal(out[..., outside], source[..., outside])
    assert torch.equal(out[..., inside], generated[..., inside])
    edge = (mask > 0) & (mask < 1)
    expected = generated * mask + source * (1 - mask)
    assert torch.allclose(out[..., edge], expected[..., edge])
    with pytest.raises(ValueError, match="differ in shape"):
        composite(generated, source[:, :4], mask)
    with pytest.raises(ValueError, match="does not match"):
        composite(generated, source, mask[:, :40])


def test_psnr():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = a.copy()
    assert psnr(a, b) == math.inf
    b[..., :4, :] = 10  # half of the columns off by 10
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 50))
    left = torch.zeros(8, 8, dtype=torch.bool)
    left[:, :4] = True
    assert psnr(a, b, region=left) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(a, b, region=~left) == math.inf
    x = torch.zeros(3, 2, 8, 8)
    y = x.clone()
    y[..., :4] = 0.5
    assert psnr(x, y, region=left.numpy()) == pytest.approx(10 * math.log10(4 / 0.25))
    with pytest.raises(ValueError, match="uint8 with uint8"):
        psnr(a, x.permute(1, 2, 3, 0).numpy())

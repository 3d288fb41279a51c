"""Keep the rest of the frame: only the speakers' regions are regenerated, everything else is the source's pixels.

InfiniteTalk regenerates the whole picture; with a video source (dubbing) the background, hands, other people and
text should stay the source's. ``region_mask`` builds the blend weight at the output resolution (1 = regenerated,
0 = the source's pixel), ``composite`` blends each output frame with the source frame shown at the same time, and
``psnr`` measures how close two videos are (inside or outside the region).

The region is given in **source** pixels, as person boxes (``conditioning.Box``: x first, max exclusive) or as a
mask image of the source's size (white = regenerated; grey levels from 128 count as white, transparent as black). It
goes through the same resize and centre crop as the frames (``conditioning.crop_masks``: nearest), so it lands on
the pixels it covered in the source.

The soft edge (``feather`` output pixels, automatic by default: ``FEATHER_FRACTION`` of the shorter side, at least
``MIN_FEATHER``) lies **outside** the region: every pixel of the region keeps weight 1 (the speaker's face stays
fully generated, never half-blended with the source), the weight falls linearly with the distance from the region,
``1 - d / (feather + 1)``, and is 0 from ``feather + 1`` pixels out. ``feather=0`` is a hard edge.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import MaskInputError
from ..limits import MAX_SPEAKERS
from .conditioning import Box, crop_masks

FEATHER_FRACTION = 0.03  # automatic soft edge: 3 % of the output's shorter side (14 px at 480p, 21 px at 720p)
MIN_FEATHER = 2  # pixels
MASK_THRESHOLD = 128  # mask images: grey levels from here count as white (regenerated)


def auto_feather(size: tuple[int, int]) -> float:
    """The automatic soft-edge width for an output of ``size`` = (height, width), in pixels."""
    return float(max(MIN_FEATHER, round(FEATHER_FRACTION * min(size))))


def region_mask(
    size: tuple[int, int],
    source_size: tuple[int, int],
    *,
    boxes: list[Box] | None = None,
    mask: Image.Image | None = None,
    feather: float | None = None,
    name: str = "mask_image",
) -> torch.Tensor:
    """The keep-the-rest blend weight: ``[H, W]`` float32 in [0, 1] for an output of ``size`` = (H, W) made from a
    source of ``source_size`` = (h, w); 1 = regenerated, 0 = the source's pixel.

    Exactly one of ``boxes`` (one or two, source pixels) and ``mask`` (an image of exactly the source's size, white =
    regenerated). ``feather``: soft-edge width in output pixels outside the region (None: ``auto_feather``).
    ``name``: the mask's field as the user wrote it. Raises ``MaskInputError`` (an ``ImageInputError``)."""
    height, width = (int(v) for v in size)
    src_h, src_w = (int(v) for v in source_size)
    if (boxes is None) == (mask is None):
        raise MaskInputError(
            f"keeping the rest of the frame needs the region to regenerate: give either boxes or {name}"
            + (", not both" if boxes is not None else "")
        )
    if feather is None:
        feather = auto_feather((height, width))
    if not (isinstance(feather, int | float) and math.isfinite(feather) and feather >= 0):
        raise MaskInputError(f"feather must be a finite number of pixels >= 0, got {feather!r}")

    source = _boxes_mask(boxes, src_h, src_w) if boxes is not None else _image_mask(mask, src_h, src_w, name)  # type: ignore[arg-type]
    region = crop_masks(source[None], (height, width))[0] > 0.5
    if not region.any():
        what = "the boxes lie" if boxes is not None else f"{name}: the white region lies"
        raise MaskInputError(f"{what} outside the part of the picture that is generated (its centre crop)")
    return _feathered(region.numpy(), float(feather))


def _boxes_mask(boxes: list[Box], height: int, width: int) -> torch.Tensor:
    if not 1 <= len(boxes) <= MAX_SPEAKERS:
        raise MaskInputError(f"give one box per speaker (1 or {MAX_SPEAKERS}), got {len(boxes)}")
    out = torch.zeros(height, width)
    for i, box in enumerate(boxes):
        box.validate(width, height, f"box of person {i + 1}" if len(boxes) > 1 else "box")
        x0, y0 = max(math.floor(box.x_min), 0), max(math.floor(box.y_min), 0)
        x1, y1 = min(math.ceil(box.x_max), width), min(math.ceil(box.y_max), height)
        out[y0:y1, x0:x1] = 1  # every pixel the box touches is regenerated
    return out


def _image_mask(mask: Image.Image, height: int, width: int, name: str) -> torch.Tensor:
    if not isinstance(mask, Image.Image):
        raise TypeError(f"{name}: region_mask takes a loaded PIL image, got {type(mask)}")
    if (mask.width, mask.height) != (width, height):
        raise MaskInputError(
            f"{name}: {mask.width}x{mask.height} is not the source's size {width}x{height} (the mask must cover the "
            "source picture pixel for pixel)"
        )
    if mask.mode in ("RGBA", "LA", "PA") or "transparency" in mask.info:  # transparent = not regenerated
        rgba = mask.convert("RGBA")
        mask = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    grey = np.asarray(mask.convert("L"))
    white = grey >= MASK_THRESHOLD
    if not white.any():
        raise MaskInputError(f"{name}: all black: nothing would be regenerated (white marks the speaker's region)")
    return torch.from_numpy(white.astype(np.float32))


def _feathered(region: np.ndarray, feather: float) -> torch.Tensor:
    """1 inside ``region``, ``1 - d / (feather + 1)`` at distance d outside it, 0 from ``feather + 1`` out."""
    if feather == 0 or region.all():
        return torch.from_numpy(region.astype(np.float32))
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(~region)  # 0 inside, Euclidean pixels to the region outside
    weight = np.clip(1.0 - distance / (feather + 1.0), 0.0, 1.0)
    return torch.from_numpy(weight.astype(np.float32))


def composite(generated: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``generated * m + source * (1 - m)`` frame by frame: ``[3, n, H, W]`` (any leading dims) with ``mask``
    ``[H, W]``. Exactly the source where ``m == 0`` and exactly the generated pixels where ``m == 1``."""
    if generated.shape != source.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and source {tuple(source.shape)} differ in shape")
    if tuple(mask.shape) != tuple(generated.shape[-2:]):
        raise ValueError(f"mask {tuple(mask.shape)} does not match the frames' {tuple(generated.shape[-2:])}")
    m = mask.to(device=generated.device, dtype=generated.dtype)
    return generated * m + source.to(generated.dtype) * (1 - m)


def psnr(a: Any, b: Any, region: Any = None) -> float:
    """Peak signal-to-noise ratio in dB between two frames or videos (``inf`` when equal): uint8 arrays/tensors
    (peak 255) or float tensors in [-1, 1] (peak 2). ``region``: a boolean ``[H, W]`` mask, only those pixels
    count (layouts ``[..., 3, H, W]``-like with H, W last, or ``[..., H, W, 3]``)."""
    x, y = _as_tensor(a), _as_tensor(b)
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ: {tuple(x.shape)} and {tuple(y.shape)}")
    if (x.dtype == torch.uint8) != (y.dtype == torch.uint8):
        raise ValueError("psnr: compare uint8 with uint8, or [-1, 1] floats with floats")
    peak = 255.0 if x.dtype == torch.uint8 else 2.0
    diff = (x.double() - y.double()) ** 2
    if region is not None:
        r = _as_tensor(region).bool()
        if r.dim() != 2:
            raise ValueError(f"psnr: region must be [H, W], got {tuple(r.shape)}")
        if tuple(diff.shape[-2:]) == tuple(r.shape):
            chosen = diff[..., r]
        elif diff.dim() >= 3 and tuple(diff.shape[-3:-1]) == tuple(r.shape):
            chosen = diff[..., r, :]
        else:
            raise ValueError(f"psnr: region {tuple(r.shape)} matches neither [..., H, W] nor [..., H, W, C] frames")
        if chosen.numel() == 0:
            raise ValueError("psnr: the region is empty")
        diff = chosen
    mse = float(diff.mean())
    return math.inf if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def _as_tensor(value: Any) -> torch.Tensor:
    return value.detach().cpu() if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))

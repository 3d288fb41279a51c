"""Image-side conditioning: resolution buckets, resize + centre crop, person masks, the mask preview.

Person boxes use one explicit convention everywhere in this project: ``(x_min, y_min, x_max, y_max)`` in pixels
of the **source image**, x = column, y = row, max exclusive (like Python slices). The official JSON's ``bbox``
lists ``[y_min, x_min, y_max, x_max]`` despite its field names; ``Box.from_official`` converts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..errors import ImageInputError
from ..models.attention import MAX_SPEAKERS

# Target [height, width] per height/width ratio (the official ASPECT_RATIO_627 / ASPECT_RATIO_960 tables).
BUCKETS: dict[str, dict[str, tuple[int, int]]] = {
    "480p": {
        "0.26": (320, 1216),
        "0.38": (384, 1024),
        "0.50": (448, 896),
        "0.67": (512, 768),
        "0.82": (576, 704),
        "1.00": (640, 640),
        "1.22": (704, 576),
        "1.50": (768, 512),
        "1.86": (832, 448),
        "2.00": (896, 448),
        "2.50": (960, 384),
        "2.83": (1088, 384),
        "3.60": (1152, 320),
        "3.80": (1216, 320),
        "4.00": (1280, 320),
    },
    "720p": {
        "0.22": (448, 2048),
        "0.29": (512, 1792),
        "0.36": (576, 1600),
        "0.45": (640, 1408),
        "0.55": (704, 1280),
        "0.63": (768, 1216),
        "0.76": (832, 1088),
        "0.88": (896, 1024),
        "1.00": (960, 960),
        "1.14": (1024, 896),
        "1.31": (1088, 832),
        "1.50": (1152, 768),
        "1.58": (1216, 768),
        "1.82": (1280, 704),
        "1.91": (1344, 704),
        "2.20": (1408, 640),
        "2.30": (1472, 640),
        "2.67": (1536, 576),
        "2.89": (1664, 576),
        "3.62": (1856, 512),
        "3.75": (1920, 512),
    },
}
FACE_SCALE = 0.05  # default masks: rows and columns inset by 5 % (official)


@dataclass(frozen=True)
class Box:
    """A person's region in source-image pixels: columns ``x_min..x_max``, rows ``y_min..y_max`` (max exclusive)."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float

    @classmethod
    def from_official(cls, bbox: list[float]) -> Box:
        """The official JSON's ``[y_min, x_min, y_max, x_max]`` (it fills rows a:c, columns b:d)."""
        a, b, c, d = bbox
        return cls(x_min=b, y_min=a, x_max=d, y_max=c)

    def validate(self, width: int, height: int, name: str = "box") -> None:
        values = (self.x_min, self.y_min, self.x_max, self.y_max)
        if not all(math.isfinite(v) for v in values):
            raise ImageInputError(f"{name}: coordinates must be finite numbers, got {values}")
        if self.x_min >= self.x_max or self.y_min >= self.y_max:
            raise ImageInputError(
                f"{name}: inverted or empty (x {self.x_min}..{self.x_max}, y {self.y_min}..{self.y_max})"
            )
        if self.x_min < 0 or self.y_min < 0 or self.x_max > width or self.y_max > height:
            corners = (self.x_min, self.y_min, self.x_max, self.y_max)
            raise ImageInputError(f"{name}: {corners} is outside the {width}x{height} image")


def choose_bucket(
    height: int, width: int, resolution: str = "480p", table: dict[str, tuple[int, int]] | None = None
) -> tuple[int, int]:
    """The bucket whose height/width ratio is closest to the image's (ties: the smaller ratio, as the official)."""
    if table is None:
        if resolution not in BUCKETS:
            raise ImageInputError(f"resolution must be one of {sorted(BUCKETS)}, got {resolution!r}")
        table = BUCKETS[resolution]
    ratio = height / width
    key = sorted(table, key=lambda k: abs(float(k) - ratio))[0]
    return table[key]


def _scaled_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    scale = max(target[0] / height, target[1] / width)
    return math.ceil(scale * height), math.ceil(scale * width)


def _crop_offsets(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """Centre-crop offsets with torchvision's rounding (Python ``round``: halves to even)."""
    return round((size[0] - target[0]) / 2.0), round((size[1] - target[1]) / 2.0)


def resize_and_center_crop(image: Image.Image, target: tuple[int, int]) -> torch.Tensor:
    """Scale (bilinear) so the image covers ``target`` = (height, width), then centre-crop: ``[3, H, W]`` in [-1, 1]."""
    final_h, final_w = _scaled_size(image.height, image.width, target)
    resized = np.asarray(image.convert("RGB").resize((final_w, final_h), resample=Image.BILINEAR))
    top, left = _crop_offsets((final_h, final_w), target)
    crop = resized[top : top + target[0], left : left + target[1]]
    return (torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 255 - 0.5) * 2


MAX_BOX_OVERLAP = 0.5  # two person boxes may touch or overlap a little, not cover the same person


def person_masks(height: int, width: int, boxes: list[Box] | None, speakers: int) -> torch.Tensor:
    """``[3, height, width]`` source-resolution masks: person 1, person 2, background (the official construction).

    One speaker: all ones (unused). Two speakers: the boxes, or by default the left and right halves inset by 5 %;
    background is everything outside every person.
    """
    if speakers == 1:
        if boxes is not None:
            raise ImageInputError(
                "person boxes are for two speakers, but one audio track was given (add the second speaker's "
                "audio, or null for a silent second person)"
            )
        return torch.ones(3, height, width)
    if boxes is not None:
        if len(boxes) != MAX_SPEAKERS:
            raise ImageInputError(f"two speakers need two boxes, got {len(boxes)}")
        people = []
        for i, box in enumerate(boxes):
            box.validate(width, height, f"box of person {i + 1}")
            m = torch.zeros(height, width)
            m[int(box.y_min) : int(box.y_max), int(box.x_min) : int(box.x_max)] = 1
            if not m.any():
                raise ImageInputError(f"box of person {i + 1} covers no whole pixel")
            people.append(m)
        shared = float((people[0] * people[1]).sum())
        smaller = float(min(people[0].sum(), people[1].sum()))
        if shared > MAX_BOX_OVERLAP * smaller:
            raise ImageInputError(
                f"the boxes of person 1 and person 2 overlap on {shared / smaller:.0%} of the smaller one: each "
                "speaker needs their own region (draw them with a mask preview)"
            )
    else:
        r0, r1 = int(height * FACE_SCALE), int(height * (1 - FACE_SCALE))
        half = width // 2
        left = (int(half * FACE_SCALE), int(half * (1 - FACE_SCALE)))
        right = (int(half * FACE_SCALE + half), int(half * (1 - FACE_SCALE) + half))
        people = []
        for c0, c1 in (left, right):
            m = torch.zeros(height, width)
            m[r0:r1, c0:c1] = 1
            people.append(m)
    background = ((people[0] + people[1]) == 0).float()
    return torch.stack([*people, background])


def crop_masks(masks: torch.Tensor, target: tuple[int, int]) -> torch.Tensor:
    """Source-resolution masks -> the image's resize (nearest) and centre crop -> ``[3, H, W]``."""
    final = _scaled_size(masks.shape[1], masks.shape[2], target)
    resized = F.interpolate(masks[None].float(), size=final, mode="nearest")[0]
    top, left = _crop_offsets(final, target)
    return resized[:, top : top + target[0], left : left + target[1]]


def latent_masks(masks: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Bucket-resolution masks -> latent resolution (nearest), binarised: what the transformer takes."""
    return (F.interpolate(masks[None].float(), size=latent_size, mode="nearest")[0] > 0).float()


def mask_preview(image: torch.Tensor, masks: torch.Tensor) -> Image.Image:
    """The bucketed reference image with person 1 tinted red and person 2 blue, outlined: what the model will use."""
    rgb = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy().astype(np.float32)
    colours = (np.array([255, 40, 40], np.float32), np.array([40, 110, 255], np.float32))
    for mask, colour in zip(masks[:2].numpy() > 0, colours, strict=True):
        rgb[mask] = 0.55 * rgb[mask] + 0.45 * colour
    out = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for i, (mask, colour) in enumerate(zip(masks[:2].numpy() > 0, colours, strict=True)):
        ys, xs = np.nonzero(mask)
        if len(xs):
            box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
            draw.rectangle(box, outline=tuple(int(c) for c in colour), width=3)
            draw.text((box[0] + 6, box[1] + 4), f"person {i + 1}", fill=tuple(int(c) for c in colour))
    return out

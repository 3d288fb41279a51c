"""Image-side conditioning: resolution buckets, resize + centre crop, person masks, the mask preview.

Person boxes use one explicit convention everywhere in this project: ``(x_min, y_min, x_max, y_max)`` in pixels
of the **source image**, x = column, y = row, max exclusive (like Python slices). The official JSON's ``bbox``
lists ``[y_min, x_min, y_max, x_max]`` despite its field names; ``Box.from_official`` converts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..errors import ImageInputError
from ..limits import MAX_SPEAKERS

# Target [height, width] per height/width ratio (the official ASPECT_RATIO_627 / ASPECT_RATIO_960 tables), and
# FlashTalk's: its code runs 768x448 (portrait) only; ours keeps that pixel count (about 344k, multiples of 16) for
# other shapes, so a landscape or square image is not cropped to a portrait.
BUCKETS: dict[str, dict[str, tuple[int, int]]] = {
    "flashtalk": {
        "0.58": (448, 768),
        "0.76": (512, 672),
        "1.00": (592, 592),
        "1.31": (672, 512),
        "1.71": (768, 448),
    },
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
    """A person's region in source-image pixels: columns ``x_min..x_max``, rows ``y_min..y_max`` (max exclusive).
    ``official``: it came from the official JSON's ``bbox`` (row first), which only changes the hints of messages."""

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    official: bool = field(default=False, compare=False, repr=False)

    @classmethod
    def from_official(cls, bbox: list[float]) -> Box:
        """The official JSON's ``[y_min, x_min, y_max, x_max]`` (it fills rows a:c, columns b:d)."""
        a, b, c, d = bbox
        return cls(x_min=b, y_min=a, x_max=d, y_max=c, official=True)

    def transposed(self) -> Box:
        """The same numbers read the other way round (x for y): what a box in the wrong order meant."""
        return Box(self.y_min, self.x_min, self.y_max, self.x_max, official=self.official)

    def inside(self, width: int, height: int) -> bool:
        return 0 <= self.x_min < self.x_max <= width and 0 <= self.y_min < self.y_max <= height

    def validate(self, width: int, height: int, name: str = "box") -> None:
        values = (self.x_min, self.y_min, self.x_max, self.y_max)
        if not all(math.isfinite(v) for v in values):
            raise ImageInputError(f"{name}: coordinates must be finite numbers, got {values}")
        if self.x_min >= self.x_max or self.y_min >= self.y_max:
            raise ImageInputError(
                f"{name}: inverted or empty (x {self.x_min:g}..{self.x_max:g}, y {self.y_min:g}..{self.y_max:g})"
            )
        if not self.inside(width, height):
            corners = f"x {self.x_min:g}..{self.x_max:g}, y {self.y_min:g}..{self.y_max:g}"
            hint = ""
            if self.transposed().inside(width, height):
                if self.official:
                    hint = (
                        "; read x first it would fit: the official bbox is [y_min, x_min, y_max, x_max] (row first), "
                        "so swap the numbers, or give boxes as [x_min, y_min, x_max, y_max]"
                    )
                else:
                    hint = (
                        "; read y first, as the official bbox [y_min, x_min, y_max, x_max], it would fit: boxes here "
                        "are x first (x_min, y_min, x_max, y_max), so swap the numbers"
                    )
            raise ImageInputError(f"{name}: {corners} is outside the {width}x{height} image{hint}")


def boxes_overlap(boxes: list[Box], width: int, height: int, first: str = "person 1", second: str = "person 2") -> None:
    """Two person boxes may touch or overlap a little, not cover the same person (``MAX_BOX_OVERLAP`` of the
    smaller one); a box must cover a whole pixel. Works on the pixels the masks will cover, without building them."""

    def pixels(box: Box) -> tuple[int, int, int, int]:
        x0, y0 = max(int(box.x_min), 0), max(int(box.y_min), 0)
        return x0, y0, max(min(int(box.x_max), width), x0), max(min(int(box.y_max), height), y0)

    spans = [pixels(b) for b in boxes]
    areas = [(x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in spans]
    for area, name in zip(areas, (first, second), strict=False):
        if area == 0:
            raise ImageInputError(f"{name}: covers no whole pixel")
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = spans
    shared = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    smaller = min(areas)
    if shared > MAX_BOX_OVERLAP * smaller:
        raise ImageInputError(
            f"{first} and {second} overlap on {shared / smaller:.0%} of the smaller one: each speaker needs their "
            "own region (draw them with a mask preview)"
        )


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
            raise ImageInputError(f"two speakers need two boxes, got {len(boxes)} box{'' if len(boxes) == 1 else 'es'}")
        for i, box in enumerate(boxes):
            box.validate(width, height, f"box of person {i + 1}")
        boxes_overlap(boxes, width, height, "the box of person 1", "the box of person 2")
        people = []
        for box in boxes:
            m = torch.zeros(height, width)
            m[int(box.y_min) : int(box.y_max), int(box.x_min) : int(box.x_max)] = 1
            people.append(m)
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


def mask_preview(image: torch.Tensor, masks: torch.Tensor, speakers: int = 2) -> Image.Image:
    """The bucketed reference image with person 1 tinted red and person 2 blue, outlined and labelled: what the
    model will use. One speaker: the model routes nothing (the whole picture is that speaker), and the preview
    says so. Labels are sized to the picture and drawn on a dark plate, readable at 128 px as at 1280 px."""
    rgb = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy().astype(np.float32)
    colours = (np.array([255, 40, 40], np.float32), np.array([40, 110, 255], np.float32))
    people = masks[: min(max(speakers, 1), 2)].numpy() > 0
    labels = ["one speaker: the whole picture"] if speakers == 1 else ["person 1", "person 2"]
    for mask, colour in zip(people, colours, strict=False):
        rgb[mask] = 0.55 * rgb[mask] + 0.45 * colour
    out = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    side = min(out.width, out.height)
    font = _label_font(max(10, side // 14))
    line = max(1, side // 80)
    for mask, colour, label in zip(people, colours, labels, strict=False):
        ys, xs = np.nonzero(mask)
        if not len(xs):
            continue
        rgb_colour = tuple(int(c) for c in colour)
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        draw.rectangle(box, outline=rgb_colour, width=line)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        pad = max(2, (bottom - top) // 4)
        x = min(box[0] + line + pad, max(out.width - (right - left) - 2 * pad, 0))
        y = min(box[1] + line + pad, max(out.height - (bottom - top) - 2 * pad, 0))
        draw.rectangle((x - pad, y - pad, x + right - left + pad, y + bottom - top + pad), fill=(0, 0, 0))
        draw.text((x - left, y - top), label, fill=rgb_colour, font=font)
    return out


def _label_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError):
        return ImageFont.load_default()

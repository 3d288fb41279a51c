"""Colour correction of generated clips against the reference image, in CIE Lab (the official recipe).

Per frame and per Lab channel: ``(x - mean_frame) * std_ref / std_frame + mean_ref`` (a flat channel takes the
reference mean), back to RGB, clipped, then blended with the uncorrected frame by ``strength``. The sRGB <-> Lab
conversion follows scikit-image's (D65, 2 degree observer), in float64.
"""

from __future__ import annotations

import torch

XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
RGB_FROM_XYZ = torch.linalg.inv(XYZ_FROM_RGB)
D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)


def rgb_to_lab(rgb: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``[..., 3]`` sRGB in [0, 1] -> Lab (computed in ``dtype``: float64 for the correction, float32 for the drift
    check's statistics, where a thousandth of a Lab unit does not matter)."""
    rgb = rgb.to(dtype)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ XYZ_FROM_RGB.to(rgb.device, dtype).T / D65.to(rgb.device, dtype)
    f = torch.where(xyz > 0.008856, torch.pow(xyz.clamp(min=0), 1 / 3), 7.787 * xyz + 16 / 116)
    x, y, z = f.unbind(-1)
    return torch.stack([116 * y - 16, 500 * (x - y), 200 * (y - z)], dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` Lab -> sRGB clipped to [0, 1]."""
    lab = lab.double()
    light, a, b = lab.unbind(-1)
    y = (light + 16) / 116
    xyz = torch.stack([a / 500 + y, y, (y - b / 200).clamp(min=0)], dim=-1)
    xyz = torch.where(xyz > 0.2068966, xyz**3, (xyz - 16 / 116) / 7.787) * D65.to(lab.device)
    linear = xyz @ RGB_FROM_XYZ.to(lab.device).T
    rgb = torch.where(linear > 0.0031308, 1.055 * torch.pow(linear.clamp(min=0), 1 / 2.4) - 0.055, linear * 12.92)
    return rgb.clamp(0, 1)


def match_colors(frames: torch.Tensor, reference: torch.Tensor, strength: float = 1.0, chunk: int = 8) -> torch.Tensor:
    """Correct ``frames`` ``[3, F, H, W]`` in [-1, 1] towards ``reference`` ``[3, H, W]`` in [-1, 1]."""
    if strength == 0.0:
        return frames
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"colour correction strength must be in [0, 1], got {strength}")
    ref_lab = rgb_to_lab(((reference.permute(1, 2, 0).double() + 1) / 2).clamp(0, 1))
    ref_mean, ref_std = ref_lab.mean(dim=(0, 1)), ref_lab.std(dim=(0, 1), correction=0)
    out = torch.empty_like(frames)
    for start in range(0, frames.shape[1], chunk):
        src = ((frames[:, start : start + chunk].permute(1, 2, 3, 0).double() + 1) / 2).clamp(0, 1)  # [f, H, W, 3]
        lab = rgb_to_lab(src)
        mean = lab.mean(dim=(1, 2), keepdim=True)
        std = lab.std(dim=(1, 2), keepdim=True, correction=0)
        matched = torch.where(std == 0, ref_mean.expand_as(lab), (lab - mean) * (ref_std / std) + ref_mean)
        blended = (1 - strength) * src + strength * lab_to_rgb(matched)
        out[:, start : start + chunk] = (blended * 2 - 1).permute(3, 0, 1, 2).to(frames.dtype)
    return out


# SoulX-FlashTalk's own Lab conversion (``multitalk_utils.match_and_blend_colors_torch``): the sRGB matrices to 7
# digits, XYZ clipped to [1e-8, 1] before the cube root, the CIE kappa / epsilon form of the inverse, no clipping of
# the input, a flat channel keeps its offset (its std taken as 1), computed in float32.
FT_XYZ_FROM_RGB = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
FT_RGB_FROM_XYZ = torch.tensor(
    [[3.2404542, -1.5371385, -0.4985314], [-0.9692660, 1.8760108, 0.0415560], [0.0556434, -0.2040259, 1.0572252]]
)
FT_WHITE = torch.tensor([0.95047, 1.0, 1.08883])
CIE_EPSILON, CIE_KAPPA = 0.008856, 903.3


def _ft_rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = (linear @ FT_XYZ_FROM_RGB.to(rgb).T / FT_WHITE.to(rgb)).clamp(1e-8, 1.0)
    f = torch.where(xyz > CIE_EPSILON, xyz ** (1 / 3), (CIE_KAPPA * xyz + 16) / 116)
    fx, fy, fz = f.unbind(-1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-1)


def _ft_lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    light, a, b = lab.unbind(-1)
    fy = (light + 16) / 116
    fx, fz = a / 500 + fy, fy - b / 200
    x = torch.where(fx**3 > CIE_EPSILON, fx**3, (116 * fx - 16) / CIE_KAPPA)
    y = torch.where(light > CIE_KAPPA * CIE_EPSILON, fy**3, light / CIE_KAPPA)
    z = torch.where(fz**3 > CIE_EPSILON, fz**3, (116 * fz - 16) / CIE_KAPPA)
    linear = (torch.stack([x, y, z], dim=-1) * FT_WHITE.to(lab)) @ FT_RGB_FROM_XYZ.to(lab).T
    rgb = torch.where(linear > 0.0031308, 1.055 * linear.clamp(min=0) ** (1 / 2.4) - 0.055, 12.92 * linear)
    return rgb.clamp(0, 1)


def match_colors_flashtalk(
    frames: torch.Tensor, reference: torch.Tensor, strength: float = 1.0, chunk: int = 8
) -> torch.Tensor:
    """FlashTalk's colour correction of ``frames`` ``[3, F, H, W]`` towards ``reference`` ``[3, H, W]`` (both in
    [-1, 1]): per frame and Lab channel ``(x - mean) * std_ref / std + mean_ref``, blended by ``strength``."""
    if strength <= 0.0:
        return frames
    if not strength <= 1.0:
        raise ValueError(f"colour correction strength must be in [0, 1], got {strength}")
    ref_lab = _ft_rgb_to_lab((reference.permute(1, 2, 0).float() + 1) / 2)
    ref_mean, ref_std = ref_lab.mean(dim=(0, 1)), ref_lab.std(dim=(0, 1), correction=0)
    out = torch.empty_like(frames)
    for start in range(0, frames.shape[1], chunk):
        src = (frames[:, start : start + chunk].permute(1, 2, 3, 0).float() + 1) / 2  # [f, H, W, 3]
        lab = _ft_rgb_to_lab(src)
        mean = lab.mean(dim=(1, 2), keepdim=True)
        std = lab.std(dim=(1, 2), keepdim=True, correction=0)
        std = torch.where(std < 1e-8, torch.ones_like(std), std)
        matched = _ft_lab_to_rgb((lab - mean) * (ref_std / std) + ref_mean)
        blended = (1 - strength) * src + strength * matched
        out[:, start : start + chunk] = (blended * 2 - 1).permute(3, 0, 1, 2).to(frames.dtype)
    return out


def correct_colors(
    frames: torch.Tensor, reference: torch.Tensor, strength: float = 1.0, method: str = "skimage"
) -> torch.Tensor:
    """Colour correction by a model's method (``LoopVariant.color``): ``skimage`` (MultiTalk, InfiniteTalk) or
    ``flashtalk``."""
    if method == "flashtalk":
        return match_colors_flashtalk(frames, reference, strength)
    return match_colors(frames, reference, strength)

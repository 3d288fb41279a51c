"""Small adapters around the library models the pipeline uses, each doing exactly what the official code does.

- ``T5TextEncoder``: UMT5 encoder; prompts cleaned (ftfy, HTML entities, whitespace), tokenized to 512 with the
  attention mask, outputs cut to each prompt's real length (the transformer pads them back with zeros).
- ``ClipImageEncoder``: CLIP vision tower; the [-1, 1] frame is *squashed* to 224x224 (bicubic, no crop, no
  antialias), mapped to [0, 1] and normalised; the penultimate hidden states ``[1, 257, C]`` are returned.
- ``WanVideoVAE``: diffusers' ``AutoencoderKLWan``; encode gives the posterior mean normalised with the 16
  latent means/stds, decode undoes that and clamps to [-1, 1].
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from ..libraries import quiet_transformers
from ..loading.encoders import build, image_encoder_source, text_encoder_source, vae_source
from ..loading.original_encoders import CLIP_MEAN, CLIP_STD

TEXT_LEN = 512
CLIP_SIZE = 224


def clip_dtype(dtype: torch.dtype) -> torch.dtype:
    """The CLIP image encoder's dtype in a pipeline running in ``dtype``: float16 in half precision, as the official
    (``clip_dtype = torch.float16``), else ``dtype``. fp16 keeps 3 more mantissa bits than bf16: on the tiny CLIP
    its penultimate features are 8x closer to fp32 (relative L2 7.0e-4 against 5.6e-3 in bf16), at the same memory;
    the official runs the published weights in fp16, so their activations fit its range."""
    return torch.float16 if dtype in (torch.bfloat16, torch.float16) else dtype


NEGATIVE_PROMPT = (
    "bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, "
    "messy background, three legs, many people in the background, walking backwards"
)


def clean_prompt(text: str) -> str:
    """The official T5 text cleaning: ftfy, HTML entities (twice), whitespace collapsed."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


class T5TextEncoder:
    def __init__(self, tokenizer, model, device: str | torch.device = "cpu"):
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.device = torch.device(device)
        self.home = self.device  # where the weights live between prompts (``offload``)

    def offload(self, home: str | torch.device = "cpu") -> None:
        """Keep the weights on ``home`` (host memory) and bring them to the device only while encoding: the UMT5-XXL
        encoder is 11.4 GB in bf16, used once or twice per job (the negative prompt's features are cached)."""
        self.home = torch.device(home)
        self.model.to(self.home)

    @classmethod
    def from_pretrained(
        cls,
        tokenizer_dir: str | Path,
        model_path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.bfloat16,
    ) -> T5TextEncoder:
        """``model_path``: a diffusers ``text_encoder`` folder or the original ``models_t5_*.pth``."""
        from transformers import AutoTokenizer

        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        return cls(tokenizer, build(text_encoder_source(model_path), dtype, device), device)

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> list[torch.Tensor]:
        """Each prompt -> ``[tokens, C]`` (float32, on the encoder's device), cut to its real length."""
        ids = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="max_length",
            truncation=True,
            max_length=TEXT_LEN,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        mask = ids.attention_mask.to(self.device)
        if self.home != self.device:
            self.model.to(self.device)
        try:
            hidden = self.model(ids.input_ids.to(self.device), mask).last_hidden_state.float()
        finally:
            if self.home != self.device:
                self.model.to(self.home)
        return [h[: int(n)] for h, n in zip(hidden, mask.sum(dim=1), strict=True)]


class ClipImageEncoder:
    def __init__(self, model, mean: list[float], std: list[float], device: str | torch.device = "cpu"):
        self.model = model.eval().requires_grad_(False)
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained(
        cls,
        model_path: str | Path,
        processor_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float16,
    ) -> ClipImageEncoder:
        """``model_path``: a diffusers ``image_encoder`` folder or the original open-clip ``.pth``; the
        normalisation comes from ``processor_dir``'s ``preprocessor_config.json``, else the official constants."""
        import json

        mean, std = CLIP_MEAN, CLIP_STD
        if processor_dir is not None:
            config = json.loads((Path(processor_dir) / "preprocessor_config.json").read_text())
            mean, std = config["image_mean"], config["image_std"]
        return cls(build(image_encoder_source(model_path), dtype, device), mean, std, device)

    @torch.no_grad()
    def __call__(self, frame: torch.Tensor) -> torch.Tensor:
        """``[3, H, W]`` in [-1, 1] -> ``[1, 257, C]`` penultimate hidden states (float32)."""
        x = F.interpolate(
            frame[None].float().to(self.device), size=(CLIP_SIZE, CLIP_SIZE), mode="bicubic", align_corners=False
        )
        x = ((x * 0.5 + 0.5) - self.mean) / self.std
        dtype = next(self.model.parameters()).dtype
        return self.model(x.to(dtype), output_hidden_states=True).hidden_states[-2].float()


class WanVideoVAE:
    def __init__(self, vae, device: str | torch.device = "cpu"):
        self.vae = vae.eval().requires_grad_(False)
        self.device = torch.device(device)
        cfg = vae.config
        self.mean = torch.tensor(cfg.latents_mean, device=self.device).view(-1, 1, 1, 1)
        self.std = torch.tensor(cfg.latents_std, device=self.device).view(-1, 1, 1, 1)
        self.dtype = next(vae.parameters()).dtype

    @classmethod
    def from_pretrained(
        cls, vae_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> WanVideoVAE:
        """``vae_path``: a diffusers ``vae`` folder or the original ``Wan2.1_VAE.pth``."""

        return cls(build(vae_source(vae_path), dtype, device), device)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """``[3, F, H, W]`` in [-1, 1] -> normalised latents ``[16, T, h, w]`` (float32). ``progress(done, total)``
        after every chunk of frames the encoder takes (1, then 4 at a time: one per latent frame)."""
        total = 1 + (video.shape[1] - 1) // 4
        with _counting_calls(getattr(self.vae, "encoder", None), total, progress):
            z = self.vae.encode(video[None].to(self.device, self.dtype)).latent_dist.mode()[0].float()
        return (z - self.mean) / self.std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """Normalised latents ``[16, T, h, w]`` -> ``[3, F, H, W]`` in [-1, 1] (float32). ``progress(done, total)``
        after every latent frame decoded (the decoder runs frame by frame, carrying its causal cache)."""
        z = latents.to(self.device).float() * self.std + self.mean
        with _counting_calls(getattr(self.vae, "decoder", None), latents.shape[1], progress):
            return self.vae.decode(z[None].to(self.dtype)).sample[0].float().clamp(-1, 1)


@contextmanager
def _counting_calls(module, total: int, progress: Callable[[int, int], None] | None) -> Iterator[None]:
    """Report ``progress(calls so far, total)`` after each forward of ``module`` (the VAE's encoder or decoder, called
    once per chunk of frames by diffusers' Wan VAE). Without a module or a callback, nothing is hooked."""
    if module is None or progress is None:
        yield
        return
    calls = 0

    def hook(_module, _args, _output) -> None:
        nonlocal calls
        calls += 1
        progress(min(calls, total), total)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()

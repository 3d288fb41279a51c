"""multitalk-serve: talking videos from a picture or a video, one or two voices and a prompt (MeiGen MultiTalk,
InfiniteTalk).

Verbs:
  generate           image (or video) + one or two voices + prompt -> talking MP4
  profiles           the download profiles: sizes on disk and GPU memory for the weights
  download           fetch a profile into a model directory (a network volume), verified and resumable
  verify             check a model directory is complete and consistent (what the worker checks at start)
  make-tiny DIR      write seeded random-weight models in every published layout (see multitalk_serve.tiny)
  forward MODEL      load a transformer from any layout and time one forward pass on random inputs
  layouts [DIR]      make-tiny if needed, then one forward from each layout, side by side
  demo [DIR]         layouts, then a whole video on the tiny model
  demo-inputs DIR    write a drawn two-person picture and two synthetic voices (portrait.png, voice1/2.wav)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from .engine import DEFAULT_PRESET, DEFAULT_SPEED_LORA_SCALE, DTYPES, PRESETS


def _cmd_make_tiny(args: argparse.Namespace) -> int:
    from .tiny import PARITY_DIMS, write_original_layout, write_tiny_models

    start = time.perf_counter()
    if args.parity:
        write_original_layout(Path(args.dir), PARITY_DIMS, args.seed)
        print(f"wrote the parity checkpoint (original layout + MultiTalk) to {args.dir}")
    else:
        manifest = write_tiny_models(args.dir, seed=args.seed)
        print(json.dumps(manifest, indent=2))
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_forward(args: argparse.Namespace) -> int:
    from .forward_check import run_forward

    result = run_forward(
        args.model,
        args.multitalk,
        speakers=args.speakers,
        frames=args.frames,
        height=args.height,
        width=args.width,
        dtype=DTYPES[args.dtype],
        device=args.device,
        repeats=args.repeats,
    )
    print(json.dumps(result, indent=2))
    return 0


class ProgressBar:
    """One status line on stderr: stage, clip, step or frames, a bar for the whole job, elapsed and remaining time
    (``ProgressClock``: the VAE's encode and decode counted, not only the sampling steps). On a terminal the line
    is redrawn in place; in a log, a line per stage and at most one every ``log_every`` seconds within one."""

    def __init__(self, stream=None, log_every: float = 5.0):
        from .engine import ProgressClock

        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.clock = ProgressClock()
        self.log_every, self.last_line, self.last_stage = log_every, -1e9, None

    def __call__(self, progress) -> None:
        fraction, left = self.clock.update(progress)
        elapsed = self.clock.now() - self.clock.start
        where = f"clip {progress.clip}/{progress.total_clips} " if progress.total_clips > 1 else ""
        stage = progress.stage
        if stage == "sampling":
            what = f"{where}step {progress.step}/{progress.total_steps}"
        elif stage in ("encoding", "decoding"):
            unit = "condition frames" if stage == "encoding" else "frames"
            count = f" {unit} {progress.done}/{progress.total}" if progress.total else ""
            what = f"{where}{'VAE encode' if stage == 'encoding' else 'VAE decode'}{count}"
        else:
            what = {"audio": "audio: decoding, wav2vec2", "conditioning": "image, masks, prompt"}.get(stage, stage)
        eta = "" if left is None else f", ~{left:.0f}s left"
        bar = "#" * int(fraction * 24)
        line = f"{what:<34} [{bar:<24}] {fraction:4.0%}  {elapsed:6.1f}s elapsed{eta}"
        now = self.clock.now()
        if not self.tty and stage == self.last_stage and now - self.last_line < self.log_every:
            return
        self.last_line, self.last_stage = now, stage
        end = "\n" if stage == "done" or not self.tty else ""
        self.stream.write(("\r" if self.tty else "") + line.ljust(100)[:100] + end)
        self.stream.flush()


def _default_dest() -> str:
    import os

    return os.environ.get("MODEL_PATH") or "/runpod-volume/models"


def _cmd_profiles(args: argparse.Namespace) -> int:
    from .provision.profiles import PROFILES, profile

    print(profiles_table())
    if args.verbose:
        for default in PROFILES.values():
            print(f"\n{default.name}: {default.summary}")
            every = profile(default.name, "all")
            for fetch in every.fetches:
                cast = f"; bf16 on arrival: {', '.join(fetch.to_bf16)}" if fetch.to_bf16 else ""
                note = "" if fetch in default.fetches else " (with --models)"
                print(
                    f"  {fetch.repo_id}@{fetch.revision} -> {fetch.folder or '.'}/: "
                    f"{', '.join(fetch.include)}{cast}{note}"
                )
    return 0


def profiles_table() -> str:
    """The profile tables of docs/provisioning.md (kept in sync by a test): the profiles with their default audio
    model (MultiTalk), then what the audio models chosen with ``download --models`` change."""
    from .provision.profiles import PROFILES, VOLUME_GB, estimate

    rows = [
        "| profile | what | download | on the volume | GPU memory for the weights |",
        "|---|---|---|---|---|",
    ]
    for name, profile in PROFILES.items():
        e = estimate(name)
        rows.append(
            f"| `{name}` | {profile.summary} | {e.download_gb:.1f} GB | {e.disk_gb:.1f} GB | "
            f"{e.gpu_weights_gb:.1f} GB ({e.transformer_gb:.1f} transformer + {e.encoders_gb:.1f} encoders) |"
        )
    rows += [
        "",
        "| profile | `--models` | download | on the volume | most on the volume while downloading "
        f"| fits {VOLUME_GB:.0f} GB (+ speed LoRA) | host memory to switch between them |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in PROFILES:
        for models in ("multitalk", "infinitetalk-single", "infinitetalk", "all"):
            e = estimate(name, models)
            lora = estimate(name, models, speed_lora=True)
            fits = "yes" if max(lora.disk_gb, lora.peak_gb) < VOLUME_GB else "**no**"
            host = f"{e.adapter_host_gb:.1f} GB" if e.adapter_host_gb else "-"
            rows.append(
                f"| `{name}` | `{models}` | {e.download_gb:.1f} GB | {e.disk_gb:.1f} GB | {e.peak_gb:.1f} GB | "
                f"{fits} ({lora.disk_gb:.1f} GB) | {host} |"
            )
    return "\n".join(rows)


def _cmd_download(args: argparse.Namespace) -> int:
    from .provision.download import Downloader, DownloadError
    from .provision.profiles import profile as make_profile
    from .provision.profiles import with_speed_lora, with_tts

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    chosen = make_profile(args.profile, args.models)
    profile = with_speed_lora(chosen) if args.speed_lora else chosen
    profile = with_tts(profile) if args.tts else profile
    downloader = Downloader(
        args.dest,
        profile,
        workers=args.workers,
        verify_hashes=args.verify_hashes,
        use_cache=not args.no_cache,
        log=log,
        progress_interval=args.progress_every,
    )
    try:
        report = downloader.run(dry_run=args.dry_run)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), indent=2))
    if args.dry_run:
        return 0
    return _cmd_verify(
        argparse.Namespace(
            dest=args.dest,
            hashes=False,
            transformer=None,
            json=False,
            quiet=True,
            models=",".join(chosen.models),
            tts=args.tts or None,
        )
    )


def _cmd_verify(args: argparse.Namespace) -> int:
    from .provision.verify import verify_model_dir

    models = getattr(args, "models", None)
    tts = getattr(args, "tts", None)
    result = verify_model_dir(args.dest, hashes=args.hashes, transformer=args.transformer, adapters=models, tts=tts)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        return 0 if result.ok else 1
    for component in result.inventory.components:
        state = "ok" if component.problem is None else "PROBLEM"
        size = f"{component.bytes / 1e9:.2f} GB" if component.bytes else ""
        if not getattr(args, "quiet", False) or component.problem:
            print(f"{component.name:<16}{state:<9}{component.layout:<20}{size:>10}  {component.path}")
    for note in result.notes:
        print(f"note: {note}")
    for problem in result.all_problems:
        print(f"problem: {problem}", file=sys.stderr)
    verdict = "complete and consistent" if result.ok else f"{len(result.all_problems)} problem(s)"
    hashed = f", {result.files_hashed} files re-hashed" if result.files_hashed else ""
    print(f"{args.dest}: {verdict}{hashed}")
    return 0 if result.ok else 1


def _parse_models(text: str) -> str:
    from .provision.profiles import parse_models

    try:
        return ",".join(parse_models(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parse_box(text: str):
    from .engine import Box

    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a box is X_MIN,Y_MIN,X_MAX,Y_MAX in image pixels, got {text!r}") from None
    return Box(x0, y0, x1, y1)


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size is HEIGHTxWIDTH, got {text!r}") from None
    return h, w


def _parse_steps(text: str) -> int:
    from .engine import MAX_STEPS

    try:
        steps = int(text)
    except ValueError:
        steps = 0
    if not 1 <= steps <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"steps is a whole number 1..{MAX_STEPS}, got {text!r}")
    return steps


CLI_INPUT_NAMES_KW = {
    "image": "--image",
    "video": "--video",
    "mask": "--mask-image",
    "audio": "--audio",
    "speaker": "--audio (speaker {n})",
    "boxes": "--box",
    "box": "--box (person {n})",
    "output": "--out",
    "mask_preview": "--mask-preview",
    "thumbnail": "--thumbnail",
    "prompt": "--prompt",
}


def _job_inputs(args: argparse.Namespace):
    """image, audio list, prompt, boxes, audio type, output and the names to use in messages, from the options and
    (with --input-json) the official JSON file; a value given both ways is an error."""
    from .engine import EngineError, InputError, InputNames

    names = InputNames(**CLI_INPUT_NAMES_KW)
    image, prompt, boxes, audio_type, out = args.image, args.prompt, args.box, args.audio_type, args.out
    video, json_model, json_speech = args.video, None, None
    if image is not None and video is not None:
        raise InputError("--image and --video both give the source: give one (an image to animate, a video to dub)")
    audio = None if args.audio is None else [None if a.lower() == "none" else a for a in args.audio]
    if args.input_json:
        from .input_json import JSON_NAMES, read_input_json

        job = read_input_json(args.input_json)
        source_option = "--video" if video is not None else "--image"
        given = {
            source_option: (image if video is None else video, job.source_key),
            "--audio": (audio, "cond_audio"),
            "--prompt": (prompt, "prompt" if job.prompt is not None else None),
            "--box": (boxes, "bbox" if job.boxes is not None else None),
            "--audio-type": (audio_type, "audio_type" if job.audio_type is not None else None),
        }
        for option, (value, field) in given.items():
            if value is not None and field is not None:
                raise InputError(f"{option} and {field} in {args.input_json} both give the same input: give one")
        image, video, audio = job.image, job.video, job.audio
        json_model, json_speech = ("infinitetalk" if job.infinitetalk else None), job.speech
        prompt = prompt if job.prompt is None else job.prompt
        boxes = boxes if job.boxes is None else job.boxes
        audio_type = audio_type if job.audio_type is None else job.audio_type
        out = out or str(Path(job.path.stem + ".mp4"))
        field_names = {**vars(JSON_NAMES), "image": job.source_key}
        # what came from the command line keeps its option's name
        for key, option in (("prompt", "--prompt"), ("boxes", "--box"), ("box", "--box (person {n})")):
            if (key == "prompt" and job.prompt is None) or (key != "prompt" and job.boxes is None):
                field_names[key] = option
        names = InputNames(**field_names)
    source = image if video is None else video
    from .cli_speech import speech_request

    speech = speech_request(args, json_speech)  # --text or tts_audio: the audio comes from the text
    audio = audio if speech is None else []
    given = (("--image", source), ("--audio", audio or speech), ("--prompt", prompt), ("--out", out))
    missing = [f for f, v in given if not v]
    if missing:
        missing = [m if m != "--image" else "--image (or --video)" for m in missing]
        raise EngineError(f"{', '.join(missing)} required (or --input-json FILE, the official JSON)")
    return image, video, audio, prompt, boxes, audio_type or "add", out, names, json_model, speech


def _place(made: Path, final: Path, option: str = "--out", what: str = "finished video") -> Path:
    """Move a finished file to where it was asked for; a failure keeps it where it is and says so."""
    import shutil

    try:
        return Path(shutil.move(str(made), str(final)))
    except OSError as exc:
        raise VideoKeptError(
            f"{option}: could not write {final} ({exc.strerror or exc}); the {what} is kept at {made}"
        ) from None


class VideoKeptError(Exception):
    """Writing the video where it was asked for failed at the end; it was kept elsewhere (named in the message)."""


MODEL_NAMES = ("multitalk", "infinitetalk", "infinitetalk-single", "infinitetalk-multi")  # engine's MODEL_CHOICES


def _model_options(model: str, speakers: int, source_end: str, keep_background: bool, feather: float | None) -> dict:
    """The ``GenerateOptions`` fields of the model choice: ``infinitetalk`` becomes the adapter for the speaker count
    (single for one, multi for two), as the worker does."""
    if model == "infinitetalk":
        model = "infinitetalk-single" if speakers == 1 else "infinitetalk-multi"
    return {"model": model, "source_end": source_end, "keep_background": keep_background, "feather": feather}


def _source_kwargs(video, mask) -> dict:
    """``video=`` / ``mask=`` for ``check_inputs`` and ``generate``, only when given."""
    extra = {}
    if video is not None:
        extra["video"] = video
    if mask is not None:
        extra["mask"] = mask
    return extra


def _cmd_generate(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from .engine import (
        CLI_NAMES,
        AudioError,
        GenerateOptions,
        InputError,
        MultiTalkPipeline,
        check_inputs,
        find_speed_lora,
        plan_speed_setup,
    )

    image, source_video, audio, prompt, boxes, audio_type, out, names, json_model, speech = _job_inputs(args)
    if not Path(args.model).is_dir():
        if args.model.strip().lower() in MODEL_NAMES:
            raise InputError(
                f"--model is the model folder; {args.model} is a model's name: choose it with --model-name "
                f"{args.model.strip().lower()}"
            )
        raise InputError(f"--model: no such folder: {args.model}")
    speech_fields = {}
    if speech is not None:  # text in: synthesise first (a few seconds), then the job runs on the speech as audio
        from .cli_speech import synthesize

        bases = [Path.cwd()] + ([Path(args.input_json).parent] if args.input_json else [])
        audio, audio_type, speech_fields = synthesize(args, speech, out, bases)
    model = args.model_name or json_model or ("infinitetalk" if source_video is not None else "multitalk")
    if source_video is not None and model == "multitalk":
        raise InputError(
            f"{names.image if args.input_json else '--video'}: MultiTalk animates an image; a video needs "
            "--model-name infinitetalk (or infinitetalk-single / infinitetalk-multi)"
        )
    if model == "infinitetalk-single" and len(audio) == 2:
        raise InputError(
            "--model-name: infinitetalk-single was trained for one speaker and this job has two audio tracks; use "
            "infinitetalk-multi (or infinitetalk, which picks it)"
        )
    keep_background = bool(args.keep_background or args.mask_image)
    if args.feather is not None and not keep_background:
        raise InputError("--feather is the edge width of --keep-background: add --keep-background (or drop it)")
    if args.mask_image is not None and not Path(args.mask_image).is_file():
        raise InputError(f"--mask-image: no such file: {args.mask_image}")
    chosen = {
        "steps": args.steps,
        "shift": args.shift,
        "text_scale": args.text_scale,
        "audio_scale": args.audio_scale,
        "cache_threshold": args.cache_threshold,
    }
    options = GenerateOptions.from_preset(
        args.preset,
        **{k: v for k, v in chosen.items() if v is not None},
        resolution=args.resolution,
        mode=args.mode,
        use_apg=args.apg,
        seed=args.seed,
        negative_prompt=args.negative_prompt,
        audio_type=audio_type,
        color_correction=args.color_correction,
        max_duration_s=args.max_duration,
        num_frames=None if args.duration is None else max(1, round(args.duration * 25)),
        crf=args.crf,
        size=args.size,
        **_model_options(model, len(audio), args.source_end, keep_background, args.feather),
    )
    # everything that can be checked without a model, before the minutes of loading one
    start = time.perf_counter()
    try:
        checked = check_inputs(
            image,
            audio,
            prompt,
            out,
            boxes=boxes,
            options=options,
            mask_preview_path=args.mask_preview,
            thumbnail=args.thumbnail,
            names=names,
            **_source_kwargs(source_video, args.mask_image),
        )
    except AudioError as exc:
        if "s limit" not in str(exc):
            raise
        raise AudioError(f"{exc} (--duration SECONDS cuts the audio; --max-duration raises the limit)") from None
    # one run, one preset: the LoRA is loaded only when the preset uses it, and then merged (no per-step cost)
    speed_lora = find_speed_lora(args.model, args.speed_lora) if options.speed_lora else None
    speed = plan_speed_setup(args.preset, speed_lora, args.speed_lora_scale, bool(options.speed_lora), CLI_NAMES)
    height, width = checked.size
    print(
        f"inputs checked in {time.perf_counter() - start:.2f} s: {checked.speakers} speaker(s), "
        f"{checked.seconds:.1f} s of video, {height}x{width} (height x width); loading the models ...",
        file=sys.stderr,
    )
    start = time.perf_counter()
    pipe = MultiTalkPipeline.from_pretrained(
        args.model,
        transformer=args.transformer,
        multitalk=args.multitalk,
        wav2vec=args.wav2vec,
        device=args.device,
        dtype=DTYPES[args.dtype],
        memory_plan=args.memory_plan,
        attention=args.attention,
        speed=speed,
        setting_names=CLI_NAMES,
        compile=args.compile,
        **({"adapters": [options.model]} if options.model != "multitalk" else {}),
    )
    plan = pipe.memory_plan.name if pipe.memory_plan else "all resident"
    print(
        f"loaded the models in {time.perf_counter() - start:.1f} s (memory plan {plan}, attention "
        f"{pipe.attention_backend})",
        file=sys.stderr,
    )
    # the video is written in a temporary folder and moved at the end: a failure there cannot lose it
    final = Path(out)
    workdir = Path(tempfile.mkdtemp(prefix="multitalk-"))
    video = workdir / final.name
    thumb = workdir / Path(args.thumbnail).name if args.thumbnail else None
    try:
        result = pipe.generate(
            image,
            audio,
            prompt,
            video,
            boxes=boxes,
            options=options,
            callback=None if args.quiet else ProgressBar(),
            thumbnail=thumb,
            mask_preview_path=args.mask_preview,
            **_source_kwargs(source_video, args.mask_image),
            **({"job_dir": Path(args.job_dir)} if args.job_dir else {}),
        )
        if args.job_dir:  # made and stored: the saved windows are no longer needed
            shutil.rmtree(args.job_dir, ignore_errors=True)
        placed = _place(video, final)
        thumb_placed = _place(thumb, Path(args.thumbnail), "--thumbnail", "thumbnail") if thumb is not None else None
    except VideoKeptError:
        raise
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    summary = {
        "video": str(placed),
        "frames": result.frames,
        "seconds": result.seconds,
        "size": f"{result.height}x{result.width}",  # as --size: HEIGHTxWIDTH
        "height": result.height,
        "width": result.width,
        "seed": result.seed,
        "clips": result.clips,
        "preset": args.preset,
        "model": getattr(result, "model", None) or options.model,
        "source": "image" if source_video is None else "video",
        "options": {k: result.options[k] for k in ("steps", "text_scale", "audio_scale", "shift", "cache_threshold")},
        "timings": result.timings,
        **speech_fields,
    }
    if args.size is None:
        summary["resolution"] = args.resolution
    if result.forwards:
        summary["forwards"] = result.forwards
    if result.notes:
        summary["notes"] = result.notes
    if result.mask_preview_path:
        summary["mask_preview"] = str(result.mask_preview_path)
    if thumb_placed:
        summary["thumbnail"] = str(thumb_placed)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_demo_inputs(args: argparse.Namespace) -> int:
    import wave

    import numpy as np

    from .demo_media import SAMPLE_RATE, portrait, voice

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    portrait().save(out / "portrait.png")
    for i, (seconds, pitch) in enumerate(((2.4, 120), (2.0, 210)), start=1):
        samples = (np.clip(voice(seconds, pitch, seed=i), -1, 1) * 32767).astype("<i2")
        with wave.open(str(out / f"voice{i}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(samples.tobytes())
    print(f"wrote {out}/portrait.png, voice1.wav, voice2.wav")
    return 0


def _cmd_layouts(args: argparse.Namespace) -> int:
    _show_layouts(Path(args.dir), args.speakers)
    return 0


def _show_layouts(root: Path, speakers: int) -> None:
    from .forward_check import compare_layouts
    from .tiny import write_tiny_models

    if not (root / "TINY.json").exists():
        print(f"writing tiny models to {root} ...")
        write_tiny_models(root)
    print("one transformer forward from each layout (tiny random weights: the numbers are noise, the plumbing is real)")
    rows = compare_layouts(root, speakers=speakers)
    header = f"{'layout':<22}{'load s':>8}{'forward s':>11}  {'output shape':<22}{'max |diff| vs original':>24}  note"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['layout']:<22}{row['load_s']:>8.2f}{row['forward_s']:>11.3f}  {row['shape']!s:<22}"
            f"{row['max_abs_diff_vs_original']:>24.2e}  {_layout_note(row['layout'])}"
        )


def _layout_note(layout: str) -> str:
    """What the difference column should show for each layout (so that 1e+00 for Q4 reads as expected)."""
    if layout == "original":
        return "the reference"
    if "Q4" in layout:
        return "expected: 4-bit weights (random tiny weights quantize badly)"
    if "Q8" in layout:
        return "expected: 8-bit weights"
    return "same weights: only float rounding"


def _cmd_demo(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    _show_layouts(root, args.speakers)
    from .demo_media import portrait, voice
    from .engine import GenerateOptions, MultiTalkPipeline

    print("\nnow a whole video on the tiny model: two synthetic voices, one after the other, on a drawn picture")
    pipe = MultiTalkPipeline.from_pretrained(root, dtype=torch.float32)
    out = Path(args.out)
    result = pipe.generate(
        portrait(),
        [voice(2.4, 120, seed=1), voice(2.0, 210, seed=2)],
        "two people talk to each other",
        out,
        options=GenerateOptions(steps=4, seed=42, size=(128, 192), audio_type="add"),
        callback=ProgressBar(),
        mask_preview_path=out.with_suffix(".masks.png"),
    )
    print(
        f"wrote {result.video_path}: {result.seconds:.2f} s, {result.frames} frames at 25 fps, "
        f"{result.width}x{result.height}, H.264 + AAC, {result.clips} clips; person masks: {result.mask_preview_path}"
    )
    print("stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
    print(
        "\nThis was a tiny RANDOM model: the video is noise, not a talking face; the plumbing is what is real. "
        "For real output, download the published weights (Wan-AI/Wan2.1-I2V-14B-480P-Diffusers, "
        "MeiGen-AI/MeiGen-MultiTalk, TencentGameMate/chinese-wav2vec2-base) into one folder and run\n"
        "  multitalk-serve generate --model FOLDER --image face.png --audio voice.wav --prompt '...' --out out.mp4"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multitalk-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser(
        "generate",
        help="image (or video) + one or two voices + prompt -> talking MP4",
        description="Generate a talking video. Every input is checked (files, speakers, boxes, sizes, the output "
        "folder) before any model loads, so a mistake costs a second.",
    )
    p.add_argument("--model", required=True, help="model folder (what it holds: docs/generate.md)")
    p.add_argument(
        "--input-json",
        metavar="FILE",
        help="the official repositories' input JSON (prompt, cond_image or InfiniteTalk's cond_video, cond_audio, "
        "audio_type, bbox); relative paths are read from the current folder, then from the file's folder; other "
        "options still apply",
    )
    p.add_argument("--image", help="reference image with one or two people")
    p.add_argument(
        "--video", help="instead of --image: a video to dub (InfiniteTalk; its soundtrack is replaced by --audio)"
    )
    p.add_argument(
        "--model-name",
        choices=MODEL_NAMES,
        help="multitalk (default with --image), infinitetalk (default with --video or an InfiniteTalk JSON: single "
        "for one speaker, multi for two), infinitetalk-single, infinitetalk-multi",
    )
    p.add_argument(
        "--source-end",
        choices=("hold", "pingpong"),
        default="hold",
        help="a video shorter than the audio: hold its last frame (default) or play it back and forth",
    )
    p.add_argument(
        "--keep-background",
        action="store_true",
        help="regenerate only the speaker regions (--box, or --mask-image); the rest of the frame stays the source's",
    )
    p.add_argument(
        "--mask-image",
        help="with --keep-background (implied): an image the size of the source, white = the region regenerated",
    )
    p.add_argument("--feather", type=float, help="--keep-background's edge width in output pixels (default: automatic)")
    p.add_argument("--audio", action="append", help="a speaker's audio (twice for two; 'none' = silent)")
    from .cli_speech import add_arguments as add_speech_arguments

    add_speech_arguments(p)  # --text, --voice, --speech-speed, --language, --speech-out
    p.add_argument("--prompt", help="what happens in the video")
    p.add_argument("--out", help="output .mp4 (with --input-json: default FILE's name .mp4, here)")
    p.add_argument(
        "--audio-type", choices=("add", "para"), help="two speakers: add = in turn (default), para = at once"
    )
    p.add_argument(
        "--box",
        type=_parse_box,
        action="append",
        help="X_MIN,Y_MIN,X_MAX,Y_MAX of a person in image pixels, x = column (twice; the official JSON's bbox is "
        "y first)",
    )
    p.add_argument("--resolution", choices=("480p", "720p"), default="480p")
    p.add_argument("--size", type=_parse_size, help="explicit HEIGHTxWIDTH (multiples of 16) instead of the bucket")
    p.add_argument("--mode", choices=("streaming", "clip"), default="streaming")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=DEFAULT_PRESET,
        help="quality: 40 steps, 3-pass; balanced: + step caching; fast: speed LoRA (--speed-lora), 4 steps, 2-pass",
    )
    p.add_argument("--steps", type=_parse_steps, help="default: the preset's (quality 40, fast 4)")
    p.add_argument("--shift", type=float, help="default: the preset's (7 at 480p, 11 at 720p; fast 2)")
    p.add_argument("--text-scale", type=float, help="default: the preset's (5; fast 1 = 2-pass guidance)")
    p.add_argument("--audio-scale", type=float, help="default: the preset's (4; fast 2)")
    p.add_argument("--cache-threshold", type=float, help="TeaCache threshold, 0 = off (balanced: 0.2)")
    p.add_argument(
        "--speed-lora",
        help="lightx2v / FusionX LoRA .safetensors for --preset fast (default: the one in MODEL/Lightx2v/)",
    )
    p.add_argument(
        "--speed-lora-scale",
        type=float,
        default=DEFAULT_SPEED_LORA_SCALE,
        help=f"the speed LoRA's strength (default {DEFAULT_SPEED_LORA_SCALE:g}, as its publishers run it)",
    )
    p.add_argument(
        "--memory-plan",
        help="auto (by GPU memory) or e.g. bf16, fp8, fp8+t5-offload, fp8+t5-offload+group-offload (default: all "
        "resident in --dtype)",
    )
    p.add_argument("--attention", default="auto", help="attention backend: auto, native, flash, _flash_3, sage")
    p.add_argument("--compile", action="store_true", help="regional torch.compile of the transformer blocks")
    p.add_argument("--apg", action="store_true", help="adaptive projected guidance")
    p.add_argument("--seed", type=int)
    p.add_argument("--negative-prompt")
    p.add_argument("--color-correction", type=float, default=1.0)
    p.add_argument(
        "--duration",
        type=float,
        help="seconds of video: the audio is cut there, or padded with silence (default: as long as the audio)",
    )
    p.add_argument(
        "--max-duration",
        type=float,
        default=600.0,
        help="longest audio accepted, in seconds (default 600); longer audio is refused: --duration cuts it",
    )
    p.add_argument("--crf", type=int, default=19)
    p.add_argument("--thumbnail", help="save the first frame here")
    p.add_argument(
        "--job-dir",
        help="keep every finished window and the loop's state here; run the same command again after a crash or "
        "Ctrl-C to continue where it stopped (removed when the video is done)",
    )
    p.add_argument("--mask-preview", help="save the person regions drawn over the reference image here")
    p.add_argument("--transformer", help="transformer from elsewhere (original folder, .safetensors, .gguf)")
    p.add_argument("--multitalk", help="multitalk.safetensors, if not in MODEL/MeiGen-MultiTalk")
    p.add_argument("--wav2vec", help="chinese-wav2vec2-base folder, if not in MODEL")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16" if torch.cuda.is_available() else "fp32")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("profiles", help="download profiles: sizes on disk and GPU memory for the weights")
    p.add_argument("-v", "--verbose", action="store_true", help="also list each profile's repositories and files")
    p.set_defaults(func=_cmd_profiles)

    from .provision.profiles import PROFILES

    p = sub.add_parser("download", help="fetch a profile into a model directory, verified and resumable")
    p.add_argument("--profile", required=True, choices=sorted(PROFILES))
    p.add_argument(
        "--dest", default=_default_dest(), help="model directory (default: $MODEL_PATH or /runpod-volume/models)"
    )
    p.add_argument("--workers", type=int, default=8, help="files downloaded at the same time")
    p.add_argument(
        "--models",
        type=_parse_models,
        default="multitalk",
        metavar="MODELS",
        help="the audio models to fetch, comma-separated: multitalk (the default), infinitetalk-single, "
        "infinitetalk-multi; infinitetalk = both InfiniteTalk files, all = the three",
    )
    p.add_argument(
        "--speed-lora",
        action="store_true",
        help="also fetch the lightx2v step-distillation LoRA (1.4 GB) for preset fast, into DEST/Lightx2v/",
    )
    p.add_argument(
        "--tts", action="store_true", help="also fetch Kokoro-82M (0.36 GB) for text input, into DEST/Kokoro-82M/"
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be fetched (exact sizes from the Hub)")
    p.add_argument(
        "--verify-hashes", action="store_true", help="re-hash files already present instead of trusting the manifest"
    )
    p.add_argument("--no-cache", action="store_true", help="ignore Hugging Face caches (RunPod cached models)")
    p.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("verify", help="check a model directory is complete and consistent")
    p.add_argument(
        "--dest", default=_default_dest(), help="model directory (default: $MODEL_PATH or /runpod-volume/models)"
    )
    p.add_argument("--hashes", action="store_true", help="re-hash every file download recorded (reads every byte)")
    p.add_argument("--transformer", help="the transformer to check, when the directory holds several")
    p.add_argument(
        "--models",
        type=_parse_models,
        metavar="MODELS",
        help="audio models that must be there, comma-separated (as download --models; default: any one)",
    )
    p.add_argument(
        "--tts", action="store_true", default=None, help="Kokoro-82M must be there (default: checked if present)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("make-tiny", help="write seeded random-weight models in the published layouts")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parity", action="store_true", help="only the original-layout checkpoint used by parity fixtures")
    p.set_defaults(func=_cmd_make_tiny)

    p = sub.add_parser("forward", help="time one transformer forward pass on random inputs")
    p.add_argument("model", help="checkpoint directory, .safetensors or .gguf")
    p.add_argument("--multitalk", help="multitalk.safetensors (or its directory) if the model lacks the audio weights")
    p.add_argument("--speakers", type=int, default=1, choices=(1, 2))
    p.add_argument("--frames", type=int, default=81, help="video frames (4k+1)")
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=1)
    p.set_defaults(func=_cmd_forward)

    p = sub.add_parser("layouts", help="make-tiny if needed, then one forward from each layout")
    p.add_argument("dir", nargs="?", default="tiny")
    p.add_argument("--speakers", type=int, default=2, choices=(1, 2))
    p.set_defaults(func=_cmd_layouts)

    p = sub.add_parser("demo-inputs", help="write a drawn two-person picture and two synthetic voices")
    p.add_argument("dir")
    p.set_defaults(func=_cmd_demo_inputs)

    p = sub.add_parser("demo", help="make-tiny, one forward from each layout, a whole video on the tiny model")
    p.add_argument("dir", nargs="?", default="tiny")
    p.add_argument("--out", default="demo.mp4")
    p.add_argument("--speakers", type=int, default=2, choices=(1, 2))
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from .engine import EngineError

    try:
        return args.func(args)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except VideoKeptError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

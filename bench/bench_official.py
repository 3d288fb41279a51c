"""Seconds per transformer forward: our MultiTalk transformer vs the official MultiTalk ``WanModel``, same machine.

    python bench/bench_official.py --official /path/to/MultiTalk --official-python /path/to/official-venv/bin/python

The driver (1) writes an original-layout checkpoint (``Wan2.1-I2V-14B-480P`` + ``MeiGen-MultiTalk``) at a mid-size
config with ``multitalk_serve.tiny.write_original_layout`` (seeded random weights; official key set and shapes, so
the official code loads it with ``load_state_dict(strict=True)``), (2) writes one set of inputs (latents, condition,
CLIP features, 512 text tokens, windowed audio features of two speakers, person masks), (3) runs one subprocess per
side and dtype, official first: ``--official-python`` imports ``wan/modules/multitalk_model.py`` from the checkout
given by ``--official`` (nothing of it is copied here), ``--ours-python`` imports ``multitalk_serve``. Each side
loads the same checkpoint, sets the same thread count, runs ``--warmup`` untimed forwards of each case (one and
two speakers), then ``--repeats`` timed forwards of each, and saves its outputs; the driver prints the median
seconds per forward of each side, the ratio ours / official and the max |ours - official| of the outputs, so the
comparison is of the same computation.

How the official model runs here is the recipe of ``tests/fixtures/official/make_fixtures.py`` (imported, not
duplicated; see its README): stand-ins for ``xfuser`` (single rank), ``xformers.ops.memory_efficient_attention``
and the CUDA-only ``flash_attention`` (PyTorch SDPA on the same tensors), ``torch_gc`` (a no-op), ``torchvision``,
``wan/__init__.py`` skipped, and ``TORCH_COMPILE_DISABLE=1`` (the ``@torch.compile``d reference-map function runs
eagerly; ``--official-compile`` lets torch.compile run it, which needs a working inductor toolchain).

On a GPU: ``--device cuda`` (add ``--dtypes bf16`` for the production dtype, ``--backend flash`` or ``_flash_3``
for ours if installed). The official side then uses the real ``xformers`` for the audio attention and the real
``flash_attention`` (FA3 or FA2, which compute in bf16 even for fp32 inputs) and the real ``torch_gc``
(``torch.cuda.empty_cache`` + ``ipc_collect`` inside the map function) when those packages import in the official
environment, and the SDPA stand-ins otherwise; the table's ``kernels`` note says which. ``sageattention``, when
installed in the official environment, is picked up by the official module itself (as in the official repo).

bf16 follows each implementation's own dtype policy: the official pipeline casts every fp32 parameter to bf16
(``to_param_dtype_fp32only``; here ``model.to(bf16)``, the checkpoint being all fp32), ours keeps norms, modulation
and the time embedder in fp32. The official forward relies on ``torch.cuda.amp.autocast(dtype=float32)`` to run
``time_embedding``, ``time_projection`` and ``head.head`` in fp32 from bf16 weights; that autocast is off on CPU
(the forward would fail: fp32 input, bf16 weight), so on CPU those three modules hold their bf16-rounded weights in
fp32, which computes what CUDA computes (noted as "fp32-autocast linears emulated"). The official
``flash_attention`` casts fp32 inputs to bf16 (its self-attention gets fp32 q, k from ``rope_apply``); the SDPA
stand-in gets the same casts in bf16 runs.

On a shared CPU machine other processes distort timings: before each subprocess the driver waits (up to
``--idle-wait`` s) for the CPUs to be idle, and each timed forward measures the share of the machine's CPU time
used by other processes (/proc/stat minus the process's own CPU time); a forward where that exceeds
``--max-foreign`` is discarded and redone after the CPUs go idle. The summary under the table shows the worst
share among the kept forwards and how many were redone. ``--json PATH`` writes every run's seconds and these facts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "official"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SPEAKERS = (1, 2)
TIMESTEP = 900.0
TEXT_TOKENS = 512
ORIGINAL_DIR = "Wan2.1-I2V-14B-480P"  # == multitalk_serve.engine.loading.paths (not importable on the official side)
MULTITALK_DIR = "MeiGen-MultiTalk"


# --- shared by both sides (only torch and safetensors, so the official environment can run it) ------------------
def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int]:
    if (frames - 1) % 4 or height % 16 or width % 16:
        raise SystemExit("frames must be 4k + 1, height and width multiples of 16")
    return (frames - 1) // 4 + 1, height // 8, width // 8


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy CPU seconds of the whole machine since boot, CPU seconds of this process); None without /proc/stat."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # user nice system idle iowait irq softirq steal: busy = all but idle and iowait (steal counts: another VM)
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK"), usage.ru_utime + usage.ru_stime


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs busy with other processes over ``seconds``."""
    before = _cpu_seconds()
    time.sleep(seconds)
    after = _cpu_seconds()
    if before is None or after is None:
        return None
    return max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / (seconds * (os.cpu_count() or 1))


def wait_for_idle(limit_s: float, threshold: float = 0.05) -> float | None:
    """Wait (up to ``limit_s``) until other processes leave the CPUs idle; returns the last busy fraction."""
    deadline = time.monotonic() + limit_s
    busy = cpu_busy()
    while busy is not None and busy > threshold and time.monotonic() < deadline:
        print(f"CPUs {busy:.0%} busy with other work: waiting", flush=True)
        time.sleep(5)
        busy = cpu_busy()
    if busy is not None and busy > threshold:
        print(f"WARNING: CPUs still {busy:.0%} busy with other work; timings are contaminated", flush=True)
    return busy


def time_calls(fn, repeats: int, device: torch.device, args: argparse.Namespace | None = None) -> dict:
    """Seconds of ``repeats`` calls of ``fn`` and the last output.

    On CPU, each call's share of the machine's CPU time used by other processes is measured (/proc/stat minus this
    process's own CPU time); with ``args``, a call where it exceeds ``args.max_foreign`` is discarded and repeated
    (after waiting for the CPUs to go idle), up to ``args.retries`` times.
    """
    runs, foreign, discarded, out = [], [], [], None
    cpus = os.cpu_count() or 1
    with torch.inference_mode():
        while len(runs) < repeats:
            before, start = _cpu_seconds(), time.perf_counter()
            out = fn()
            _sync(device)
            wall, after = time.perf_counter() - start, _cpu_seconds()
            share = None
            if device.type == "cpu" and before is not None and after is not None:
                other = (after[0] - before[0]) - (after[1] - before[1]) - 2 / os.sysconf("SC_CLK_TCK")  # tick slack
                share = max(0.0, other) / (wall * cpus)
            if args is not None and share is not None and share > args.max_foreign and len(discarded) < args.retries:
                print(f"discarding a {wall:.3f} s forward: {share:.0%} of the CPUs used by other work", flush=True)
                discarded.append(round(wall, 4))
                wait_for_idle(args.idle_wait)
                continue
            runs.append(round(wall, 4))
            foreign.append(None if share is None else round(share, 3))
    return {"seconds": runs, "foreign_share": foreign, "discarded_seconds": discarded, "out": out}


def case(inputs: dict[str, torch.Tensor], speakers: int, dtype: torch.dtype, device: torch.device) -> dict:
    """The inputs of one forward, on ``device``; float tensors in ``dtype`` (masks stay float32)."""
    return {
        "x": inputs["x"].to(device, dtype),
        "y": inputs["y"].to(device, dtype),
        "clip": inputs["clip"].to(device, dtype),
        "context": inputs["context"].to(device, dtype),
        "audio": inputs["audio"][:speakers].to(device, dtype),
        "masks": inputs[f"masks{speakers}"].to(device),
        "t": torch.tensor([TIMESTEP], device=device),
    }


def half_precision(stand_in, dtype: torch.dtype):
    """The official ``flash_attention``'s dtype handling around the SDPA stand-in: inputs not already fp16/bf16
    go to ``dtype``, q and k to v's dtype, the output back to q's input dtype (its self-attention gets fp32 q and k
    from ``rope_apply`` and a bf16 v)."""

    def flash_attention(q, k, v, **kwargs):
        out_dtype = q.dtype
        q, k, v = (u if u.dtype in (torch.float16, torch.bfloat16) else u.to(dtype) for u in (q, k, v))
        return stand_in(q.to(v.dtype), k.to(v.dtype), v, **kwargs).to(out_dtype)

    return flash_attention


def load_official(official: Path, checkpoint: Path, device: torch.device, compile_map: bool):
    """The official ``WanModel`` on ``checkpoint``, loaded by ``make_fixtures.load_official_model`` (fp32, CPU).

    On CUDA the real xformers / flash-attn / torch_gc replace the stand-ins where they import. Returns the model
    and a note of the kernels used.
    """
    sys.path.insert(0, str(FIXTURES))
    import make_fixtures  # sets TORCH_COMPILE_DISABLE=1, installs the stand-ins on load

    real = {}
    if device.type == "cuda":
        for name in ("xformers", "xformers.ops"):
            try:
                real[name] = __import__(name, fromlist=["_"])
            except Exception:  # any import failure means: use the stand-in
                real.clear()
                break
    make_fixtures.install_stand_ins(official)
    sys.modules.update(real)  # bound by wan.modules.attention on its import just below
    import wan.modules.attention as wan_attention
    import wan.utils.multitalk_utils as wan_utils

    flash_attention, torch_gc = wan_attention.flash_attention, wan_utils.torch_gc
    model, state = make_fixtures.load_official_model(official, checkpoint)
    del state
    notes = ["xformers" if real else "xformers->SDPA"]
    if device.type == "cuda" and (wan_attention.FLASH_ATTN_3_AVAILABLE or wan_attention.FLASH_ATTN_2_AVAILABLE):
        import wan.modules.multitalk_model as wan_model

        wan_model.flash_attention = flash_attention
        notes.append("flash-attn " + ("3" if wan_attention.FLASH_ATTN_3_AVAILABLE else "2"))
    else:
        notes.append("flash_attention->SDPA")
    if device.type == "cuda":
        wan_utils.torch_gc = torch_gc
        notes.append("torch_gc")
    else:
        notes.append("torch_gc no-op")
    if compile_map:
        import torch._dynamo

        torch._dynamo.config.disable = False
    notes.append("map compiled" if compile_map else "map eager")
    import wan.modules.multitalk_model as wan_model

    if getattr(wan_model, "USE_SAGEATTN", False):
        notes.append("sageattn")
    return model.to(device), ", ".join(notes)


def worker(args: argparse.Namespace) -> None:
    """One side, one dtype: load, time both speaker counts, write ``result.json`` and ``outputs.safetensors``."""
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    out_dir = Path(args.worker_dir)
    inputs = load_file(args.inputs)
    start = time.perf_counter()
    if args.worker == "official":
        model, kernels = load_official(args.official, args.checkpoint, device, args.official_compile)
        if dtype != torch.float32:
            model.to(dtype)  # the official pipeline's to_param_dtype_fp32only: every fp32 tensor -> param dtype
            if device.type != "cuda":
                # The linears the official code runs under torch.cuda.amp.autocast(dtype=float32): on CUDA autocast
                # computes them in fp32 from the bf16 weights; on CPU it is off and fp32 inputs meet bf16 weights.
                # Holding the bf16-rounded weights in fp32 computes what CUDA computes.
                for module in (model.time_embedding, model.time_projection, model.head.head):
                    module.float()
                kernels += ", fp32-autocast linears emulated"
            if "flash_attention->SDPA" in kernels:
                import wan.modules.multitalk_model as wan_model

                wan_model.flash_attention = half_precision(wan_model.flash_attention, dtype)
        t, h, w = inputs["x"].shape[1:]
        seq_len = t * h * w // 4

        def forward(c):
            return model(
                [c["x"]],
                t=c["t"],
                context=[c["context"]],
                seq_len=seq_len,
                clip_fea=c["clip"],
                y=[c["y"]],
                audio=c["audio"],
                ref_target_masks=c["masks"],
            )
    else:
        sys.path.insert(0, str(REPO / "src"))
        from multitalk_serve.engine.loading.transformer import load_transformer

        root = args.checkpoint
        model = load_transformer(root / ORIGINAL_DIR, root / MULTITALK_DIR, dtype=dtype, device=device)
        if args.backend:
            model.set_attention_backend(args.backend)
        kernels = f"diffusers backend {args.backend or 'default'}"

        def forward(c):
            hidden = torch.cat([c["x"], c["y"]])[None]
            return model(hidden, c["t"], c["context"][None], c["clip"], c["audio"], c["masks"]).sample

    load_seconds = time.perf_counter() - start
    result = {"side": args.worker, "dtype": args.dtype, "kernels": kernels, "load_seconds": round(load_seconds, 2)}
    result |= {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": sys.executable}
    outputs = {}
    calls = {}
    for speakers in SPEAKERS:  # warm-ups of every case first, then the timed forwards
        c = case(inputs, speakers, dtype, device)
        try:
            runs = time_calls(lambda c=c: forward(c), args.warmup, device)["seconds"]
        except Exception as exc:  # reported in the table
            result[f"error{speakers}"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            traceback.print_exc()
            continue
        result[f"warmup_seconds{speakers}"] = [round(r, 4) for r in runs]
        calls[speakers] = lambda c=c: forward(c)
    for speakers, call in calls.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timed = time_calls(call, args.repeats, device, args)
        runs = timed["seconds"]
        outputs[f"speakers{speakers}"] = timed["out"].float().cpu().contiguous()
        result[f"seconds{speakers}"] = runs
        result[f"foreign_share{speakers}"] = timed["foreign_share"]
        result[f"discarded_seconds{speakers}"] = timed["discarded_seconds"]
        print(f"[{args.worker} {args.dtype}] {speakers} speaker(s): {[round(r, 3) for r in runs]} s", flush=True)
        if device.type == "cuda":
            result[f"peak_gb{speakers}"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    save_file(outputs, out_dir / "outputs.safetensors")
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))


# --- driver (our environment) -------------------------------------------------------------------------------------
def model_dims(args: argparse.Namespace):
    from multitalk_serve.engine.loading.layouts import WanDims

    return WanDims(
        dim=args.dim,
        ffn_dim=args.ffn_dim,
        num_heads=args.heads,
        num_layers=args.layers,
        text_dim=args.text_dim,
    )  # audio dims, image_dim 1280, freq_dim 256: the official (and 14B) values


def write_checkpoint(root: Path, dims, seed: int) -> None:
    """Original layout + MultiTalk at ``dims`` (reused when ``root`` already holds the same dims and seed)."""
    from dataclasses import asdict

    from multitalk_serve.tiny import write_original_layout

    stamp = root / "bench_official.json"
    wanted = json.dumps({"dims": asdict(dims), "seed": seed}, sort_keys=True)
    if stamp.exists() and stamp.read_text() == wanted:
        print(f"reusing checkpoint {root}", flush=True)
        return
    start = time.perf_counter()
    write_original_layout(root, dims, seed=seed)
    stamp.write_text(wanted)
    print(f"wrote checkpoint {root} in {time.perf_counter() - start:.1f} s", flush=True)


def write_inputs(path: Path, dims, frames: int, height: int, width: int, seed: int) -> None:
    t, h, w = latent_shape(frames, height, width)
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    y_mask = torch.zeros(4, t, h, w)
    y_mask[:, 0] = 1
    masks2 = torch.zeros(3, h, w)  # two boxes and a non-empty background (an empty region gives NaN officially)
    masks2[0, h // 8 : 7 * h // 8, w // 16 : 7 * w // 16] = 1
    masks2[1, h // 8 : 7 * h // 8, 9 * w // 16 : 15 * w // 16] = 1
    masks2[2] = (masks2[0] + masks2[1] == 0).float()
    tensors = {
        "x": randn(16, t, h, w),
        "y": torch.cat([y_mask, randn(16, t, h, w)]),
        "clip": randn(1, 257, dims.image_dim),
        "context": randn(TEXT_TOKENS, dims.text_dim),
        "audio": randn(2, frames, dims.audio_window, dims.audio_layers, dims.audio_channels),
        "masks1": torch.ones(3, h, w),  # what the official pipeline passes for one speaker
        "masks2": masks2,
    }
    save_file(tensors, path)


def run_worker(side: str, python: str, dtype: str, args: argparse.Namespace, work: Path) -> dict:
    out = work / f"{side}-{dtype}"
    out.mkdir(exist_ok=True)
    busy_before = wait_for_idle(args.idle_wait) if args.device == "cpu" else None
    cmd = [python, str(Path(__file__).resolve()), "--worker", side, "--worker-dir", str(out), "--dtype", dtype]
    cmd += ["--official", str(args.official), "--checkpoint", str(args.checkpoint), "--inputs", str(work / "in.st")]
    cmd += ["--device", args.device, "--threads", str(args.threads), "--repeats", str(args.repeats)]
    cmd += ["--warmup", str(args.warmup), "--idle-wait", str(args.idle_wait), "--max-foreign", str(args.max_foreign)]
    cmd += ["--retries", str(args.retries)]
    if args.backend:
        cmd += ["--backend", args.backend]
    if args.official_compile:
        cmd.append("--official-compile")
    print(f"$ {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, check=False, text=True, stderr=subprocess.PIPE)
    if proc.returncode != 0 or not (out / "result.json").exists():
        print(proc.stderr[-4000:], file=sys.stderr)
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"side": side, "dtype": dtype, "error1": tail[0], "error2": tail[0], "outputs": {}}
    (out / "stderr.txt").write_text(proc.stderr)  # warnings (e.g. the official code's CUDA autocast on CPU)
    result = json.loads((out / "result.json").read_text())
    result["cpu_busy_before"] = None if busy_before is None else round(busy_before, 3)
    if args.device == "cpu":  # sampled after the worker exited: anything here is other work
        after = cpu_busy()
        result["cpu_busy_after"] = None if after is None else round(after, 3)
    result["outputs"] = load_file(out / "outputs.safetensors")
    return result


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def driver(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO / "src"))
    dims = model_dims(args)
    t, h, w = latent_shape(args.frames, args.height, args.width)
    tokens = t * h * w // 4
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_official_"))
    work.mkdir(parents=True, exist_ok=True)
    args.checkpoint = args.checkpoint or work / "checkpoint"
    write_checkpoint(args.checkpoint, dims, args.seed)
    write_inputs(work / "in.st", dims, args.frames, args.height, args.width, args.seed)

    config = f"d{dims.dim} {dims.num_heads}x{dims.head_dim} ffn{dims.ffn_dim} L{dims.num_layers} text{dims.text_dim}"
    shape = f"{args.frames}x{args.height}x{args.width}"
    rows, sides, official_fp32 = [], {}, None
    for dtype in args.dtypes.split(","):
        official = run_worker("official", args.official_python, dtype, args, work)
        ours = run_worker("ours", args.ours_python, dtype, args, work)
        sides[dtype] = {s["side"]: {k: v for k, v in s.items() if k != "outputs"} for s in (official, ours)}
        if dtype == "fp32":
            official_fp32 = official["outputs"]
        for speakers in SPEAKERS:
            key = f"speakers{speakers}"
            row = {"config": config, "dtype": dtype, "shape": shape, "latent": [t, h, w], "tokens": tokens}
            row |= {"speakers": speakers, "device": args.device, "threads": args.threads}
            for side in (official, ours):
                name = side["side"]
                runs = side.get(f"seconds{speakers}")
                row[f"{name}_seconds"] = runs
                row[f"{name}_median_s"] = round(statistics.median(runs), 4) if runs else None
                if f"error{speakers}" in side:
                    row[f"{name}_error"] = side[f"error{speakers}"]
            if row["official_median_s"] and row["ours_median_s"]:
                row["ratio_ours_over_official"] = round(row["ours_median_s"] / row["official_median_s"], 3)
            a, b = ours["outputs"].get(key), official["outputs"].get(key)
            if a is not None and b is not None:
                row["max_abs_diff"] = float((a - b).abs().max())
                row["max_abs_official"] = float(b.abs().max())
            ref = (official_fp32 or {}).get(key)
            if dtype != "fp32" and ref is not None:
                for name, out in (("official", b), ("ours", a)):
                    if out is not None:
                        row[f"{name}_max_abs_diff_vs_official_fp32"] = float((out - ref).abs().max())
            rows.append(row)

    def cell(value, fmt="{:.3f}"):
        return "-" if value is None else fmt.format(value)

    print(f"\nmachine: {cpu_model()}, {os.cpu_count()} CPUs, device {args.device}, {args.threads} threads")
    print(f"{args.repeats} timed forwards per case after {args.warmup} warm-up(s) of each case; medians shown")
    print(f"checkpoint {args.checkpoint}\n")
    print("| config | dtype | shape (latent) | tokens | speakers | official s/fwd | ours s/fwd | ours/official |"
          " max abs diff |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        diff = cell(r.get("max_abs_diff"), "{:.2e}")
        if "official_error" in r or "ours_error" in r:
            diff = "official: " + r.get("official_error", "ok") + "; ours: " + r.get("ours_error", "ok")
        print(
            f"| {r['config']} | {r['dtype']} | {r['shape']} ({'x'.join(map(str, r['latent']))}) | {r['tokens']} |"
            f" {r['speakers']} | {cell(r['official_median_s'])} | {cell(r['ours_median_s'])} |"
            f" {cell(r.get('ratio_ours_over_official'))} | {diff} |"
        )
    for dtype, per_side in sides.items():
        for side, info in per_side.items():
            keys = ("kernels", "torch", "load_seconds", "cpu_busy_before", "cpu_busy_after")
            kernels, version, load, before, after = (info.get(k, "?") for k in keys)
            shares = [v for n in SPEAKERS for v in info.get(f"foreign_share{n}", []) if v is not None]
            redone = sum(len(info.get(f"discarded_seconds{n}", [])) for n in SPEAKERS)
            print(f"{dtype} {side}: {kernels}; torch {version}; load {load} s")
            if args.device == "cpu":
                worst = f"{max(shares):.1%}" if shares else "?"
                print(
                    f"    other processes: {before} / {after} of the CPUs busy before / after; worst share during a"
                    f" kept forward {worst}; forwards redone for it: {redone}"
                )
    for r in rows:
        vs_fp32 = {n: r.get(f"{n}_max_abs_diff_vs_official_fp32") for n in ("official", "ours")}
        if any(v is not None for v in vs_fp32.values()):
            official, ours = (cell(v, "{:.3g}") for v in vs_fp32.values())
            print(
                f"{r['dtype']}, {r['speakers']} spk, vs official fp32, max abs diff: official {official}, ours {ours}"
            )
    if args.json:
        meta = {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(), "sides": sides}
        args.json.write_text(json.dumps({"machine": meta, "rows": rows}, indent=2))
        print(f"wrote {args.json}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="checkout of github.com/MeiGen-AI/MultiTalk")
    parser.add_argument("--official-python", default=sys.executable, help="python of the official environment")
    parser.add_argument("--ours-python", default=sys.executable, help="python with multitalk_serve's dependencies")
    parser.add_argument("--checkpoint", type=Path, help="where to write (or reuse) the checkpoint; default: workdir")
    parser.add_argument("--workdir", help="inputs and outputs (default: a new temporary directory)")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--ffn-dim", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--text-dim", type=int, default=4096)
    parser.add_argument("--frames", type=int, default=21, help="video frames (4k + 1)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument("--dtypes", default="fp32", help="comma-separated: fp32,bf16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per case")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards per case, all before timing")
    parser.add_argument("--backend", help="our diffusers attention backend (e.g. native, flash, _flash_3)")
    parser.add_argument("--official-compile", action="store_true", help="let torch.compile run the official map")
    parser.add_argument("--idle-wait", type=float, default=600, help="CPU: wait up to this for other work to stop")
    parser.add_argument("--max-foreign", type=float, default=0.05, help="CPU: redo a forward when other processes")
    parser.add_argument("--retries", type=int, default=6, help="used more than this share of the CPUs (this often)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows and machine facts here")
    parser.add_argument("--worker", choices=["official", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-dir", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1, --warmup >= 0")
    if args.worker:
        worker(args)
    else:
        for dtype in args.dtypes.split(","):
            if dtype not in DTYPES:
                parser.error(f"unknown dtype {dtype!r}")
        driver(args)


if __name__ == "__main__":
    main()

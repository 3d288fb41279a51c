"""Run a function on N local processes that form one process group, and fail cleanly when any of them fails.

``run_on_ranks(fn, world, args)`` spawns ``world`` processes; each initialises ``torch.distributed`` (gloo on CPU,
NCCL with one GPU per rank), calls ``fn(rank, world, *args)`` and hands its result back. If a rank raises, it
reports and exits: its peers, blocked in a collective with it, get a connection error from the backend and report
too. A rank that neither finishes nor fails by ``timeout_s`` is killed. Either way the caller gets
:class:`RankFailure` naming each rank's error, never a hang. The collectives' own timeout is ``timeout_s`` as well.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


class RankFailure(RuntimeError):
    """One or more ranks failed (``errors``: rank -> traceback text) or did not finish (``timed_out``)."""

    def __init__(self, errors: dict[int, str], timed_out: list[int]):
        self.errors = errors
        self.timed_out = timed_out
        parts = [f"rank {r} failed: {text.strip().splitlines()[-1]}" for r, text in sorted(errors.items())]
        if timed_out:
            parts.append(f"ranks {timed_out} did not finish in time and were killed")
        super().__init__("; ".join(parts))


def group_check(rank: int, world: int) -> int:
    """Every rank's contribution summed over the group (one all-reduce): proves the group is up."""
    total = torch.tensor([rank + 1])
    dist.all_reduce(total)
    return int(total.item())


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def _rank_main(
    rank: int,
    world: int,
    store: str,
    backend: str,
    timeout_s: float,
    fn: Callable[..., Any],
    args: tuple,
    out_dir: str,
    reports: Any,
) -> None:
    error = None
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(
            backend,
            init_method=f"file://{store}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=timeout_s),
        )
        result = fn(rank, world, *args)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    except BaseException:  # every failure is reported to the parent, then the process ends
        error = traceback.format_exc()
    finally:
        if dist.is_initialized():
            with contextlib.suppress(Exception):  # a broken group may not tear down; the process exits anyway
                dist.destroy_process_group()
    reports.put((rank, error))


def run_on_ranks(
    fn: Callable[..., Any],
    world: int,
    args: tuple = (),
    *,
    timeout_s: float = 120.0,
    backend: str | None = None,
    start_method: str = "spawn",
) -> list[Any]:
    """``[fn(0, world, *args), ..., fn(world - 1, world, *args)]``, each run in its own process of one group.

    ``fn`` must be importable by name (a module-level function) and its result picklable by ``torch.save``.
    Raises :class:`RankFailure` if any rank raises or the whole run exceeds ``timeout_s``.

    ``start_method``: "spawn" (fresh interpreters; the only choice with CUDA) or "fork" (CPU only: the ranks share
    the caller's imported modules, which saves each rank the ~10 s import of torch + diffusers on a small machine).
    """
    if world < 1:
        raise ValueError("world must be at least 1")
    backend = backend or default_backend()
    if start_method == "fork" and torch.cuda.is_initialized():
        raise ValueError("fork after CUDA is initialised breaks CUDA in the ranks: use spawn")
    ctx = mp.get_context(start_method)
    reports = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="ranks-") as tmp:
        store = os.path.join(tmp, "store")
        procs = [
            ctx.Process(
                target=_rank_main,
                args=(rank, world, store, backend, timeout_s, fn, args, tmp, reports),
                daemon=True,
            )
            for rank in range(world)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        errors: dict[int, str] = {}
        done: set[int] = set()
        try:
            while len(done) < world:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    rank, error = reports.get(timeout=min(left, 1.0))
                except queue_mod.Empty:
                    if any(not p.is_alive() and p.exitcode not in (0, None) for p in procs):
                        # a rank died without reporting (killed): its peers fail through the backend; keep collecting
                        for r, p in enumerate(procs):
                            if not p.is_alive() and p.exitcode not in (0, None) and r not in done:
                                errors[r] = f"process exited with code {p.exitcode}\n"
                                done.add(r)
                    continue
                done.add(rank)
                if error is not None:
                    errors[rank] = error
        finally:
            for p in procs:
                p.join(timeout=max(0.0, min(5.0, deadline - time.monotonic())))
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join()
        timed_out = [r for r in range(world) if r not in done]
        if errors or timed_out:
            raise RankFailure(errors, timed_out)
        return [torch.load(Path(tmp) / f"rank{rank}.pt", weights_only=False) for rank in range(world)]

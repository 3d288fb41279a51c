"""One video on several processes (GPUs): the transformer runs with diffusers' context parallelism (Ulysses).

- ``context.py``: :func:`enable_context_parallel` turns it on for a ``MultiTalkTransformer3DModel`` in a process
  group (what MultiTalk adds over Wan is in ``models/context_parallel.py``);
- ``launch.py``: :func:`run_on_ranks` runs a function on N local processes (gloo on CPU, NCCL on GPUs) and fails
  cleanly, never hangs, when a rank fails;
- ``check.py``: the forward on N ranks against one process, for the tests and ``bench/bench_parallel.py``.

docs/parallel.md says why diffusers' context parallelism and not xDiT, and what speed-up to expect.
"""

from __future__ import annotations

from .context import enable_context_parallel
from .launch import RankFailure, run_on_ranks

__all__ = ["RankFailure", "enable_context_parallel", "run_on_ranks"]

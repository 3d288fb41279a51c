"""Keep the ranks of a served job in step: rank 0 decides, before every transformer forward, whether the job goes on.

A served job runs the same ``MultiTalkPipeline.generate`` on every rank (``pipeline.py``); only rank 0 reports
progress, checks for cancellation, publishes segments and may refuse the job (its ``on_plan``). So rank 0 can stop
between two forwards while the other ranks (followers) go on to the next forward and wait there in a collective.
:class:`JobControl` makes that safe with one small broadcast before each forward:

- rank 0 sends ``FORWARD`` before each of its forwards, and ``END`` once when its ``generate`` has returned or
  raised (:meth:`JobControl.end_job`);
- a follower receives the word before each of its forwards: ``END`` raises :class:`JobEnded` there (its
  ``generate`` unwinds); a follower whose ``generate`` finished (or failed by itself) receives the job's ``END``
  with :meth:`JobControl.await_end`; a ``FORWARD`` there means the ranks ran different jobs
  (:class:`RanksDiverged`).

``in_forward`` is set from a ``FORWARD`` until the forward returns: an exception while it is set left the ranks inside
the forward's collectives, out of step, and the process group must not be used again.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

FORWARD, END = 1, 0


class JobEnded(Exception):
    """Raised in a follower's forward: rank 0 ended the job (finished, failed or cancelled)."""


class RanksDiverged(RuntimeError):
    """A follower finished its job while rank 0 still runs forwards: the ranks did not run the same job."""


class JobControl:
    """The per-forward control word of one pipeline's transformer (create it in every rank, after
    ``enable_pipeline_parallel``; it runs before that function's input broadcast)."""

    def __init__(self, transformer: torch.nn.Module, device: torch.device | str):
        if not dist.is_initialized():
            raise RuntimeError("JobControl needs torch.distributed.init_process_group first")
        self.rank = dist.get_rank()
        self.device = torch.device(device)
        self.in_forward = False
        self.ended = False
        self.forwards = 0
        transformer.register_forward_pre_hook(self._before, prepend=True)
        transformer.register_forward_hook(self._after)

    def _word(self, value: int = -1) -> int:
        word = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(word, src=0)
        return int(word.item())

    def _before(self, module, args) -> None:
        if self.rank == 0:
            self._word(FORWARD)
        elif self._word() == END:
            self.ended = True
            raise JobEnded("rank 0 ended the job")
        self.in_forward = True
        self.forwards += 1

    def _after(self, module, args, output) -> None:
        self.in_forward = False

    def start_job(self) -> None:
        self.in_forward = self.ended = False
        self.forwards = 0

    def end_job(self) -> None:
        """Rank 0: the job is over (call it once, after ``generate`` returned or raised outside a forward)."""
        if self.rank != 0:
            raise RuntimeError("only rank 0 ends a job")
        self._word(END)

    def await_end(self) -> None:
        """A follower whose ``generate`` returned or raised by itself: receive the job's ``END``."""
        if self._word() != END:
            raise RanksDiverged("rank 0 runs another forward of a job this rank has finished")

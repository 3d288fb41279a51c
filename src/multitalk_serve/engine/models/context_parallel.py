"""What MultiTalk adds to Wan's context parallelism: where this rank's tokens sit in the video, the reference keys
of latent frame 0 on every rank, and the global min/max of the reference map.

diffusers' context parallelism (``ContextParallelConfig``, ``enable_parallelism``, the model's ``_cp_plan``) splits
the token sequence across ranks and runs each self-attention with Ulysses all-to-all (every rank then attends over
the whole sequence for ``heads / world`` heads). Everything else in a Wan block is per token. MultiTalk adds three
things that are not per token:

- the audio cross-attention attends per latent frame, so a rank must know which frame each of its tokens is in
  (its shard can start and end inside a frame): :attr:`ShardLayout.offset`;
- the two-speaker reference map needs the keys of the whole of latent frame 0, which may live on one or several
  ranks: :meth:`ShardLayout.first_tokens` sends them from the ranks that hold them (broadcasts, not a gather of
  every key);
- label RoPE min-max normalises the map over *all* tokens: :meth:`ShardLayout.global_min_max`.

The map is a mean over heads. It is computed before the Ulysses all-to-all, on this rank's tokens with every head,
so that mean needs no communication.

Shards follow ``torch.tensor_split`` (the first ``total % world`` ranks hold one token more), which is what
diffusers' sharders do: equal chunks when the count divides, and its "anything" sharder otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ShardLayout:
    """This rank's contiguous slice of a ``total``-token sequence split across ``world`` ranks of ``group``."""

    rank: int
    world: int
    total: int
    group: Any  # torch.distributed.ProcessGroup

    @property
    def sizes(self) -> list[int]:
        base, extra = divmod(self.total, self.world)
        return [base + (1 if r < extra else 0) for r in range(self.world)]

    @property
    def offsets(self) -> list[int]:
        sizes = self.sizes
        return [sum(sizes[:r]) for r in range(self.world)]

    @property
    def offset(self) -> int:
        return self.offsets[self.rank]

    @property
    def size(self) -> int:
        return self.sizes[self.rank]

    def shard(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's tokens of a full-sequence tensor (the same split as diffusers' sharders)."""
        if x.shape[dim] != self.total:
            raise ValueError(f"expected {self.total} tokens on dim {dim}, got {tuple(x.shape)}")
        return x.narrow(dim, self.offset, self.size)

    def gather(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Every rank's tokens, in order, on every rank. Shards of unequal length are padded to the longest for one
        all-gather (gloo's all-gather takes equal sizes only, so diffusers' "anything" gather fails there)."""
        longest = max(self.sizes)
        x = x.contiguous()
        if x.shape[dim] < longest:
            pad = list(x.shape)
            pad[dim] = longest - x.shape[dim]
            x = torch.cat([x, x.new_zeros(pad)], dim=dim)
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x, group=self.group)
        return torch.cat([p.narrow(dim, 0, size) for p, size in zip(parts, self.sizes, strict=True)], dim=dim)

    def first_tokens(self, x: torch.Tensor, count: int) -> torch.Tensor:
        """The global first ``count`` tokens (dim 1) of a sharded ``[B, N_local, ...]`` tensor, on every rank.

        Each rank that holds part of them broadcasts that part, in rank order; every rank takes part in the same
        broadcasts, so the collectives match.
        """
        if count > self.total:
            raise ValueError(f"asked for the first {count} of {self.total} tokens")
        parts = []
        for src, (start, size) in enumerate(zip(self.offsets, self.sizes, strict=True)):
            held = max(0, min(size, count - start))
            if held == 0:
                break
            mine = src == self.rank
            part = x[:, :held].contiguous() if mine else x.new_empty((x.shape[0], held, *x.shape[2:]))
            dist.broadcast(part, src=dist.get_global_rank(self.group, src), group=self.group)
            parts.append(part)
        return torch.cat(parts, dim=1)

    def global_min_max(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Element-wise min of ``lo`` and max of ``hi`` over all ranks (one all-reduce each)."""
        lo, hi = lo.clone(), hi.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=self.group)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=self.group)
        return lo, hi


def shard_layout(parallel_config: Any, total: int) -> ShardLayout | None:
    """The layout of a ``total``-token sequence under a model's ``_parallel_config`` (None: not context parallel)."""
    cp = getattr(parallel_config, "context_parallel_config", None)
    if cp is None or cp._world_size is None:
        return None
    mesh = cp._flattened_mesh
    world = mesh.size()
    if world == 1:
        return None
    if total % world and not (cp.ulysses_anything or cp.ring_anything):
        raise ValueError(
            f"{total} tokens do not split evenly across {world} ranks: use ContextParallelConfig(ulysses_anything=True)"
        )
    if total < world:
        raise ValueError(f"{total} tokens cannot be split across {world} ranks")
    group = mesh.get_group()
    return ShardLayout(rank=dist.get_rank(group), world=world, total=total, group=group)

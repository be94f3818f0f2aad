"""Data-parallel meta-training over processes started by ``torchrun`` (``torch.distributed``).

Launch: ``torchrun --standalone --nproc_per_node=N "$(command -v gwnmo-meta)" meta-train ...``.
torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and the rendezvous address); without them,
or with ``WORLD_SIZE=1``, :func:`setup` does nothing and every helper here is a no-op, so a single
process behaves exactly as before. Backend: gloo on CPU, nccl on CUDA with each rank on the GPU
``LOCAL_RANK``. The DDP wrapper is not used (it does not fit higher's patched inner loops); the
meta-gradient is all-reduced directly, as in learn2learn's distributed MAML example.

World-size invariance. A meta-step's global meta-batch of B tasks is tasks 0..B−1 of the seeded
meta-train task stream. Every rank draws all B task *descriptions* from the same sampler state
(index arithmetic; only its own tasks' features are gathered) and adapts the contiguous slice
``[rank·B/W, (rank+1)·B/W)`` of them. Its loss is the sum of its tasks' query losses divided by B,
so the sum over ranks (one all-reduce of one flat buffer per dtype, :func:`all_reduce_grads`) is
the gradient of the single-process meta-loss, the mean over all B tasks. N processes with
meta-batch B therefore see the same tasks and take the same meta-steps as one process with
meta-batch B, up to float rounding (different summation order). B must be divisible by W.

Evaluation is sharded the same way: tasks go in chunks of the evaluation batch, consecutive
chunks to consecutive ranks, so every task is adapted in the same chunk as in one process (every
rank draws all the tasks, for the task-set fingerprint, and adapts its chunks); the per-task
results are gathered in global task order (:func:`gather_lists`) and every rank computes the same
summary as one process.

RNG streams. Tasks come from the samplers' private, seeded streams, identical on every rank.
The global RNGs (Python, NumPy, torch) are seeded with ``--seed`` on every rank, *not* seed+rank:
ranks must agree on initialisations, and no meta-step draws from them, so their states stay
identical across ranks and rank 0's copy in the checkpoint (with the task stream's state) is the
state of every rank. A future method that needs per-task randomness must derive it from the
global task index (not the rank) to keep this invariance. Hence a run resumes with any world size
(tested: 2 processes → 1 process reaches the uninterrupted run's state).

Outputs. Rank 0 writes checkpoints, config.json, TensorBoard events, test.json and the progress
bars; the other ranks only compute. Failure: process-group collectives time out after
``$GWNMO_DIST_TIMEOUT`` seconds (default 600); a rank that dies or stops answering makes the others
raise :class:`RankFailure` (the CLI prints one ``error:`` line and exits 1), and the last
checkpoint, written atomically, stays loadable.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

from gwnmo_meta.errors import ConfigError

if TYPE_CHECKING:
    from gwnmo_meta.tasks.episodes import Episode, EpisodeSampler

T = TypeVar("T")

TIMEOUT_ENV = "GWNMO_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
SLOW_TIMEOUT_S = 6 * 3600.0  # data preparation (a first backbone pre-training) may take a while


class RankFailure(RuntimeError):
    """Another rank died or did not answer in time (not a user mistake: the CLI exits 1)."""


@dataclass(frozen=True)
class World:
    """This process's place among the ranks (``rank 0 of 1`` without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """Whether more than one process takes part (collectives are needed)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 owns the outputs (checkpoints, TensorBoard, JSON results, progress bars)."""
        return self.rank == 0

    def task_slice(self, n: int) -> tuple[int, int]:
        """This rank's share ``[lo, hi)`` of ``n`` global task indices (contiguous, balanced).

        Args:
            n: number of tasks (the global meta-batch).

        Returns:
            ``(lo, hi)``; ``(0, n)`` in a single process.
        """
        return self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size

    def chunk_slice(self, n: int, chunk: int) -> tuple[int, int]:
        """This rank's share ``[lo, hi)`` of ``n`` tasks evaluated in chunks of ``chunk`` tasks.

        Whole chunks go to ranks (consecutive chunks to consecutive ranks), so each task is
        adapted together with the same other tasks as in one process.

        Args:
            n: number of tasks.
            chunk: tasks adapted together (the evaluation batch).

        Returns:
            ``(lo, hi)`` in task indices; ``(0, n)`` in a single process.
        """
        chunks = -(-n // chunk)
        lo, hi = self.task_slice(chunks)
        return min(n, lo * chunk), min(n, hi * chunk)


_world = World()
_slow_group: Any = None  # dist.new_group(...): a ProcessGroup (all ranks are members)


def env_world() -> World:
    """The ``World`` torchrun's environment describes, before (or without) joining it.

    Returns:
        ``World()`` (rank 0 of 1) when ``WORLD_SIZE`` is unset.
    """
    if "WORLD_SIZE" not in os.environ:
        return World()
    try:
        world_size = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (they are set by torchrun)"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ConfigError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    return World(rank, world_size, local_rank)


def world() -> World:
    """The current ``World`` (single process until :func:`setup` joined a process group)."""
    return _world


def timeout_s() -> float:
    """Seconds a collective may wait for the other ranks (``$GWNMO_DIST_TIMEOUT``, default 600)."""
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        value = DEFAULT_TIMEOUT_S if raw is None else float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"${TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def check_divisible(meta_batch: int) -> None:
    """``ConfigError`` unless the world size (from torchrun's environment) divides ``meta_batch``.

    Args:
        meta_batch: the global meta-batch.
    """
    size = env_world().world_size
    if meta_batch % size:
        raise ConfigError(
            f"--meta-batch {meta_batch} is not divisible by the {size} processes; "
            f"choose a multiple of {size}"
        )


def setup(device: torch.device) -> World:
    """Join torchrun's process group (once); a no-op without torchrun or with one process.

    A meta-training run checks its meta-batch against the world size first
    (:func:`check_divisible`, before anything is written, so every rank refuses it alike).

    Args:
        device: the resolved device; CUDA selects nccl and the GPU ``LOCAL_RANK``, else gloo.

    Returns:
        The ``World`` this process belongs to.

    Raises:
        ConfigError: a malformed environment.
        RankFailure: the rendezvous with the other ranks failed or timed out.
    """
    global _world, _slow_group
    env = env_world()
    if not env.active:
        return _world
    if dist.is_initialized():
        return _world
    timeout = datetime.timedelta(seconds=timeout_s())
    backend = "gloo"
    if device.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {env.local_rank} has no GPU of its own ({torch.cuda.device_count()} "
                "visible); start at most one process per GPU"
            )
        torch.cuda.set_device(env.local_rank)  # "cuda" now means this rank's GPU
        backend = "nccl"
    _run("joining the process group", dist.init_process_group, backend, timeout=timeout)
    slow = datetime.timedelta(seconds=SLOW_TIMEOUT_S)
    _slow_group = _run("joining the process group", dist.new_group, backend="gloo", timeout=slow)
    _world = env
    return _world


def _run(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call the collective ``fn``; a dead or silent peer becomes :class:`RankFailure`."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:  # DistBackendError, DistNetworkError, DistStoreError, timeouts
        lines = str(exc).strip().splitlines()
        detail = lines[0][:200] if lines else type(exc).__name__
        raise RankFailure(
            f"rank {os.environ.get('RANK', '0')}: another rank died or did not answer while {what} "
            f"(timeout {timeout_s():g}s, ${TIMEOUT_ENV}): {detail}"
        ) from None


def barrier(slow: bool = False) -> None:
    """Wait until every rank gets here (no-op in a single process).

    Args:
        slow: wait up to 6 hours instead of the collective timeout.
    """
    if not _world.active:
        return
    if slow:
        _run("waiting for the other ranks", dist.barrier, group=_slow_group)
    elif dist.get_backend() == "nccl":
        _run("waiting for the other ranks", dist.barrier, device_ids=[_world.local_rank])
    else:
        _run("waiting for the other ranks", dist.barrier)


@contextmanager
def main_first() -> Iterator[None]:
    """Run the body on each node's local rank 0 first, then on the other ranks.

    For work that fills a shared cache (features, a pre-trained backbone): the others then read
    it instead of recomputing it. Waits up to 6 hours (a first backbone pre-training), not the
    collective timeout.
    """
    if not _world.active:
        yield
        return
    if _world.local_rank != 0:
        barrier(slow=True)
    try:
        yield
    finally:
        if _world.local_rank == 0:  # also after an error: the others then meet it themselves
            barrier(slow=True)


def _buckets(tensors: Sequence[torch.Tensor]) -> dict[tuple[torch.dtype, torch.device], list[int]]:
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.dtype, t.device), []).append(i)
    return groups


def all_reduce_grads(params: Sequence[torch.Tensor], *extra: float) -> list[float]:
    """Sum the parameters' ``.grad`` over ranks in place, one flat all-reduce per dtype/device.

    Each rank's gradient must be its tasks' share of the global loss (query losses / global
    meta-batch), so that the sum is the single-process meta-gradient. Parameters without a gradient
    are skipped (the same ones on every rank: the graphs have the same structure).

    Args:
        params: the meta-parameters.
        *extra: scalars summed over ranks in the same call (e.g. the local sum of task losses).

    Returns:
        The summed ``extra`` values (as given, in a single process).
    """
    if not _world.active:
        return list(extra)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        raise ValueError("all_reduce_grads: no parameter has a gradient")
    sums = list(extra)
    for n, idx in enumerate(_buckets(grads).values()):
        part = [grads[i] for i in idx]
        flat = torch.cat([g.reshape(-1) for g in part])
        if n == 0 and extra:  # the scalars ride along in the first bucket
            flat = torch.cat([flat, torch.tensor(extra, dtype=flat.dtype, device=flat.device)])
        _run("all-reducing the meta-gradient", dist.all_reduce, flat)
        offset = 0
        for g in part:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
        if n == 0 and extra:
            sums = flat[offset:].tolist()
    return sums


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (one flat broadcast per dtype)."""
    if not _world.active:
        return
    tensors = [t.data for t in list(module.parameters()) + list(module.buffers())]
    for idx in _buckets(tensors).values():
        part = [tensors[i] for i in idx]
        flat = torch.cat([t.reshape(-1) for t in part])
        _run("broadcasting the parameters", dist.broadcast, flat, src=0)
        offset = 0
        for t in part:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def gather_lists(*lists: Sequence[Any]) -> tuple[list[Any], ...]:
    """Concatenate every rank's lists in rank order (all ranks get the result; one collective).

    With shares from :meth:`World.chunk_slice`, rank order is global task order, so the result is
    what one process would have collected (the items travel pickled: floats stay exact).

    Args:
        *lists: this rank's per-task results (e.g. accuracies, losses, per-step curves).

    Returns:
        One list per argument, with every rank's items.
    """
    if not _world.active:
        return tuple(list(items) for items in lists)
    parts: list[Any] = [None] * _world.world_size
    mine = [list(items) for items in lists]
    _run("gathering evaluation results", dist.all_gather_object, parts, mine)
    return tuple([x for part in parts for x in part[i]] for i in range(len(lists)))


def draw_share(sampler: EpisodeSampler, n: int, lo: int, hi: int) -> list[Episode]:
    """Draw tasks ``0..n−1`` from ``sampler``; return the episodes ``lo..hi−1``.

    The others are skipped as descriptions only (no feature gather), so the sampler ends in the
    same state on every rank.

    Args:
        sampler: an ``EpisodeSampler``.
        n: tasks to draw.
        lo: first task of this rank's share.
        hi: end of this rank's share.

    Returns:
        The ``hi − lo`` episodes of this rank.
    """
    eps = []
    for i in range(n):
        if lo <= i < hi:
            eps.append(sampler.sample())
        else:
            sampler.description()
    return eps


class NullLogger:
    """Stands in for the TensorBoard logger on ranks other than 0: every call does nothing."""

    def train_step(self, step: int, *args: Any, **kwargs: Any) -> dict[str, float]:
        return {"step": float(step)}

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None

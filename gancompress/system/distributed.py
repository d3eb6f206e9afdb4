"""Data-parallel training over the processes ``torchrun`` starts (one per GPU, or several on the CPU).

``torchrun --nproc_per_node=N tools/compress.py RECIPE`` gives every process ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; :func:`process_group` reads them and joins the group (NCCL on CUDA, each
process on ``cuda:LOCAL_RANK``; gloo on the CPU). Every rank builds the same models from the same
seed, reads its own share of each batch (``data.loader.BatchSource``) and averages gradients
before every optimiser step, so the weights stay identical without ever being sent again.

How gradients are averaged, and why not ``DistributedDataParallel``
------------------------------------------------------------------
DDP is not used. Its wrapper fits a model that runs one forward and one backward per step; the
stages here do not, and each mismatch would need a work-around:

- stage 3's retention factors get their gradient from ``torch.autograd.grad`` with
  ``requires_grad`` off at construction, so DDP neither registers them nor sees their gradient
  (its hooks fire on gradient accumulation): they need a manual all-reduce anyway;
- the stages call the networks' own methods (``distill_points``, ``mask_points``, the selective
  discriminator's ``alphas``, ``weight_parameters``) and save their state dicts; a DDP wrapper
  hides the first behind ``.module`` and renames every key of the second (``module.``), so
  single- and multi-GPU checkpoints would stop being interchangeable;
- the discriminators run several forwards per backward, and forwards while frozen (the
  generator step). DDP's reducer copes (a two-process check passes) only while every backward
  reaches all of a wrapped module's trainable parameters or none of them; a phase that reaches
  some leaves it waiting, and the next forward fails. The 1x1 distillation adapters have no
  forward of their own to wrap.

So, as stylegan3's training loop does, :func:`sync_grads` averages each optimiser's gradients
in one coalesced all-reduce right before its step (``system.optim.Precision.step`` calls it; the alpha
optimiser calls it directly). The cost is that the all-reduce does not overlap the backward pass.

What differs between ranks, and when it is made equal
-----------------------------------------------------
Weights and optimiser states agree after every step by construction. Statistics computed from a
rank's own images do not: BatchNorm's running statistics (unless ``train.sync_bn``), image
pools, EMA targets. :func:`broadcast_state` makes every rank adopt rank 0's state when training
starts (so the weights also start equal) and at every checkpoint, so that what rank 0 saves is
the state of every rank and a resumed run repeats an uninterrupted one. Every rank draws from
the same RNG stream (same seed; per-item augmentation has its own seeds), so dropout masks
repeat across ranks but the RNG state rank 0 saves is every rank's.

Files: only rank 0 writes; :func:`on_main` runs its rank-0-only work and makes every other
rank wait for it and raise when it failed, so a user error on rank 0 does not leave the others
hanging. The run folder must be on a filesystem every rank sees (one machine, or a shared disk).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist

from ..errors import GanCompressError

log = logging.getLogger(__name__)

# Ranks wait at a collective while rank 0 works alone (pruning, checkpoints, sample grids);
# NCCL's own default (10 minutes) is too short for a large pruning search.
TIMEOUT = datetime.timedelta(minutes=30)


class LaunchError(GanCompressError):
    """torchrun's environment is incomplete, or asks for more GPUs than the machine has."""


class RankStoppedError(GanCompressError):
    """Rank 0 stopped on a user error while this rank waited for it."""


@dataclass(frozen=True)
class Launch:
    """This process's place in a torchrun launch: global rank, number of processes, rank on the node."""

    rank: int
    world: int
    local_rank: int


def launch_env() -> Launch | None:
    """The launch described by torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; None when
    ``WORLD_SIZE`` is unset (a plain ``python`` start)."""
    if "WORLD_SIZE" not in os.environ:
        return None
    values = {}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        text = os.environ.get(key, "0" if key == "LOCAL_RANK" else None)
        try:
            values[key] = int(text)
        except (TypeError, ValueError):
            raise LaunchError(f"{key}={text!r}: torchrun sets it to an integer; start with "
                              "torchrun --nproc_per_node=N tools/compress.py RECIPE") from None
    launch = Launch(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if not 0 <= launch.rank < launch.world:
        raise LaunchError(f"RANK={launch.rank} is outside WORLD_SIZE={launch.world}")
    return launch


def _wants_cuda(device: str | None) -> bool:
    return device == "cuda" or (device in (None, "auto") and torch.cuda.is_available())


@contextlib.contextmanager
def process_group(device: str | None = None) -> Iterator[Launch | None]:
    """Join torchrun's process group for the block, then leave it.

    Args:
        device: 'cpu', 'cuda' or None (CUDA when present): NCCL with this process on
            ``cuda:LOCAL_RANK`` for CUDA, gloo for the CPU.

    Yields the launch (None without ``WORLD_SIZE``). One process (``WORLD_SIZE=1``) needs no
    group; a group that is already initialised (a caller set it up) is used and left in place.
    """
    launch = launch_env()
    if launch is None or launch.world == 1 or dist.is_initialized():
        yield launch
        return
    if _wants_cuda(device):
        count = torch.cuda.device_count()
        if launch.local_rank >= count:
            raise LaunchError(f"LOCAL_RANK={launch.local_rank}: this machine has {count} CUDA device(s); start "
                              f"at most {count} processes per node (--nproc_per_node)")
        dev = torch.device("cuda", launch.local_rank)
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=dev)
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    log.info("rank %d of %d joined the process group (%s)", launch.rank, launch.world, dist.get_backend())
    try:
        yield launch
    finally:
        cleanup()


def cleanup() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_active() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if is_active() else 1


def local_rank() -> int:
    """This process's rank on its machine, which picks its GPU (0 without a process group)."""
    if not is_active():
        return 0
    launch = launch_env()
    return launch.local_rank if launch is not None else rank()


def _comm_device() -> torch.device:
    """Where collective buffers must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait until every rank arrives (nothing without a process group)."""
    if is_active():
        dist.barrier()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` (any picklable object) on every rank."""
    if not is_active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(fn: Callable, *args, **kwargs) -> Any:
    """Run ``fn(*args, **kwargs)`` on rank 0 only; every rank returns once it has finished.

    Returns ``fn``'s result on rank 0 and None elsewhere. If ``fn`` raises on rank 0, rank 0
    re-raises it and every other rank raises :class:`RankStoppedError` (for a user error) or
    RuntimeError, so no rank is left waiting at the next collective.
    """
    if not is_active():
        return fn(*args, **kwargs)
    result, failure = None, None
    if rank() == 0:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the other ranks
            failure = exc
    text = None if failure is None else (str(failure).splitlines() or [type(failure).__name__])[0]
    note = broadcast_object(None if failure is None else (isinstance(failure, GanCompressError), text))
    if failure is not None:
        raise failure
    if note is not None:
        user_error, text = note
        raise (RankStoppedError if user_error else RuntimeError)(f"rank 0 stopped: {text}")
    return result


# ----------------------------------------------------------------------------------------------
# Gradients and scalars.

def _coalesced(tensors: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """``tensors`` grouped by (device, dtype), each group in its original order."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return iter(groups.values())


@torch.no_grad()
def sync_grads(params: Iterable[torch.Tensor]) -> None:
    """Average the gradients of ``params`` over the ranks, in place, one all-reduce per dtype.

    Call it after backward and before the optimiser's step. Parameters without a gradient are
    skipped; every rank must have gradients for the same parameters (it does when every rank
    runs the same code on batches of the same shape). Nothing happens without a process group.
    """
    if not is_active():
        return
    world = dist.get_world_size()
    grads = [p.grad for p in params if p.grad is not None]
    for group in _coalesced(grads):
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        flat.div_(world)
        for g, part in zip(group, flat.split([g.numel() for g in group])):
            g.copy_(part.view_as(g))


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` (any shape, floating point) over the ranks, as a new tensor.

    For values every rank must agree on, such as a loss statistic that drives a decision. Without
    a process group, ``tensor`` itself.
    """
    if not is_active():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out)
    return out.div_(dist.get_world_size())


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise minimum of ``tensor`` over the ranks, as a new tensor (itself without a group)."""
    if not is_active():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return out


# ----------------------------------------------------------------------------------------------
# Whole states.

def _leaves(obj: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) for every tensor in a nested structure of dicts, lists and tuples, in order."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{path}/{i}")


def _replace(obj: Any, fresh: Iterator[torch.Tensor]) -> Any:
    """``obj`` with its tensors replaced, in :func:`_leaves` order, by those of ``fresh``."""
    if isinstance(obj, torch.Tensor):
        return next(fresh)
    if isinstance(obj, dict):
        out = type(obj)((k, _replace(v, fresh)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # module state dicts carry per-module versions
            out._metadata = obj._metadata
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_replace(v, fresh) for v in obj)
    return obj


def _check_same_layout(leaves: list[tuple[str, torch.Tensor]]) -> None:
    """Raise on every rank if the ranks' states differ in structure (a bug; broadcasting them
    would mix tensors up or hang)."""
    text = repr([(p, tuple(t.shape), str(t.dtype)) for p, t in leaves]).encode()
    digest = hashlib.sha1(text).hexdigest()
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, digest)
    if len(set(everyone)) > 1:
        odd = [r for r, d in enumerate(everyone) if d != everyone[0]]
        raise RuntimeError(f"ranks {odd} hold a training state laid out differently from rank 0's")


@torch.no_grad()
def _broadcast_tensors(tensors: list[torch.Tensor], src: int) -> list[torch.Tensor]:
    """Rank ``src``'s values of ``tensors`` (new tensors, same devices and dtypes), one
    broadcast per dtype."""
    comm = _comm_device()
    out: dict[int, torch.Tensor] = {}
    by_id = {id(t): i for i, t in enumerate(tensors)}
    for group in _coalesced(tensors):
        # gloo has no bool reduction type; uint8 carries the same bits.
        flat = torch.cat([t.reshape(-1).to(comm, torch.uint8 if t.dtype == torch.bool else t.dtype)
                          for t in group])
        dist.broadcast(flat, src=src)
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            out[by_id[id(t)]] = part.view(t.shape).to(t.device, t.dtype)
    return [out[i] for i in range(len(tensors))]


def broadcast_state(obj, src: int = 0) -> None:
    """Make every rank's ``obj`` (anything with ``state_dict``/``load_state_dict``, e.g. a stage)
    hold rank ``src``'s state.

    Tensors are sent coalesced per dtype; other values (numbers, strings) are taken as they are,
    as every rank computes them alike. Nothing happens without a process group.
    """
    if not is_active():
        return
    state = obj.state_dict()
    leaves = list(_leaves(state))
    _check_same_layout(leaves)
    # One tensor may appear twice (shared storage); send it once.
    unique = list({id(t): t for _, t in leaves}.values())
    fresh = dict(zip((id(t) for t in unique), _broadcast_tensors(unique, src)))
    obj.load_state_dict(_replace(state, iter([fresh[id(t)] for _, t in leaves])))

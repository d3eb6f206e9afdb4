"""A deterministic source of batches that can start anywhere inside an epoch.

Epoch ``e`` of stream ``s`` is a fixed permutation drawn from ``(seed, s, e)``; every item also
gets its own augmentation seed. A resumed run therefore sees exactly the batches an uninterrupted
run would, whatever the number of workers. Under data parallelism each rank takes every
``world``-th batch of the same permutation.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError, GanCompressError
from ..system.threads import data_workers, worker_init

_WORKER = "in DataLoader worker process"


def worker_message(exc: GanCompressError) -> str:
    """The original one-line message of a user error raised inside a DataLoader worker.

    DataLoader re-raises a worker's exception in the main process as the same class, its message
    replaced by "Caught DataError in DataLoader worker process 0. Original Traceback ..." and the
    whole worker traceback; the original message is the text after the class name on the last
    line of that traceback. Messages of errors raised in the main process are returned as they are.
    """
    text = str(exc)
    first = text.split("\n", 1)[0]
    if _WORKER not in first:
        return text
    cls = type(exc)
    heads = (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: ")
    for line in reversed(text.splitlines()):
        for head in heads:
            if line.startswith(head):
                return line[len(head):]
    return first


def one_line_errors(batches):
    """Iterate ``batches``, re-raising user errors from DataLoader workers with their own message.

    Errors that are not :class:`GanCompressError` (bugs) keep torch's worker traceback.
    """
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except GanCompressError as exc:
            message = worker_message(exc)
            if message == str(exc):
                raise
            try:
                error = type(exc)(message)
            except Exception:  # a subclass with another constructor
                error = GanCompressError(message)
            raise error from None
        yield batch


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (deterministic across runs and platforms)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (p & 0xFFFFFFFFFFFFFFFF)) * 1099511628211) & 0x7FFFFFFFFFFFFFFF
    return h


class _EpochBatches(Sampler):
    def __init__(self, n: int, batch_size: int, seed: int, stream: int, shuffle: bool, rank: int, world: int):
        self.n, self.batch_size, self.seed, self.stream = n, batch_size, seed, stream
        self.shuffle, self.rank, self.world = shuffle, rank, world
        self.epoch, self.start = 0, 0

    def batches_per_epoch(self) -> int:
        return (self.n // self.batch_size) // self.world

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start

    def __iter__(self):
        if self.shuffle:
            gen = torch.Generator().manual_seed(_mix(self.seed, self.stream, self.epoch))
            order = torch.randperm(self.n, generator=gen).tolist()
        else:
            order = list(range(self.n))
        count = self.batches_per_epoch()
        for b in range(self.start, count):
            global_b = b * self.world + self.rank
            idx = order[global_b * self.batch_size:(global_b + 1) * self.batch_size]
            yield [(i, _mix(self.seed, self.stream, self.epoch, i)) for i in idx]


class BatchSource:
    """Batches of ``dataset`` for one training stream.

    Args:
        dataset: items addressed by ``(index, seed)``.
        batch_size: images per batch (per rank); the last incomplete batch is dropped.
        seed: the run's seed.
        stream: distinguishes independent streams over the same data (stage 3's second batch).
        num_workers: DataLoader worker processes (they persist across epochs and run one thread
            each); None chooses them from the cores (:func:`gancompress.system.threads.data_workers`,
            counted for CUDA when ``pin_memory``, which only a CUDA run sets).
        pin_memory: page-locked batches, for copies to a GPU.
        shuffle: a new permutation every epoch.
        rank, world: data-parallel position.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, stream: int = 0, num_workers: int | None = 0,
                 pin_memory: bool = False, shuffle: bool = True, rank: int = 0, world: int = 1):
        if len(dataset) < batch_size * world:
            raise DataError(f"the dataset has {len(dataset)} items, fewer than one batch "
                            f"(data.batch_size {batch_size} x {world} process(es)); add data or lower data.batch_size")
        self.sampler = _EpochBatches(len(dataset), batch_size, seed, stream, shuffle, rank, world)
        self.num_workers = data_workers(num_workers, "cuda" if pin_memory else "cpu")
        # A private generator keeps DataLoader from drawing on the global RNG, which a resumed
        # run must find in the state it was saved in.
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=self.num_workers,
                                 pin_memory=pin_memory, persistent_workers=self.num_workers > 0,
                                 worker_init_fn=worker_init if self.num_workers > 0 else None,
                                 generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return self.sampler.batches_per_epoch()

    def epoch(self, epoch: int, start: int = 0):
        """Iterate the batches of ``epoch`` from batch ``start`` on.

        A bad image found by a worker ends the iteration with the worker's one-line DataError,
        not with its traceback (see :func:`one_line_errors`).
        """
        self.sampler.epoch, self.sampler.start = epoch, start
        return one_line_errors(self.loader)

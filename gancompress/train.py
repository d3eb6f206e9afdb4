"""The one training loop, for every stage and family.

It owns epochs, the data streams, logging (every ``train.log_every`` iterations, the only place
it waits on the device), checkpoints (every ``train.checkpoint_every`` iterations and at the end,
atomic, with RNG states so a resumed run repeats an uninterrupted one), sample grids and the
non-finite-loss guard. What an iteration does is the stage's business (:mod:`gancompress.stages`).

Under data parallelism (``distributed``) every rank runs this loop on its share of the batches;
logged losses are means over all ranks, and only rank 0 writes files.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
import torchvision
from tqdm import tqdm

from . import distributed
from .checkpoint import atomic_save, latest, rotate, safe_load
from .config import Recipe
from .data.loader import BatchSource
from .errors import CheckpointError, NonFiniteLossError
from .fileio import atomic_write
from .families.base import Family
from .rundir import RunDir

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "gancompress-checkpoint"


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.dim() == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LossMeter:
    """Sums losses on the device between log points and remembers the first non-finite step."""

    def __init__(self):
        self.names: list[str] | None = None
        self.sums = None
        self.count = 0
        self.first_bad = None

    def add(self, logs: dict, step: int) -> None:
        if self.names is None:
            self.names = list(logs)
        values = torch.stack([logs[n].float().reshape(()) for n in self.names])
        if self.sums is None:
            self.sums = torch.zeros_like(values)
            self.first_bad = torch.full_like(values, -1.0)
        self.sums += values
        self.first_bad = torch.where(~torch.isfinite(values) & (self.first_bad < 0),
                                     torch.full_like(values, float(step)), self.first_bad)
        self.count += 1

    def flush(self) -> dict:
        """Means since the last flush, over every rank (one host sync); raises on the first
        non-finite loss of any rank, on every rank alike."""
        if not self.count:
            return {}
        means = distributed.all_reduce_mean(self.sums / self.count)
        # The earliest non-finite iteration of any rank: the minimum, with "none" (-1) as +inf.
        bad = distributed.all_reduce_min(torch.where(self.first_bad < 0, torch.full_like(self.first_bad, math.inf),
                                                     self.first_bad))
        values = torch.cat([means, bad]).tolist()
        means, bad = values[:len(self.names)], values[len(self.names):]
        for name, b in zip(self.names, bad):
            if b != math.inf:
                raise NonFiniteLossError(
                    f"loss '{name}' became NaN or infinite at iteration {int(b)}; lower the learning rate "
                    "(train.lr_g / train.lr_d) or check the data, then --resume from the last checkpoint")
        self.sums.zero_()
        self.count = 0
        return dict(zip(self.names, means))


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    """Save rows of images (each (N, C, H, W) in [-1, 1]) as one PNG, one row per tensor."""
    n = rows[0].shape[0]
    rows = [r.expand(-1, 3, -1, -1) if r.shape[1] == 1 else r[:, :3] for r in rows]
    grid = torch.cat([r.detach().float().cpu() for r in rows])
    atomic_write(path, lambda f: torchvision.utils.save_image((grid + 1) / 2, f, format="png", nrow=n))


def _sample_batch(family: Family, recipe: Recipe, count: int = 4) -> dict:
    data = family.dataset(recipe.data.train_split, train=False)
    items = [data[i] for i in range(min(count, len(data)))]
    return torch.utils.data.default_collate(items)


def train_stage(stage, family: Family, recipe: Recipe, run: RunDir | str | Path, device: torch.device, *,
                resume: bool) -> None:
    """Run ``stage`` for ``stage.epochs`` epochs, resuming from its latest checkpoint if asked.

    Args:
        stage: a stage object (see :mod:`gancompress.stages`); with ``stage.needs_second_batch``
            every iteration also gets a second, independent batch (stage 3's alpha step).
        family: the family adapter (builds the data).
        recipe: the resolved recipe.
        run: the run folder; checkpoints go to ``checkpoints/``, grids to ``samples/``.
        device: where to train.
        resume: continue from ``checkpoints/<stage>-*.pt`` if one exists.

    Under a process group every rank calls this alike: each reads its share of the batches
    (its position comes from the group, which the gradient averaging also follows), every rank
    starts from and checkpoints rank 0's state, and only rank 0 writes files.
    """
    run = run if isinstance(run, RunDir) else RunDir(run)
    cfg = recipe.train
    rank, world = distributed.rank(), distributed.world_size()
    writer = rank == 0
    if writer:
        run.root.mkdir(parents=True, exist_ok=True)
    ckpt_dir = run.checkpoints
    data = family.dataset(recipe.data.train_split, train=True)
    pin = device.type == "cuda"
    workers = recipe.data.num_workers
    source = BatchSource(data, recipe.data.batch_size, recipe.seed, 0, workers, pin, rank=rank, world=world)
    second = (BatchSource(data, recipe.data.batch_size, recipe.seed, 1, workers, pin, rank=rank, world=world)
              if stage.needs_second_batch else None)
    per_epoch = len(source)
    samples = to_device(_sample_batch(family, recipe), device) if writer and cfg.samples_per_epoch else None

    epoch, it, step = 0, 0, 0
    # Rank 0's choice, so every rank loads the same checkpoint even if one is written meanwhile.
    found = distributed.broadcast_object(latest(ckpt_dir, stage.name) if resume else None)
    if found is not None:
        ckpt = safe_load(found, map_location=device)
        if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("stage") != stage.name:
            raise CheckpointError(f"{found}: not a '{stage.name}' checkpoint of gancompress")
        stage.load_state_dict(ckpt["state"])
        set_rng_state({k: (v.cpu() if isinstance(v, torch.Tensor) else [t.cpu() for t in v])
                       for k, v in ckpt["rng"].items()})
        epoch, it, step = ckpt["epoch"], ckpt["iter"], ckpt["step"]
        log.info("resumed stage '%s' from %s (epoch %d, iteration %d)", stage.name, found.name, epoch, it)
    # Every rank built its models from the same seed; taking rank 0's state makes sure they start
    # equal (weights, and the optimiser states of a resumed run).
    distributed.broadcast_state(stage)

    def write_checkpoint(e: int, i: int, s: int) -> None:
        path = run.checkpoint(stage.name, s)
        atomic_save({"format": CHECKPOINT_FORMAT, "stage": stage.name, "epoch": e, "iter": i, "step": s,
                     "state": stage.state_dict(), "rng": rng_state()}, path)
        rotate(ckpt_dir, stage.name, cfg.keep_checkpoints)

    def save_checkpoint(e: int, i: int, s: int) -> None:
        # Ranks drift apart only in what they compute from their own images (BatchNorm
        # statistics, image pools, EMA targets); adopting rank 0's makes the file every rank's state.
        distributed.broadcast_state(stage)
        distributed.on_main(write_checkpoint, e, i, s)

    meter = LossMeter()
    metrics_path = run.metrics
    total = stage.epochs * per_epoch
    bar = tqdm(total=total, initial=step, desc=stage.name, disable=not writer or None, dynamic_ncols=True)
    started = time.perf_counter()

    def flush(e: int, i: int) -> None:
        means = meter.flush()
        if not means or not writer:
            return
        extras = {k: v.tolist() for k, v in stage.log_extras().items()}
        record = {"stage": stage.name, "epoch": e, "iter": i, "step": step,
                  "seconds": round(time.perf_counter() - started, 3), **means, **extras}
        with open(metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        bar.set_postfix({k: f"{v:.3g}" for k, v in list(means.items())[:6]})

    while epoch < stage.epochs:
        if it >= per_epoch:
            epoch, it = epoch + 1, 0
            continue
        stage.set_epoch(epoch)
        firsts = source.epoch(epoch, it)
        seconds = second.epoch(epoch, it) if second is not None else None
        for batch in firsts:
            batch2 = next(seconds) if seconds is not None else None
            batch = to_device(batch, device, cfg.channels_last)
            if batch2 is not None:
                batch2 = to_device(batch2, device, cfg.channels_last)
            meter.add(stage.step(batch, batch2), step)
            step += 1
            it += 1
            bar.update(1)
            if step % cfg.log_every == 0:
                flush(epoch, it)
            if step % cfg.checkpoint_every == 0:
                flush(epoch, it)  # never checkpoint a state that went non-finite
                save_checkpoint(epoch, it, step)
        if samples is not None:
            save_grid(stage.visuals(samples), run.sample_grid(stage.name, epoch + 1))
        epoch, it = epoch + 1, 0
    flush(epoch, it)
    save_checkpoint(epoch, it, step)
    bar.close()

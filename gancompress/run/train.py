"""The one training loop, for every stage and family.

It owns epochs, the data streams, logging (every ``train.log_every`` iterations, the only place
it waits on the device), checkpoints (every ``train.checkpoint_every`` iterations and at the end,
atomic, with RNG states so a resumed run repeats an uninterrupted one), sample grids and the
non-finite-loss guard. What an iteration does is the stage's business (:mod:`gancompress.run.stages`).

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

from ..config.sections import Recipe
from ..data.loader import BatchSource
from ..errors import CheckpointError, NonFiniteLossError, WriteError
from ..families.base import Family
from ..files.atomic import atomic_write, atomic_write_text, describe_oserror
from ..files.checkpoint import atomic_save, load_latest_readable, rotate, safe_load
from ..files.rundir import RunDir
from ..system import distributed
from ..system.coreshare import core_share
from ..system.finite import check_finite
from ..system.threads import data_workers

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


def rng_state(device: torch.device) -> dict:
    """The random generators' states: the CPU's, and the training GPU's (a CPU run never touches CUDA)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        cuda = state["cuda"]
        # checkpoints of earlier versions hold every GPU's state: take this device's
        torch.cuda.set_rng_state(cuda[device.index or 0] if isinstance(cuda, list) else cuda, device)


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


def _resume_point(ckpt_dir: Path, stage: str, device: torch.device) -> dict | None:
    """The checkpoint a resumed stage continues from: the newest one that loads and is finite
    (newer broken or diverged ones are skipped with a warning), as rank 0 chose it."""
    picked = load_latest_readable(ckpt_dir, stage, map_location=device) if distributed.rank() == 0 else None
    # Rank 0's choice, so every rank loads the same checkpoint even if one is written meanwhile.
    found = distributed.broadcast_object(picked[0] if picked is not None else None)
    if found is None:
        return None
    ckpt = picked[1] if picked is not None else safe_load(found, map_location=device)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("stage") != stage:
        raise CheckpointError(f"{found}: not a '{stage}' checkpoint of gancompress; move it out of the "
                              "checkpoints folder and --resume again")
    return ckpt


class MetricsLog:
    """``metrics.jsonl``: one JSON record per log point, appended; a write failure is one line."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict) -> None:
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise WriteError(f"{self.path}: could not be written ({describe_oserror(exc)}); free space or make the "
                             "run folder writable, then --resume (the last checkpoint is kept)") from None

    def truncate(self, stage: str, step: int) -> None:
        """Drop the records of ``stage`` after ``step`` (a resumed stage logs them again)."""
        if not self.path.is_file():
            return
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1  # a line cut short by a kill
                continue
            if row.get("stage") == stage and row.get("step", 0) > step:
                dropped += 1
                continue
            kept.append(line)
        if dropped:
            atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))


class RateWatch:
    """Warns once when training runs far slower than its first measured steps did.

    Called at every log point. The first interval (start-up costs) is skipped; the fastest of the
    next :data:`REFERENCE_INTERVALS` is the reference, and a later interval below a
    :data:`SLOWDOWN`-th of it is almost always other processes competing for the cores.
    """

    REFERENCE_INTERVALS = 3
    SLOWDOWN = 3.0

    def __init__(self, stage: str, step: int):
        self.stage = stage
        self.last_step, self.last_time = step, time.perf_counter()
        self.intervals = 0
        self.reference = 0.0
        self.warned = False

    def check(self, step: int) -> None:
        now = time.perf_counter()
        steps, seconds = step - self.last_step, now - self.last_time
        self.last_step, self.last_time = step, now
        self.intervals += 1
        if self.intervals == 1 or steps <= 0 or seconds <= 0:
            return
        rate = steps / seconds
        if self.intervals <= 1 + self.REFERENCE_INTERVALS:
            self.reference = max(self.reference, rate)
            return
        if not self.warned and rate * self.SLOWDOWN < self.reference:
            self.warned = True
            log.warning("stage '%s' now runs at %.3g it/s, %.1fx slower than its first steps (%.3g it/s): other "
                        "processes are probably competing for the CPU cores; run one job at a time, or give each "
                        "fewer threads (gancompress --threads N, or OMP_NUM_THREADS=N)", self.stage, rate,
                        self.reference / rate, self.reference)


class ProgressLog:
    """The progress bar's content as log lines, about every tenth of a stage, for runs without a
    terminal: stage, epoch, step out of the total, rate and time left."""

    def __init__(self, stage: str, step: int, total: int):
        self.stage, self.total = stage, max(1, total)
        self.start_step, self.start = step, time.perf_counter()
        self.next = step + max(1, self.total // 10)

    def report(self, step: int, epoch: int) -> None:
        if step < self.next:
            return
        self.next = step + max(1, self.total // 10)
        rate = (step - self.start_step) / max(1e-9, time.perf_counter() - self.start)
        left = (self.total - step) / rate if rate > 0 else float("inf")
        log.info("stage '%s' epoch %d: step %d/%d (%.0f %%), %.3g it/s, about %s left", self.stage, epoch + 1, step,
                 self.total, 100 * step / self.total, rate, _duration(left))


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "? s"
    seconds = int(seconds)
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else \
        f"{seconds // 60} min {seconds % 60:02d} s"


def train_stage(stage, family: Family, recipe: Recipe, run: RunDir | str | Path, device: torch.device, *,
                resume: bool) -> None:
    """Run ``stage`` for ``stage.epochs`` epochs, resuming from its latest checkpoint if asked.

    Args:
        stage: a stage object (see :mod:`gancompress.run.stages`); with ``stage.needs_second_batch``
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
    workers = data_workers(recipe.data.num_workers, device.type, streams=2 if stage.needs_second_batch else 1)
    source = BatchSource(data, recipe.data.batch_size, recipe.seed, 0, workers, pin, rank=rank, world=world)
    second = (BatchSource(data, recipe.data.batch_size, recipe.seed, 1, workers, pin, rank=rank, world=world)
              if stage.needs_second_batch else None)
    per_epoch = len(source)
    samples = to_device(_sample_batch(family, recipe), device) if writer and cfg.samples_per_epoch else None

    epoch, it, step = 0, 0, 0
    ckpt = _resume_point(ckpt_dir, stage.name, device) if resume else None
    if ckpt is not None:
        stage.load_state_dict(ckpt["state"])
        set_rng_state({k: (v.cpu() if isinstance(v, torch.Tensor) else [t.cpu() for t in v])
                       for k, v in ckpt["rng"].items()}, device)
        epoch, it, step = ckpt["epoch"], ckpt["iter"], ckpt["step"]
        log.info("resumed stage '%s' at epoch %d, iteration %d (step %d)", stage.name, epoch, it, step)
    # Every rank built its models from the same seed; taking rank 0's state makes sure they start
    # equal (weights, and the optimiser states of a resumed run).
    distributed.broadcast_state(stage)
    metrics = MetricsLog(run.metrics)
    if writer and resume:
        metrics.truncate(stage.name, step)  # rows past the checkpoint would repeat

    def write_checkpoint(e: int, i: int, s: int) -> None:
        state = stage.state_dict()
        # A diverged state is never written: resume then starts from the last finite checkpoint.
        check_finite(state, f"stage '{stage.name}' at iteration {s}")
        atomic_save({"format": CHECKPOINT_FORMAT, "stage": stage.name, "epoch": e, "iter": i, "step": s,
                     "state": state, "rng": rng_state(device)}, run.checkpoint(stage.name, s))
        rotate(ckpt_dir, stage.name, cfg.keep_checkpoints)

    def save_checkpoint(e: int, i: int, s: int) -> None:
        # Ranks drift apart only in what they compute from their own images (BatchNorm
        # statistics, image pools, EMA targets); adopting rank 0's makes the file every rank's state.
        distributed.broadcast_state(stage)
        distributed.on_main(write_checkpoint, e, i, s)

    meter = LossMeter()
    total = stage.epochs * per_epoch
    stage.plan(total, per_epoch)
    bar = tqdm(total=total, initial=step, desc=f"{stage.name} epoch {epoch + 1}/{stage.epochs}",
               disable=not writer or None, dynamic_ncols=True, unit="it")
    watch = RateWatch(stage.name, step)
    share = core_share()  # fewer threads while other processes keep the cores busy (coreshare.py)
    # Without a terminal (a log file, CI) tqdm draws nothing: say how the stage is doing in the log
    # instead, about every tenth of it.
    progress = ProgressLog(stage.name, step, total) if writer and bar.disable else None
    started = time.perf_counter()

    def flush(e: int, i: int) -> None:
        means = meter.flush()
        if not means or not writer:
            return
        extras = {k: v.tolist() for k, v in stage.log_extras().items()}
        metrics.append({"stage": stage.name, "epoch": e, "iter": i, "step": step,
                        "seconds": round(time.perf_counter() - started, 3), **means, **extras})
        bar.set_postfix({k: f"{v:.3g}" for k, v in list(means.items())[:4]})
        watch.check(step)
        if progress is not None:
            progress.report(step, e)

    while epoch < stage.epochs:
        if it >= per_epoch:
            epoch, it = epoch + 1, 0
            continue
        stage.set_epoch(epoch)
        bar.set_description(f"{stage.name} epoch {epoch + 1}/{stage.epochs}", refresh=False)
        firsts = source.epoch(epoch, it)
        seconds = second.epoch(epoch, it) if second is not None else None
        for batch in firsts:
            batch2 = next(seconds) if seconds is not None else None
            batch = to_device(batch, device, cfg.channels_last)
            if batch2 is not None:
                batch2 = to_device(batch2, device, cfg.channels_last)
            meter.add(stage.step(batch, batch2), step)
            if share is not None:
                share.poll()
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

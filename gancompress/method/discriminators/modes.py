"""Discriminator modes: how the student's discriminator works in stage 3, by name.

``discriminator.mode`` names an entry of :data:`MODES`. A mode is an object with one small
protocol (:class:`Mode`): it wraps the family's discriminator, checks its settings before stage 1
trains, names the parameters D's optimiser must leave alone and any it must train besides D's,
adds a term to D's loss, acts after D's step or in a phase of its own (GCC's alpha step), logs
what it wants to show, and carries its state through checkpoints. The distillation stage calls
these hooks and never asks which mode it runs.

Adding a mode: one module with a :class:`Mode` subclass, and one entry in :data:`MODES`.
``selective+dmd`` is not a mode of its own but the composition of DMD and selective
(:class:`Composite`): DMD wraps D first, the selective wrapper goes outside, so the alphas mask
D's channels whether or not DMD's mask is on.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import nn

from ...config.sections import DiscriminatorConfig
from ...errors import RecipeError
from ...nets.layers import running_stats_kept
from ...system import distributed
from ...system.optim import frozen, make_adam, set_lr
from .. import coordination, losses
from .dmd import DMDDiscriminator, DMDSchedule, find_dmd
from .glead import GLeaDTask, generator_tail
from .selective import SelectiveDiscriminator

log = logging.getLogger(__name__)


class Mode:
    """A student-discriminator mode. The defaults are the plain discriminator's.

    Args:
        cfg: the recipe's ``discriminator`` section.
        seed: the run's seed (modes that draw random masks seed from it).
        vgg19_weights: ``eval.vgg19_weights``, for modes with a perceptual distance.

    The hooks that take ``stage`` receive the running :class:`~gancompress.run.stages.distill.DistillStage`
    (its ``family``, ``t_gens``, ``t_discs``, ``s_gens``, ``s_discs``, ``precision``, ``kind``,
    ``iteration`` and ``device``).
    """

    name = "plain"
    #: False: the student trains without a discriminator (no adversarial term).
    has_discriminator = True
    #: True: :meth:`extra_step` needs a second, independent batch each iteration.
    needs_second_batch = False

    def __init__(self, cfg: DiscriminatorConfig, *, seed: int = 0, vgg19_weights: str = ""):
        self.cfg, self.seed, self.vgg19_weights = cfg, seed, vgg19_weights

    def wrap(self, net: nn.Module, points: list[nn.Module], family_name: str) -> nn.Module:
        """The student's D built around ``net`` (the family's D; ``points`` its mask points)."""
        return net

    def check(self, family, ngf_student: int) -> None:
        """Raise RecipeError for settings that cannot work, on the CPU, before stage 1 trains."""
        if self.has_discriminator:
            for n in family.generator_names:
                net = family.build_discriminator(n)
                self.wrap(net, net.mask_points(), family.name)

    def attach(self, stage) -> None:
        """Called once the stage's nets exist (build controllers, decoders, optimisers)."""

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters inside the student D that D's weight optimiser must not train."""
        return []

    def extra_d_parameters(self) -> list[nn.Parameter]:
        """Parameters outside D trained by D's optimiser together with D's weights."""
        return []

    def d_loss_extra(self) -> Callable[[str, torch.Tensor], torch.Tensor] | None:
        """``extra(name, image)`` added to D's loss after each forward of D (see GANUpdate.d_loss)."""
        return None

    def after_d_step(self, stage, inputs: dict, s_fakes: dict) -> dict:
        """After the student D's update; returns log entries."""
        return {}

    def extra_step(self, stage, batch2: dict | None) -> dict:
        """A phase of the mode's own at the end of the iteration; returns log entries."""
        return {}

    def plan(self, iterations: int, per_epoch: int) -> None:
        """Told stage 3's length (its iterations in all, and per epoch) before its first step."""

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Learning-rate schedules of the mode's own optimisers."""

    def log_extras(self) -> dict:
        """Device tensors for metrics.jsonl (read at log points only)."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


class NoDiscriminator(Mode):
    """``none``: the student learns from the task loss and distillation alone."""

    name = "none"
    has_discriminator = False


class Selective(Mode):
    """GCC's selective activation discriminator (METHOD 2): retention factors alpha per channel,
    trained in a phase of their own on a second batch by global coordination and local capacity."""

    name = "selective"
    needs_second_batch = True

    def wrap(self, net, points, family_name):
        d = SelectiveDiscriminator(net, points, self.cfg.tau, self.cfg.alpha_init)
        for a in d.alphas:
            a.requires_grad_(False)  # only the alpha phase asks for their gradient
        return d

    def attach(self, stage) -> None:
        self.discs = {n: d for n, d in stage.s_discs.items() if isinstance(d, SelectiveDiscriminator)}
        self.alphas = [a for d in self.discs.values() for a in d.alpha_parameters()]
        # 'auto' is resolved in plan(), once stage 3's length is known; GCC's rate until then.
        self.base_lr = coordination.PAPER_ALPHA_LR if self.cfg.alpha_lr == "auto" else float(self.cfg.alpha_lr)
        self.opt = make_adam(self.alphas, self.base_lr, tuple(self.cfg.alpha_betas), stage.device)
        self.targets = {n: coordination.EmaTarget() for n in self.discs}
        local = self.cfg.local_weight
        self.local_weight = stage.family.d_loss_weight if local is None else local
        self.beta = 0.0

    def plan(self, iterations, per_epoch):
        """Resolve ``alpha_lr`` for stage 3's length and say when no factor can reach tau in it."""
        c = self.cfg
        self.base_lr = coordination.alpha_learning_rate(c.alpha_lr, alpha_init=c.alpha_init, tau=c.tau,
                                                        reach=c.alpha_reach, iterations=iterations)
        epochs = -(-iterations // max(1, per_epoch))
        reach = coordination.iterations_to_reach(self.base_lr, c.alpha_init - c.tau, per_epoch, epochs,
                                                 c.alpha_decay_epochs, c.alpha_decay)
        if reach is None:
            log.warning("discriminator: at alpha_lr %.3g no retention factor can move from alpha_init %g to tau %g "
                        "within stage 3's %d iterations, so the selective discriminator acts as a plain one; "
                        "set discriminator.alpha_lr: auto or a larger rate", self.base_lr, c.alpha_init, c.tau,
                        iterations)
        else:
            log.info("discriminator: alpha_lr %.3g; a retention factor can reach tau %g after %d of stage 3's %d "
                     "iterations", self.base_lr, c.tau, reach, iterations)

    def frozen_parameters(self):
        return list(self.alphas)

    def set_epoch(self, epoch, epochs):
        self.beta = coordination.ema_beta(epoch, epochs)
        c = self.cfg
        set_lr(self.opt, coordination.alpha_lr_at(self.base_lr, epoch, c.alpha_decay_epochs, c.alpha_decay))

    def extra_step(self, stage, batch2):
        """One step of alpha on ``batch2`` with D_S's weights frozen (METHOD 1.3, step 4).

        Every forward here measures: BatchNorm runs in training mode for the loss, but the running
        statistics stay as the ordinary G and D steps left them.
        """
        fam, kind = stage.family, stage.kind
        inputs = fam.generator_inputs(batch2)
        for d in self.discs.values():
            d.clip_alphas()
        logs, total = {}, 0.0
        with running_stats_kept(stage.t_gens, stage.s_gens, stage.t_discs, stage.s_discs):
            with torch.no_grad(), stage.precision.autocast():
                t_fakes = {n: stage.t_gens[n](inputs[n]) for n in self.discs}
                s_fakes = {n: stage.s_gens[n](inputs[n]) for n in self.discs}
                # L_target follows the whole (all ranks') batch, so every rank steers alpha alike.
                t_gap = {n: distributed.all_reduce_mean(coordination.gap(
                    kind, stage.t_discs[n](fam.d_input(n, inputs, t_fakes[n])).float())) for n in self.discs}
            with frozen(stage.s_discs):
                for a in self.alphas:
                    a.requires_grad_(True)
                try:
                    with stage.precision.autocast():
                        for n, d in self.discs.items():
                            target = self.targets[n].update(t_gap[n], self.beta)
                            fake_logits = d(fam.d_input(n, inputs, s_fakes[n])).float()
                            real_logits = d(fam.d_input(n, inputs, fam.real(n, batch2))).float()
                            s_gap = coordination.gap(kind, fake_logits)
                            total = total + coordination.alpha_objective(
                                s_gap, target, losses.d_real(kind, real_logits), losses.d_fake(kind, fake_logits),
                                self.local_weight, self.cfg.global_coordination)
                            logs[f"gap_S_{n}"], logs[f"L_target_{n}"] = s_gap.detach(), target
                    # Under fp16 the objective is scaled like every other loss, or alpha's small
                    # gradients underflow; a step whose gradients overflowed moves nothing.
                    scale = stage.precision.scaler.get_scale() if stage.precision.scaler is not None else 1.0
                    grads = [torch.nan_to_num(g / scale, nan=0.0, posinf=0.0, neginf=0.0)
                             for g in torch.autograd.grad(total * scale, self.alphas)]
                finally:
                    for a in self.alphas:
                        a.requires_grad_(False)
        for a, g in zip(self.alphas, grads):
            a.grad = g
        distributed.sync_grads(self.alphas)  # alpha steps outside Precision, so average here
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        logs["alpha_loss"] = total.detach()
        return logs

    def log_extras(self):
        out = {f"active_{n}": d.active_fraction() for n, d in self.discs.items()}
        out.update({f"alpha_mean_{n}": d.alpha_means() for n, d in self.discs.items()})
        return out

    def state_dict(self):
        return {"opt": self.opt.state_dict(), "targets": {n: t.state_dict() for n, t in self.targets.items()}}

    def load_state_dict(self, state):
        self.opt.load_state_dict(state["opt"])
        for n, t in self.targets.items():
            t.load_state_dict(state["targets"][n])


class DMD(Mode):
    """DMD's dynamically masked discriminator (METHOD 5): a random mask on D's layer d (or its
    input, or its logit heads), switched on while the retardation metric exceeds lambda
    (``dmd.measure`` picks what R_t compares; ``dmd.schedule: random`` switches it at random
    instead, the control for the retardation rule)."""

    name = "dmd"

    def wrap(self, net, points, family_name):
        c = self.cfg.dmd
        if c.layer > len(points):
            raise RecipeError(f"discriminator.dmd.layer: {c.layer} is past the {family_name} discriminator's "
                              f"{len(points)} layers; choose 1..{len(points)}")
        return DMDDiscriminator(net, points[c.layer - 1], c.placement, c.mask_ratio, c.heads, self.seed,
                                measure=c.measure)

    def attach(self, stage) -> None:
        c = self.cfg.dmd
        self.dmd = {n: find_dmd(d) for n, d in stage.s_discs.items()}
        self.schedules = {n: DMDSchedule(c.threshold, c.interval, c.samples, distributed.all_reduce_mean,
                                         schedule=c.schedule, on_rate=c.random_on_rate)
                          for n in self.dmd}

    def after_d_step(self, stage, inputs, s_fakes):
        fam = stage.family
        for n, dmd in self.dmd.items():
            self.schedules[n].after_step(dmd, stage.iteration, fam.d_input(n, inputs, s_fakes[n].detach()))
        return {}

    def log_extras(self):
        out = {}
        for n, dmd in self.dmd.items():
            out[f"dmd_on_{n}"] = torch.tensor(float(dmd.active))
            if dmd.last_r is not None:
                out[f"dmd_R_{n}"] = dmd.last_r
        return out


class GLeaD(Mode):
    """GLeaD (METHOD 6): D also reconstructs its input through the student generator's tail from
    a light decoder over its features."""

    name = "glead"

    def check(self, family, ngf_student):
        super().check(family, ngf_student)
        for n in family.generator_names:
            generator_tail(family.build_generator(n, ngf_student), family.name)
        self._vgg()

    def _vgg(self) -> nn.Module | None:
        if self.cfg.glead.distance != "perceptual":
            return None
        from ...nets.vgg import VGGFeatures
        # Low-level VGG19 features: a reconstruction is judged on edges and textures.
        return VGGFeatures(self.vgg19_weights, "relu2_2")

    def attach(self, stage) -> None:
        c = self.cfg.glead
        vgg = self._vgg()
        self.task = GLeaDTask(stage.family, stage.s_gens, stage.s_discs, weight=c.weight, distance=c.distance,
                              width=c.width, vgg=vgg.to(stage.device) if vgg is not None else None,
                              device=stage.device)

    def extra_d_parameters(self):
        return list(self.task.decoders.parameters())

    def d_loss_extra(self):
        return self.task.term

    def after_d_step(self, stage, inputs, s_fakes):
        return {"S_glead": self.task.pop_total()}

    def state_dict(self):
        return {"decoders": self.task.decoders.state_dict()}

    def load_state_dict(self, state):
        self.task.decoders.load_state_dict(state["decoders"])


class Composite(Mode):
    """Several modes at once: each wraps D in turn (the first innermost) and every hook runs for
    each part in order; their log entries and states are merged (states keyed by part name)."""

    def __init__(self, parts: list[Mode]):
        self.parts = parts
        self.name = "+".join(p.name for p in reversed(parts))
        self.has_discriminator = all(p.has_discriminator for p in parts)
        self.needs_second_batch = any(p.needs_second_batch for p in parts)

    def wrap(self, net, points, family_name):
        for p in self.parts:
            net = p.wrap(net, points, family_name)
        return net

    def check(self, family, ngf_student):
        Mode.check(self, family, ngf_student)
        for p in self.parts:
            if type(p).check is not Mode.check:
                p.check(family, ngf_student)

    def attach(self, stage):
        for p in self.parts:
            p.attach(stage)

    def frozen_parameters(self):
        return [x for p in self.parts for x in p.frozen_parameters()]

    def extra_d_parameters(self):
        return [x for p in self.parts for x in p.extra_d_parameters()]

    def d_loss_extra(self):
        extras = [e for e in (p.d_loss_extra() for p in self.parts) if e is not None]
        if not extras:
            return None
        return lambda name, image: sum(e(name, image) for e in extras)

    def after_d_step(self, stage, inputs, s_fakes):
        return {k: v for p in self.parts for k, v in p.after_d_step(stage, inputs, s_fakes).items()}

    def extra_step(self, stage, batch2):
        return {k: v for p in self.parts for k, v in p.extra_step(stage, batch2).items()}

    def plan(self, iterations, per_epoch):
        for p in self.parts:
            p.plan(iterations, per_epoch)

    def set_epoch(self, epoch, epochs):
        for p in self.parts:
            p.set_epoch(epoch, epochs)

    def log_extras(self):
        return {k: v for p in self.parts for k, v in p.log_extras().items()}

    def state_dict(self):
        return {p.name: p.state_dict() for p in self.parts}

    def load_state_dict(self, state):
        for p in self.parts:
            p.load_state_dict(state[p.name])


def composed(*kinds: type[Mode]) -> Callable[..., Composite]:
    """A registry entry for the composition of ``kinds`` (the first wraps D innermost)."""
    def make(cfg: DiscriminatorConfig, **kwargs) -> Composite:
        return Composite([k(cfg, **kwargs) for k in kinds])
    return make


#: Mode name -> class (or factory) taking (cfg, seed=..., vgg19_weights=...), in docs/discriminator_modes.md's order.
MODES: dict[str, Callable[..., Mode]] = {
    "selective": Selective,
    "plain": Mode,
    "none": NoDiscriminator,
    "dmd": DMD,
    "selective+dmd": composed(DMD, Selective),
    "glead": GLeaD,
}


def make_mode(cfg: DiscriminatorConfig, *, seed: int = 0, vgg19_weights: str = "") -> Mode:
    """The mode ``cfg.mode`` names; RecipeError lists the valid names for an unknown one."""
    if cfg.mode not in MODES:
        raise RecipeError(f"discriminator.mode: expected one of {', '.join(MODES)}, got {cfg.mode!r}")
    return MODES[cfg.mode](cfg, seed=seed, vgg19_weights=vgg19_weights)

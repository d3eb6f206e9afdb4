"""The ordinary GAN iteration of a family, and the stages made of it alone.

:class:`GANUpdate` is one D-then-G iteration of a family, used by stage 1 (with the L1
penalty's proximal step) and by the online teacher of stage 3. :class:`PretrainStage` is the optional
generator-only pre-training (SRGAN's MSE SRResNet); :class:`SparseStage` is stage 1, the sparse
model trained with the L1 penalty (METHOD 1.1); :class:`GANStage` trains given generators with
the family's losses alone (the baselines' small nets).
"""
from __future__ import annotations

import torch
from torch import nn

from ...config.sections import DistillConfig, TrainConfig
from ...families.base import Family
from ...method import losses
from ...method.sparsity import penalised_parameters, proximal_l1_step
from ...system.optim import Precision, distill_lr_factor, frozen, make_adam, prepare_module, set_lr


class GANUpdate:
    """One ordinary GAN iteration of a family: discriminators, then generators.

    Args:
        family: the family adapter.
        kind: the GAN loss ('hinge', 'lsgan', 'vanilla').
        gens, discs: generators and discriminators by name.
        opt_g, opt_d: their optimisers.
        precision: autocast and scaling.
        sparsity: optional (penalised parameters, lambda) for stage 1's L1 penalty, applied as a
            proximal step of ``lr * lambda`` after the generators' optimiser step.
    """

    def __init__(self, family: Family, kind: str, gens: nn.ModuleDict, discs: nn.ModuleDict,
                 opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, precision: Precision,
                 sparsity: tuple[list[nn.Parameter], float] | None = None):
        self.family, self.kind = family, kind
        self.gens, self.discs = gens, discs
        self.opt_g, self.opt_d = opt_g, opt_d
        self.precision = precision
        self.sparsity = sparsity

    def d_loss(self, discs: nn.ModuleDict, inputs: dict, fakes: dict, batch: dict,
               role: str = "T", extra=None) -> tuple[torch.Tensor, dict]:
        """Discriminator loss on real images and (detached, pooled) fakes, and its parts by name.

        ``role`` ('T' teacher or sparse model, 'S' student) keeps the families' image pools apart.
        ``extra(name, image)``, if given, is called right after each forward of D ``name`` on
        ``image`` (real, then fake, without condition channels) and its value is added to the
        loss: GLeaD's reconstruction term reads the features that forward recorded.
        """
        total, parts = 0.0, {}
        for n in self.family.generator_names:
            real_img = self.family.real(n, batch)
            real = discs[n](self.family.d_input(n, inputs, real_img))
            aux = extra(n, real_img) if extra is not None else 0.0
            fake_img = self.family.fake_for_d(f"{role}:{n}", fakes[n].detach())
            fake = discs[n](self.family.d_input(n, inputs, fake_img))
            if extra is not None:
                aux = aux + extra(n, fake_img)
            parts[n] = (losses.d_real(self.kind, real), losses.d_fake(self.kind, fake))
            total = total + self.family.d_loss_weight * (parts[n][0] + parts[n][1]) + aux
        return total, parts

    def g_adv(self, discs: nn.ModuleDict, inputs: dict, fakes: dict) -> torch.Tensor:
        """The generators' adversarial loss against ``discs``, times ``family.g_adv_weight``."""
        return self.family.g_adv_weight * sum(
            losses.g_adv(self.kind, discs[n](self.family.d_input(n, inputs, fakes[n])))
            for n in self.family.generator_names)

    def step(self, batch: dict, inputs: dict) -> tuple[dict, dict]:
        """Update D then G on ``batch``; returns (fakes, detached losses)."""
        with self.precision.autocast():
            fakes = {n: self.gens[n](inputs[n]) for n in self.family.generator_names}
        self.opt_d.zero_grad(set_to_none=True)
        with self.precision.autocast():
            d_total, _ = self.d_loss(self.discs, inputs, fakes, batch)
        self.precision.backward(d_total)
        self.precision.step(self.opt_d)

        self.opt_g.zero_grad(set_to_none=True)
        with frozen(self.discs), self.precision.autocast():
            adv = self.g_adv(self.discs, inputs, fakes)
            task = self.family.task_loss(self.gens, inputs, fakes, batch)
            g_total = adv + task
        self.precision.backward(g_total)
        self.precision.step(self.opt_g)
        if self.sparsity is not None:
            params, lam = self.sparsity
            proximal_l1_step(params, self.opt_g.param_groups[0]["lr"] * lam)
        # The loss scale is updated once per iteration by the stage (stage 3 steps more optimisers).
        return fakes, {"D": d_total.detach(), "G_adv": adv.detach(), "G_task": task.detach()}


def build_generators(family: Family, ngf: int, train: TrainConfig, device: torch.device) -> nn.ModuleDict:
    """Fresh generators of width ``ngf``, one per generator name, ready to train on ``device``."""
    return nn.ModuleDict({n: prepare_module(family.build_generator(n, ngf), train, device)
                          for n in family.generator_names})


def build_pair(family: Family, ngf: int, train: TrainConfig, device: torch.device) -> tuple[nn.ModuleDict, nn.ModuleDict]:
    """Fresh generators of width ``ngf`` and their discriminators."""
    discs = nn.ModuleDict({n: prepare_module(family.build_discriminator(n), train, device)
                           for n in family.generator_names})
    return build_generators(family, ngf, train, device), discs


@torch.no_grad()
def generator_visuals(family: Family, gens: nn.ModuleDict, batch: dict) -> list[torch.Tensor]:
    """Sample-grid rows of one set of generators (eval mode for the pass, then back to train)."""
    inputs = family.generator_inputs(batch)
    gens.eval()
    fakes = {n: gens[n](inputs[n]) for n in family.generator_names}
    gens.train()
    return family.visuals(batch, inputs, fakes, None)


class PretrainStage:
    """Generator-only pre-training on the family's ``pretrain_loss`` (SRGAN's MSE SRResNet).

    Args:
        family: the family adapter.
        train: the recipe's ``train`` section (learning rate, betas, precision, speed options).
        device: where to train.
        gens: the generators to pre-train (already on ``device``).
        epochs: how long.
        name: the stage's name ('pretrain_S' for the sparse model, 'pretrain_T' for the teacher,
            'pretrain_P' for the pruned student).
    """

    def __init__(self, family: Family, train: TrainConfig, device: torch.device, gens: nn.ModuleDict,
                 epochs: int, name: str):
        self.family, self.name, self.epochs = family, name, epochs
        self.needs_second_batch = False
        self.precision = Precision(train.amp, device)
        self.gens = gens
        self.opt_g = make_adam(self.gens.parameters(), train.lr_g, (train.beta1, train.beta2), device)

    def plan(self, iterations: int, per_epoch: int) -> None:
        """Nothing depends on the stage's length."""

    def set_epoch(self, epoch: int) -> None:
        """Constant learning rate."""

    def step(self, batch: dict, batch2: dict | None = None) -> dict:
        inputs = self.family.generator_inputs(batch)
        self.opt_g.zero_grad(set_to_none=True)
        with self.precision.autocast():
            fakes = {n: self.gens[n](inputs[n]) for n in self.family.generator_names}
            loss = self.family.pretrain_loss(self.gens, inputs, fakes, batch)
        self.precision.backward(loss)
        self.precision.step(self.opt_g)
        self.precision.update()
        return {"G_pretrain": loss.detach()}

    def visuals(self, batch: dict) -> list[torch.Tensor]:
        return generator_visuals(self.family, self.gens, batch)

    def state_dict(self) -> dict:
        return {"gens": self.gens.state_dict(), "opt_g": self.opt_g.state_dict(),
                "precision": self.precision.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.gens.load_state_dict(state["gens"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.precision.load_state_dict(state["precision"])

    def outputs(self) -> dict:
        """What the stage hands on: the generators' weights."""
        return {"gens": self.gens.state_dict()}

    def log_extras(self) -> dict:
        return {}


class _PlainGAN:
    """What :class:`SparseStage` and :class:`GANStage` share: generators and discriminators trained
    by :class:`GANUpdate` (the family's GAN loss and task loss, no teacher), and their state.

    A subclass builds ``gens`` and ``discs`` (its own order of random draws) and calls
    :meth:`_setup`.
    """

    needs_second_batch = False

    def plan(self, iterations: int, per_epoch: int) -> None:
        """Nothing depends on the stage's length."""

    def _setup(self, family: Family, train: TrainConfig, device: torch.device, gens: nn.ModuleDict,
               discs: nn.ModuleDict, sparsity: tuple[list[nn.Parameter], float] | None) -> None:
        self.family = family
        self.gens, self.discs = gens, discs
        betas = (train.beta1, train.beta2)
        self.opt_g = make_adam(self.gens.parameters(), train.lr_g, betas, device)
        self.opt_d = make_adam(self.discs.parameters(), train.lr_d, betas, device)
        self.update = GANUpdate(family, train.gan_loss, self.gens, self.discs, self.opt_g, self.opt_d,
                                self.precision, sparsity)

    def step(self, batch: dict, batch2: dict | None = None) -> dict:
        inputs = self.family.generator_inputs(batch)
        _, logs = self.update.step(batch, inputs)
        self.precision.update()
        return logs

    def visuals(self, batch: dict) -> list[torch.Tensor]:
        return generator_visuals(self.family, self.gens, batch)

    def state_dict(self) -> dict:
        return {"gens": self.gens.state_dict(), "discs": self.discs.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "precision": self.precision.state_dict(), "family": self.family.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.gens.load_state_dict(state["gens"])
        self.discs.load_state_dict(state["discs"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.precision.load_state_dict(state["precision"])
        self.family.load_state_dict(state["family"])

    def outputs(self) -> dict:
        """What the stage hands on: {"gens", "discs"} state dicts."""
        return {"gens": self.gens.state_dict(), "discs": self.discs.state_dict()}

    def log_extras(self) -> dict:
        return {}


class SparseStage(_PlainGAN):
    """Stage 1: train the sparse model with the L1 penalty (METHOD 1.1).

    Args:
        family: the family adapter.
        train: the recipe's ``train`` section.
        device: where to train.
        ngf: the sparse model's width (``model.ngf_student``).
        epochs: how long.
        method: 'slimming' (L1 on norm scales) or 'l1' (L1 on conv weights).
        l1_lambda: the penalty's weight.
        init_gens: optional state dict of the generators (a ModuleDict's, keys '<name>.<param>') to
            start from (a pre-trained model).
        init_discs: optional discriminator name -> state dict to start those discriminators from.
    """

    name = "sparse"

    def __init__(self, family: Family, train: TrainConfig, device: torch.device, *, ngf: int, epochs: int,
                 method: str, l1_lambda: float, init_gens: dict | None = None, init_discs: dict | None = None):
        self.epochs = epochs
        family.reset_state()
        self.precision = Precision(train.amp, device)
        gens, discs = build_pair(family, ngf, train, device)
        if init_gens is not None:
            gens.load_state_dict(init_gens)
        for n, state in (init_discs or {}).items():
            discs[n].load_state_dict(state)
        penalised = []
        for n in family.generator_names:
            penalised += penalised_parameters(gens[n], method, family.example_input(n, 1, device))
        self._setup(family, train, device, gens, discs, (penalised, l1_lambda))

    def set_epoch(self, epoch: int) -> None:
        """Stage 1 is short (a tenth of stage 3) and keeps a constant learning rate."""


class GANStage(_PlainGAN):
    """Plain GAN training of given generators: the family's GAN loss and task loss against fresh
    discriminators of the family, no teacher and no distillation, for stage 3's length and with
    stage 3's learning-rate schedule. The baselines (:mod:`gancompress.experiments.baselines`) train their small
    nets with it.

    Args:
        family: the family adapter.
        train: the recipe's ``train`` section (learning rates, betas, GAN loss, precision).
        device: where to train.
        gens: the generators by name (any widths, pruned or not); moved to ``device``.
        distill: the recipe's ``distill`` section: its epochs and learning-rate schedule are used.
        name: the stage's name in checkpoints and ``metrics.jsonl``.

    The discriminators are drawn from the random stream after the generators exist, so seeding
    before building the generators fixes both.
    """

    def __init__(self, family: Family, train: TrainConfig, device: torch.device, gens: dict[str, nn.Module], *,
                 distill: DistillConfig, name: str = "gan"):
        self.name = name
        self.distill = distill
        self.epochs = distill.epochs_const + distill.epochs_decay
        self.lr_g, self.lr_d = train.lr_g, train.lr_d
        family.reset_state()
        self.precision = Precision(train.amp, device)
        names = family.generator_names
        gens = nn.ModuleDict({n: prepare_module(gens[n], train, device) for n in names})
        discs = nn.ModuleDict({n: prepare_module(family.build_discriminator(n), train, device) for n in names})
        self._setup(family, train, device, gens, discs, None)

    def set_epoch(self, epoch: int) -> None:
        """Stage 3's schedule, for G and D alike."""
        f = distill_lr_factor(self.distill, epoch)
        set_lr(self.opt_g, self.lr_g * f)
        set_lr(self.opt_d, self.lr_d * f)

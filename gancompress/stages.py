"""The per-iteration work of the training stages, for every family.

:class:`GANUpdate` is the ordinary GAN iteration of a family (D then G), used by stage 1 (with
the L1 sub-gradient) and for the online teacher of stage 3. :class:`DistillStage` is GCC's
stage-3 iteration (METHOD 1.3): teacher D and G, student D weights, student G with
distillation, then the retention factors on a second batch.

Stages hold their modules, optimisers and controllers and expose ``step``, ``set_epoch``,
``state_dict``/``load_state_dict`` and ``visuals``; the loop in ``train.py`` drives them.
Losses are returned as detached device tensors: nothing here waits on the GPU.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import torch
from torch import nn

from . import coordination, distributed, losses
from .config import Recipe
from .detector import classifier_guidance, load_classifier
from .discriminators.dmd import DMDDiscriminator, DMDSchedule, find_dmd
from .discriminators.glead import generator_tail, make_glead_head, reconstruction_loss
from .discriminators.selective import SelectiveDiscriminator
from .distill import Adapters, FeatureTap, distill_terms, tap_channels
from .errors import RecipeError
from .families.base import Family
from .sparsity import add_l1_subgradient, penalised_parameters

log = logging.getLogger(__name__)


def lr_factor(epoch: int, const: int, decay: int) -> float:
    """pix2pix schedule: 1 for ``const`` epochs, then linearly to 0 over ``decay`` epochs."""
    if epoch < const:
        return 1.0
    return max(0.0, 1.0 - (epoch - const + 1) / (decay + 1))


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` of the modules' parameters for the block, then restore it."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    states = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, s in zip(params, states):
            p.requires_grad_(s)


class Precision:
    """Autocast, loss scaling, and averaging gradients over data-parallel ranks.

    Under a process group (``distributed``) every optimiser's gradients are averaged over the
    ranks before it steps (in :meth:`unscale` when that comes first), so all ranks keep the same
    weights.

    Args:
        mode: 'auto' (bf16 on a GPU that supports it, else fp32), 'off', 'bf16' or 'fp16'.
        device: the training device.
    """

    def __init__(self, mode: str, device: torch.device):
        self.device = device
        if mode == "auto":
            mode = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
        if mode == "fp16" and device.type != "cuda":
            raise ValueError("train.amp: fp16 needs a CUDA device; use 'off' or 'bf16' on the CPU")
        self.mode = mode
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        self.scaler = torch.amp.GradScaler("cuda") if mode == "fp16" else None
        self._synced: set[int] = set()  # optimisers whose gradients are averaged since their last step

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def sync(self, opt: torch.optim.Optimizer) -> None:
        """Average ``opt``'s gradients over the ranks (once per step; nothing on one process)."""
        if id(opt) not in self._synced:
            distributed.sync_grads(p for group in opt.param_groups for p in group["params"])
            self._synced.add(id(opt))

    def unscale(self, opt: torch.optim.Optimizer) -> None:
        # Average first: the scaler records an overflow per rank when it unscales, and only
        # averaged gradients make every rank record the same and skip the same steps.
        self.sync(opt)
        if self.scaler is not None:
            self.scaler.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer) -> None:
        self.sync(opt)
        if self.scaler is not None:
            self.scaler.step(opt)
        else:
            opt.step()
        self._synced.discard(id(opt))

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict() if self.scaler is not None else {}}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def make_adam(params, lr: float, recipe: Recipe, device: torch.device) -> torch.optim.Adam:
    """Adam with the recipe's betas; fused on CUDA, foreach on the CPU."""
    kwargs = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.Adam(params, lr=lr, betas=(recipe.train.beta1, recipe.train.beta2), **kwargs)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def prepare_module(module: nn.Module, recipe: Recipe, device: torch.device) -> nn.Module:
    """``module`` on ``device`` with the recipe's speed options; BatchNorm layers become
    SyncBatchNorm under ``train.sync_bn`` when several processes train (statistics of the whole
    batch instead of each rank's share)."""
    if recipe.train.sync_bn and distributed.world_size() > 1:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    module = module.to(device)
    if recipe.train.channels_last:
        module = module.to(memory_format=torch.channels_last)
    if recipe.train.compile:
        module.compile()
    return module


class GANUpdate:
    """One ordinary GAN iteration of a family: discriminators, then generators.

    Args:
        family: the family adapter.
        kind: the GAN loss ('hinge', 'lsgan', 'vanilla').
        gens, discs: generators and discriminators by name.
        opt_g, opt_d: their optimisers.
        precision: autocast and scaling.
        sparsity: optional (penalised parameters, lambda) for stage 1's L1 sub-gradient.
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
        if self.sparsity is not None:
            self.precision.unscale(self.opt_g)
            add_l1_subgradient(*self.sparsity)
        self.precision.step(self.opt_g)
        self.precision.update()
        return fakes, {"D": d_total.detach(), "G_adv": adv.detach(), "G_task": task.detach()}


def _build_pair(family: Family, ngf: int, recipe: Recipe, device: torch.device) -> tuple[nn.ModuleDict, nn.ModuleDict]:
    gens = nn.ModuleDict({n: prepare_module(family.build_generator(n, ngf), recipe, device)
                          for n in family.generator_names})
    discs = nn.ModuleDict({n: prepare_module(family.build_discriminator(n), recipe, device)
                           for n in family.generator_names})
    return gens, discs


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
        ngf: width of the generators to pre-train.
        name: the stage's name ('pretrain_S' for the sparse model, 'pretrain_T' for the teacher).
    """

    def __init__(self, family: Family, recipe: Recipe, device: torch.device, ngf: int, name: str):
        self.family, self.recipe, self.device, self.name = family, recipe, device, name
        self.epochs = recipe.train.pretrain_epochs
        self.precision = Precision(recipe.train.amp, device)
        self.gens = nn.ModuleDict({n: prepare_module(family.build_generator(n, ngf), recipe, device)
                                   for n in family.generator_names})
        self.opt_g = make_adam(self.gens.parameters(), recipe.train.lr_g, recipe, device)

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

    def log_extras(self) -> dict:
        return {}


class SparseStage:
    """Stage 1: train the sparse model (width ``ngf_student``) with the L1 penalty (METHOD 1.1).

    ``init_gens`` optionally starts the generators from a state dict (a pre-trained model).
    """

    name = "sparse"

    def __init__(self, family: Family, recipe: Recipe, device: torch.device, init_gens: dict | None = None):
        self.family, self.recipe, self.device = family, recipe, device
        family.reset_state()
        self.epochs = recipe.sparse_epochs
        self.precision = Precision(recipe.train.amp, device)
        self.gens, self.discs = _build_pair(family, recipe.model.ngf_student, recipe, device)
        if init_gens is not None:
            self.gens.load_state_dict(init_gens)
        penalised = []
        for n in family.generator_names:
            penalised += penalised_parameters(self.gens[n], recipe.sparse.method, family.example_input(n, 1, device))
        self.opt_g = make_adam(self.gens.parameters(), recipe.train.lr_g, recipe, device)
        self.opt_d = make_adam(self.discs.parameters(), recipe.train.lr_d, recipe, device)
        self.update = GANUpdate(family, recipe.train.gan_loss, self.gens, self.discs, self.opt_g, self.opt_d,
                                self.precision, (penalised, recipe.l1_lambda))

    def set_epoch(self, epoch: int) -> None:
        """Stage 1 is short (a tenth of stage 3) and keeps a constant learning rate."""

    def step(self, batch: dict, batch2: dict | None = None) -> dict:
        inputs = self.family.generator_inputs(batch)
        _, logs = self.update.step(batch, inputs)
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

    def log_extras(self) -> dict:
        return {}


def student_discriminator(family: Family, name: str, recipe: Recipe, device: torch.device) -> nn.Module:
    """The student's discriminator ``name`` for ``discriminator.mode``.

    'plain' and 'glead' use the family's D as it is (GLeaD's decoder lives with the stage);
    'selective' wraps it with retention factors; 'dmd' with DMD's dynamic mask; 'selective+dmd'
    with both (the selective wrapper outside, so its alphas mask D's channels whether or not DMD's
    mask is on).
    """
    c = recipe.discriminator
    net = prepare_module(family.build_discriminator(name), recipe, device)
    points = net.mask_points()
    if c.mode in ("dmd", "selective+dmd"):
        if c.dmd.layer > len(points):
            raise RecipeError(f"discriminator.dmd.layer: {c.dmd.layer} is past the {family.name} discriminator's "
                              f"{len(points)} layers; choose 1..{len(points)}")
        net = DMDDiscriminator(net, points[c.dmd.layer - 1], c.dmd.placement, c.dmd.mask_ratio, c.dmd.heads,
                               recipe.seed).to(device)
    if c.mode in ("selective", "selective+dmd"):
        net = SelectiveDiscriminator(net, points, c.tau).to(device)
    return net


def check_stage3_settings(family: Family, recipe: Recipe) -> None:
    """Raise the user errors stage 3 would meet, before stage 1 spends hours training.

    Builds each student discriminator as the recipe's mode asks (DMD's layer and placement),
    checks GLeaD's tail and VGG weights, and loads the classifiers, all on the CPU.
    """
    cpu = torch.device("cpu")
    mode = recipe.discriminator.mode
    for n in family.generator_names:
        if mode != "none":
            student_discriminator(family, n, recipe, cpu)
        if mode == "glead":
            generator_tail(family.build_generator(n, recipe.model.ngf_student), family.name)
    if mode == "glead" and recipe.discriminator.glead.distance == "perceptual":
        from .vgg import VGGFeatures
        VGGFeatures(recipe.eval.vgg19_weights, "relu2_2")
    load_classifiers(recipe, family.generator_names, cpu)


def load_classifiers(recipe: Recipe, names: tuple[str, ...], device: torch.device) -> dict[str, list[nn.Module]]:
    """The frozen classifiers of ``classifier.paths`` by the generator they judge, oldest first.

    A classifier file records the generator it was trained on (tools/train_detector.py); one
    that records none judges every generator.
    """
    out: dict[str, list[nn.Module]] = {}
    for path in recipe.classifier.paths:
        model, meta = load_classifier(path, device)
        judged = meta.get("generator")
        if judged is not None and judged not in names:
            raise RecipeError(f"classifier.paths: {path} judges generator {judged!r}, which this family does not "
                              f"have ({', '.join(names)}); train one with tools/train_detector.py on this run")
        for n in ([judged] if judged is not None else names):
            out.setdefault(n, []).append(model)
    return out


class GLeaDTask:
    """GLeaD's reconstruction task for the student discriminators (``discriminator.mode: glead``).

    Each student D gets a decoder over the features of its mask points; D's loss gains
    ``weight * dist(tail(decoder(D features)), image)`` on real and fake inputs, the tail being
    the student generator's own (applied with detached weights: G's loss is unchanged).

    Args:
        family, recipe, device: as usual.
        gens: the student generators by name (their tails reconstruct).
        discs: the student discriminators by name.
    """

    def __init__(self, family: Family, recipe: Recipe, device: torch.device, gens: nn.ModuleDict,
                 discs: nn.ModuleDict):
        c = recipe.discriminator.glead
        self.weight, self.distance = c.weight, c.distance
        self.gens = gens
        self.vgg = None
        if c.distance == "perceptual":
            from .vgg import VGGFeatures
            # Low-level VGG19 features: a reconstruction is judged on edges and textures.
            self.vgg = VGGFeatures(recipe.eval.vgg19_weights, "relu2_2").to(device)
        names = family.generator_names
        inputs = {n: family.example_input(n, 1, device) for n in names}
        self.decoders = nn.ModuleDict()
        self.taps = {}
        for n in names:
            generator_tail(gens[n], family.name)
            points = discs[n].mask_points()
            was = gens[n].training
            gens[n].eval()
            with torch.no_grad():
                d_example = family.d_input(n, inputs, gens[n](inputs[n]))
            gens[n].train(was)
            channels = tap_channels(discs[n], points, d_example)
            self.decoders[n] = make_glead_head(gens[n], channels, inputs[n], c.width, family.name).to(device)
            self.taps[n] = FeatureTap(points)
        self._total = []

    def term(self, name: str, image: torch.Tensor) -> torch.Tensor:
        """The weighted reconstruction of ``image`` from the features D ``name`` just computed."""
        loss = reconstruction_loss(self.decoders[name], generator_tail(self.gens[name]), self.taps[name].outputs,
                                   image, self.distance, self.vgg)
        self._total.append(loss.detach())
        return self.weight * loss

    def pop_total(self) -> torch.Tensor:
        """The unweighted reconstruction losses since the last call, summed (for the log)."""
        total = torch.stack(self._total).sum()
        self._total = []
        return total


class DistillStage:
    """Stage 3: GCC's online collaborative distillation against a selective discriminator.

    Args:
        family, recipe, device: as usual.
        student: the pruned generators by name (their architecture is fixed).
        teacher: generators and discriminators to continue from, or None to build them fresh
            (``distill.teacher: scratch``, the paper setting).
        teacher_init: optional state dict for fresh teacher generators (a pre-trained teacher).
    """

    name = "distill"

    def __init__(self, family: Family, recipe: Recipe, device: torch.device, student: dict[str, nn.Module],
                 teacher: tuple[nn.ModuleDict, nn.ModuleDict] | None = None, teacher_init: dict | None = None):
        self.family, self.recipe, self.device = family, recipe, device
        family.reset_state()
        names = family.generator_names
        self.kind = recipe.train.gan_loss
        self.epochs = recipe.distill_epochs
        self.epoch = 0
        self.precision = Precision(recipe.train.amp, device)
        self.teacher_mode = recipe.distill.teacher
        if teacher is None:
            self.t_gens, self.t_discs = _build_pair(family, recipe.model.ngf_teacher, recipe, device)
            if teacher_init is not None:
                self.t_gens.load_state_dict(teacher_init)
        else:
            self.t_gens, self.t_discs = teacher
        self.s_gens = nn.ModuleDict({n: prepare_module(student[n], recipe, device) for n in names})

        mode = recipe.discriminator.mode
        self.d_mode = mode
        self.s_discs = nn.ModuleDict()
        for n in names:
            if mode != "none":
                self.s_discs[n] = student_discriminator(family, n, recipe, device)
        for d in self.s_discs.values():
            for a in getattr(d, "alphas", []):
                a.requires_grad_(False)  # only the alpha phase asks for their gradient
        self.iteration = 0
        self.dmd = {n: find_dmd(d) for n, d in self.s_discs.items() if find_dmd(d) is not None}
        c = recipe.discriminator.dmd
        self.dmd_schedules = {n: DMDSchedule(c.threshold, c.interval, c.samples, distributed.all_reduce_mean)
                              for n in self.dmd}

        # Distillation points: generator taps with 1x1 adapters, teacher-D taps on both fakes.
        self.adapters = nn.ModuleDict()
        self.s_taps, self.t_taps, self.dt_taps = {}, {}, {}
        for n in names:
            example = family.example_input(n, 1, device)
            s_points, t_points = self.s_gens[n].distill_points(), self.t_gens[n].distill_points()
            self.adapters[n] = Adapters(tap_channels(self.s_gens[n], s_points, example),
                                        tap_channels(self.t_gens[n], t_points, example)).to(device)
            # keep_first: the task loss may run a generator again (CycleGAN's cycle); the taps
            # keep the main pass on ``inputs``, and step() resets them.
            self.s_taps[n], self.t_taps[n] = FeatureTap(s_points, keep_first=True), FeatureTap(t_points, keep_first=True)
            d_points = self.t_discs[n].mask_points()
            try:
                chosen = [d_points[i - 1] for i in recipe.distill.d_layers]
            except IndexError:
                raise ValueError(f"distill.d_layers {list(recipe.distill.d_layers)}: the discriminator has "
                                 f"only {len(d_points)} layers") from None
            self.dt_taps[n] = FeatureTap(chosen)

        self.glead = GLeaDTask(family, recipe, device, self.s_gens, self.s_discs) if mode == "glead" else None
        self.classifiers = load_classifiers(recipe, names, device)

        t = recipe.train
        self.opt_tg = make_adam(self.t_gens.parameters(), t.lr_g, recipe, device)
        self.opt_td = make_adam(self.t_discs.parameters(), t.lr_d, recipe, device)
        self.opt_sg = make_adam(list(self.s_gens.parameters()) + list(self.adapters.parameters()), t.lr_g, recipe, device)
        d_weights = [p for d in self.s_discs.values()
                     for p in (d.weight_parameters() if isinstance(d, SelectiveDiscriminator) else d.parameters())]
        if self.glead is not None:
            d_weights += list(self.glead.decoders.parameters())
        self.opt_sd = make_adam(d_weights, t.lr_d, recipe, device) if d_weights else None
        alphas = [a for d in self.s_discs.values() for a in getattr(d, "alphas", [])]
        self.opt_alpha = (torch.optim.Adam(alphas, lr=recipe.discriminator.alpha_lr, betas=(t.beta1, t.beta2))
                          if alphas else None)
        self.targets = {n: coordination.EmaTarget() for n in names}
        local = recipe.discriminator.local_weight
        self.local_weight = family.d_loss_weight if local is None else local
        self.teacher_update = GANUpdate(family, self.kind, self.t_gens, self.t_discs, self.opt_tg, self.opt_td,
                                        self.precision)
        if self.teacher_mode == "frozen":
            self.t_gens.eval()
            self.t_discs.eval()

    # --- schedule ------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        d, t = self.recipe.distill, self.recipe.train
        self.epoch = epoch
        f = lr_factor(epoch, d.epochs_const, d.epochs_decay)
        for opt, base in ((self.opt_tg, t.lr_g), (self.opt_td, t.lr_d), (self.opt_sg, t.lr_g), (self.opt_sd, t.lr_d)):
            if opt is not None:
                set_lr(opt, base * f)
        if self.opt_alpha is not None:
            c = self.recipe.discriminator
            set_lr(self.opt_alpha, coordination.alpha_lr(c.alpha_lr, epoch, c.alpha_decay_epochs, c.alpha_decay))

    # --- one iteration -------------------------------------------------------------------
    def step(self, batch: dict, batch2: dict) -> dict:
        fam, names = self.family, self.family.generator_names
        inputs = fam.generator_inputs(batch)
        logs = {}
        for tap in list(self.s_taps.values()) + list(self.t_taps.values()):
            tap.reset()

        # 1. teacher: D_T then G_T (or a frozen forward); its generator taps fill here.
        if self.teacher_mode == "frozen":
            with torch.no_grad(), self.precision.autocast():
                t_fakes = {n: self.t_gens[n](inputs[n]) for n in names}
        else:
            t_fakes, t_logs = self.teacher_update.step(batch, inputs)
            logs.update({f"T_{k}": v for k, v in t_logs.items()})
        t_feats = {n: [f.detach() for f in self.t_taps[n].outputs] for n in names}
        t_fakes = {n: f.detach() for n, f in t_fakes.items()}

        # 2. student D weights, alpha frozen (alphas never require grad outside step 4).
        with self.precision.autocast():
            s_fakes = {n: self.s_gens[n](inputs[n]) for n in names}
        if self.opt_sd is not None:
            self.opt_sd.zero_grad(set_to_none=True)
            extra = self.glead.term if self.glead is not None else None
            with self.precision.autocast():
                d_total, _ = self.teacher_update.d_loss(self.s_discs, inputs, s_fakes, batch, role="S", extra=extra)
            self.precision.backward(d_total)
            self.precision.step(self.opt_sd)
            logs["S_D"] = d_total.detach()
            if self.glead is not None:
                logs["S_glead"] = self.glead.pop_total()
            for n, dmd in self.dmd.items():
                self.dmd_schedules[n].after_step(dmd, self.iteration, fam.d_input(n, inputs, s_fakes[n].detach()))

        # 3. student G: adversarial (vs D_S) + task + distillation from G_T and D_T features.
        self.opt_sg.zero_grad(set_to_none=True)
        with frozen(self.s_discs, self.t_discs), self.precision.autocast():
            adv = (self.teacher_update.g_adv(self.s_discs, inputs, s_fakes) if self.opt_sd is not None
                   else torch.zeros((), device=self.device))
            task = fam.task_loss(self.s_gens, inputs, s_fakes, batch)
            content = texture = 0.0
            for n in names:
                mapped = self.adapters[n]([f for f in self.s_taps[n].outputs])
                c, t = distill_terms(mapped, t_feats[n])
                with torch.no_grad():
                    self.t_discs[n](fam.d_input(n, inputs, t_fakes[n]))
                dt_teacher = list(self.dt_taps[n].outputs)
                self.t_discs[n](fam.d_input(n, inputs, s_fakes[n]))  # gradient reaches G_S
                dc, dt = distill_terms(list(self.dt_taps[n].outputs), dt_teacher)
                content = content + c + dc
                texture = texture + t + dt
            g_total = adv + task + self.recipe.distill.gamma_m * content + self.recipe.distill.gamma_t * texture
            if self.classifiers:
                c = self.recipe.classifier
                guide = sum(classifier_guidance(self.classifiers[n], s_fakes[n].float(), c.mode)
                            for n in self.classifiers)
                g_total = g_total + c.phi * guide
                logs["S_classifier"] = guide.detach()
        self.precision.backward(g_total)
        self.precision.step(self.opt_sg)
        logs.update({"S_G_adv": adv.detach(), "S_G_task": task.detach(),
                     "S_content": content.detach(), "S_texture": texture.detach()})

        # 4. retention factors on a second batch, D_S weights frozen.
        if self.opt_alpha is not None:
            logs.update(self.alpha_step(batch2))
        self.precision.update()
        self.iteration += 1
        return logs

    def alpha_step(self, batch: dict) -> dict:
        fam, names, kind = self.family, self.family.generator_names, self.kind
        inputs = fam.generator_inputs(batch)
        beta = coordination.ema_beta(self.epoch, self.epochs)
        for d in self.s_discs.values():
            d.clip_alphas()
        with torch.no_grad(), self.precision.autocast():
            t_fakes = {n: self.t_gens[n](inputs[n]) for n in names}
            s_fakes = {n: self.s_gens[n](inputs[n]) for n in names}
            # L_target follows the whole (all ranks') batch, so every rank steers alpha alike.
            t_gap = {n: distributed.all_reduce_mean(
                coordination.gap(kind, self.t_discs[n](fam.d_input(n, inputs, t_fakes[n])).float()))
                     for n in names}
        alphas = [a for d in self.s_discs.values() for a in d.alphas]
        total = 0.0
        logs = {}
        with frozen(self.s_discs):
            for a in alphas:
                a.requires_grad_(True)
            try:
                with self.precision.autocast():
                    for n in names:
                        target = self.targets[n].update(t_gap[n], beta)
                        fake_logits = self.s_discs[n](fam.d_input(n, inputs, s_fakes[n])).float()
                        real_logits = self.s_discs[n](fam.d_input(n, inputs, fam.real(n, batch))).float()
                        s_gap = coordination.gap(kind, fake_logits)
                        total = total + coordination.alpha_objective(
                            s_gap, target, losses.d_real(kind, real_logits), losses.d_fake(kind, fake_logits),
                            self.local_weight, self.recipe.discriminator.global_coordination)
                        logs[f"gap_S_{n}"], logs[f"L_target_{n}"] = s_gap.detach(), target
                grads = torch.autograd.grad(total, alphas)
            finally:
                for a in alphas:
                    a.requires_grad_(False)
        for a, g in zip(alphas, grads):
            a.grad = g
        distributed.sync_grads(alphas)  # alphas step outside Precision, so average them here
        self.opt_alpha.step()
        self.opt_alpha.zero_grad(set_to_none=True)
        logs["alpha_loss"] = total.detach()
        return logs

    # --- reporting and state ---------------------------------------------------------------
    def log_extras(self) -> dict:
        """Active-channel fraction of every masked layer (device tensors)."""
        out = {}
        for n, d in self.s_discs.items():
            if isinstance(d, SelectiveDiscriminator):
                out[f"active_{n}"] = d.active_fraction()
        for n, dmd in self.dmd.items():
            out[f"dmd_on_{n}"] = torch.tensor(float(dmd.active))
            if dmd.last_r is not None:
                out[f"dmd_R_{n}"] = dmd.last_r
        return out

    @torch.no_grad()
    def visuals(self, batch: dict) -> list[torch.Tensor]:
        inputs = self.family.generator_inputs(batch)
        was = self.t_gens.training
        self.t_gens.eval()
        self.s_gens.eval()
        t = {n: self.t_gens[n](inputs[n]) for n in self.family.generator_names}
        s = {n: self.s_gens[n](inputs[n]) for n in self.family.generator_names}
        self.t_gens.train(was)
        self.s_gens.train()
        return self.family.visuals(batch, inputs, t, s)

    def state_dict(self) -> dict:
        opts = {k: o.state_dict() for k, o in self._optimizers().items() if o is not None}
        return {"t_gens": self.t_gens.state_dict(), "t_discs": self.t_discs.state_dict(),
                "s_gens": self.s_gens.state_dict(), "s_discs": self.s_discs.state_dict(),
                "glead": self.glead.decoders.state_dict() if self.glead is not None else {},
                "adapters": self.adapters.state_dict(), "optimizers": opts,
                "targets": {n: t.state_dict() for n, t in self.targets.items()},
                "precision": self.precision.state_dict(), "family": self.family.state_dict(),
                "iteration": self.iteration}

    def load_state_dict(self, state: dict) -> None:
        self.t_gens.load_state_dict(state["t_gens"])
        self.t_discs.load_state_dict(state["t_discs"])
        self.s_gens.load_state_dict(state["s_gens"])
        self.s_discs.load_state_dict(state["s_discs"])
        if self.glead is not None:
            self.glead.decoders.load_state_dict(state["glead"])
        self.adapters.load_state_dict(state["adapters"])
        for k, o in self._optimizers().items():
            if o is not None:
                o.load_state_dict(state["optimizers"][k])
        for n, t in self.targets.items():
            t.load_state_dict(state["targets"][n])
        self.precision.load_state_dict(state["precision"])
        self.family.load_state_dict(state["family"])
        self.iteration = state.get("iteration", 0)  # checkpoints older than DMD have no counter

    def _optimizers(self) -> dict:
        return {"tg": self.opt_tg, "td": self.opt_td, "sg": self.opt_sg, "sd": self.opt_sd, "alpha": self.opt_alpha}

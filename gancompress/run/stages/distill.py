"""Stage 3: GCC's online collaborative distillation (METHOD 1.3 and 3).

Per iteration: the teacher's D and G (an ordinary GAN step, or a frozen forward), the student
D's weights, the student G with its adversarial, task and distillation losses, then the
discriminator mode's own phase (GCC's alpha step for the selective discriminator). How the
student's discriminator behaves is the mode's business (:mod:`~gancompress.method.discriminators.modes`);
this stage calls the mode's hooks and never asks which mode it runs.

Teacher and student compute the same thing at a tap (METHOD 3): both generators run in training
mode (a frozen teacher too, its running statistics kept as they are), the taps sit before any
dropout, and the teacher's phase runs in a forked random state, so the student's forward draws
the same dropout masks: a student that is a copy of its teacher matches it at every tap.

Every ``train.log_every`` iterations the stage also measures the gradient norm of each term of
the student's loss on the student generator's own parameters (the adapters excluded), so the
terms' weights can be set against the task loss they join (``grad_<term>`` in metrics.jsonl).
With ``distill.balance: task`` the stage sets those weights itself: at its first iteration it
measures the same norms unweighted and scales the content and texture terms so that each pulls
``gamma_m`` / ``gamma_t`` times as hard as the task loss; the weights are kept from then on (and in
the checkpoint, so a resumed run goes on with them).
"""
from __future__ import annotations

import torch
from torch import nn

from ...config.sections import ClassifierConfig, DistillConfig, TrainConfig
from ...errors import RecipeError
from ...families.base import Family
from ...method.classifier import classifier_guidance
from ...method.discriminators.modes import Mode
from ...method.taps import Adapters, FeatureTap, distill_terms, tap_channels
from ...nets.layers import running_stats_kept
from ...system import distributed
from ...system.optim import Precision, distill_lr_factor, frozen, make_adam, prepare_module, set_lr
from .gan import GANUpdate, build_pair


def student_discriminator(family: Family, name: str, mode: Mode, train: TrainConfig,
                          device: torch.device) -> nn.Module:
    """The student's discriminator ``name``: the family's D, wrapped by ``mode``, on ``device``."""
    net = prepare_module(family.build_discriminator(name), train, device)
    return mode.wrap(net, net.mask_points(), family.name).to(device)


def gradient_norms(terms: dict[str, torch.Tensor], params: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The L2 norm of each term's gradient on ``params`` (0 for a term that does not reach them);
    the graph is kept for the backward that follows."""
    out = {}
    for name, term in terms.items():
        grads = ([g for g in torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
                  if g is not None] if term.requires_grad else [])
        out[name] = (torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
                     if grads else term.new_zeros((), dtype=torch.float32))
    return out


def d_layer_points(disc: nn.Module, d_layers: tuple[int, ...], family_name: str) -> list[nn.Module]:
    """The teacher D's feature points at the 1-based ``distill.d_layers``; RecipeError past its depth."""
    points = disc.feature_points()
    bad = [i for i in d_layers if i > len(points)]
    if bad:
        raise RecipeError(f"distill.d_layers: layer {bad[0]} is past the {family_name} discriminator's "
                          f"{len(points)} layers; choose among 1..{len(points)}")
    return [points[i - 1] for i in d_layers]


class DistillStage:
    """Stage 3 against the student discriminator of ``mode``.

    Args:
        family: the family adapter.
        device: where to train.
        train: the recipe's ``train`` section (optimiser, precision, speed options).
        distill: the ``distill`` section (teacher handling, epochs, gamma_m/gamma_t, D layers).
        mode: the student discriminator's mode (``method.discriminators.modes.make_mode``).
        student: the pruned generators by name (their architecture is fixed).
        teacher: generators and discriminators to continue from, or None to build them fresh.
        teacher_ngf: width of fresh teacher generators (``model.ngf_teacher``).
        teacher_init: optional state dicts {"gens", "discs"} for fresh teachers (a pre-trained
            teacher); either may be absent.
        classifiers: frozen real-vs-generated classifiers by generator name (may be empty).
        classifier: the ``classifier`` section (phi, mode) for them.
        train_teacher_d: with ``distill.teacher: frozen``, still train the teacher's discriminator
            (it was not trained with this teacher: a pretrained generator without its D file). The
            D-feature terms and GCC's target gap read D_T, so an untrained one would mislead them.
    """

    name = "distill"

    def __init__(self, family: Family, device: torch.device, *, train: TrainConfig, distill: DistillConfig,
                 mode: Mode, student: dict[str, nn.Module], teacher: tuple[nn.ModuleDict, nn.ModuleDict] | None,
                 teacher_ngf: int, teacher_init: dict | None = None,
                 classifiers: dict[str, list[nn.Module]] | None = None,
                 classifier: ClassifierConfig = ClassifierConfig(), train_teacher_d: bool = False):
        self.family, self.device, self.train_cfg, self.distill = family, device, train, distill
        family.reset_state()
        self.kind = train.gan_loss
        self.epochs = distill.epochs_const + distill.epochs_decay
        self.epoch = self.iteration = 0
        self.precision = Precision(train.amp, device)
        self.mode = mode
        self.needs_second_batch = mode.needs_second_batch
        self.classifiers, self.classifier_cfg = classifiers or {}, classifier

        if teacher is None:
            self.t_gens, self.t_discs = build_pair(family, teacher_ngf, train, device)
            init = teacher_init or {}
            if init.get("gens") is not None:
                self.t_gens.load_state_dict(init["gens"])
            if init.get("discs") is not None:
                self.t_discs.load_state_dict(init["discs"])
        else:
            self.t_gens, self.t_discs = teacher
        names = family.generator_names
        self.s_gens = nn.ModuleDict({n: prepare_module(student[n], train, device) for n in names})
        self.s_discs = nn.ModuleDict({n: student_discriminator(family, n, mode, train, device) for n in names}
                                     if mode.has_discriminator else {})
        self._build_distillation_points()
        mode.attach(self)
        self._build_optimisers()
        self.teacher_update = GANUpdate(family, self.kind, self.t_gens, self.t_discs, self.opt_tg, self.opt_td,
                                        self.precision)
        self.train_teacher_d = train_teacher_d and distill.teacher == "frozen"
        if distill.teacher == "frozen":
            # Training mode like the student (batch statistics, the same dropout), but nothing of
            # the teacher moves: its forwards keep the running statistics (running_stats_kept).
            self.t_gens.train().requires_grad_(False)
            self.t_discs.train(self.train_teacher_d)
        self.grad_norms: dict[str, torch.Tensor] = {}
        # (content weight, texture weight) chosen at the first iteration under distill.balance: task
        self.balanced: tuple[float, float] | None = None
        self._rng_devices = [device] if device.type == "cuda" else []

    def _build_distillation_points(self) -> None:
        """Generator taps with 1x1 adapters, and teacher-D taps at ``distill.d_layers``."""
        self.adapters = nn.ModuleDict()
        self.s_taps, self.t_taps, self.dt_taps = {}, {}, {}
        for n in self.family.generator_names:
            example = self.family.example_input(n, 1, self.device)
            s_points, t_points = self.s_gens[n].distill_points(), self.t_gens[n].distill_points()
            self.adapters[n] = Adapters(tap_channels(self.s_gens[n], s_points, example),
                                        tap_channels(self.t_gens[n], t_points, example)).to(self.device)
            # keep_first: the task loss may run a generator again (CycleGAN's cycle); the taps
            # keep the main pass on ``inputs``, and step() resets them.
            self.s_taps[n] = FeatureTap(s_points, keep_first=True)
            self.t_taps[n] = FeatureTap(t_points, keep_first=True)
            self.dt_taps[n] = FeatureTap(d_layer_points(self.t_discs[n], self.distill.d_layers, self.family.name))

    def _build_optimisers(self) -> None:
        t, dev = self.train_cfg, self.device
        betas = (t.beta1, t.beta2)
        self.opt_tg = make_adam(self.t_gens.parameters(), t.lr_g, betas, dev)
        self.opt_td = make_adam(self.t_discs.parameters(), t.lr_d, betas, dev)
        self.opt_sg = make_adam(list(self.s_gens.parameters()) + list(self.adapters.parameters()), t.lr_g, betas, dev)
        held = {id(p) for p in self.mode.frozen_parameters()}
        d_weights = [p for p in self.s_discs.parameters() if id(p) not in held] + self.mode.extra_d_parameters()
        self.opt_sd = make_adam(d_weights, t.lr_d, betas, dev) if self.mode.has_discriminator else None

    # --- schedule ------------------------------------------------------------------------
    def plan(self, iterations: int, per_epoch: int) -> None:
        """Stage 3's length, for the mode's own schedules (alpha's learning rate)."""
        self.mode.plan(iterations, per_epoch)

    def set_epoch(self, epoch: int) -> None:
        d, t = self.distill, self.train_cfg
        self.epoch = epoch
        f = distill_lr_factor(d, epoch)
        for opt, base in ((self.opt_tg, t.lr_g), (self.opt_td, t.lr_d), (self.opt_sg, t.lr_g), (self.opt_sd, t.lr_d)):
            set_lr(opt, base * f)
        self.mode.set_epoch(epoch, self.epochs)

    # --- one iteration -------------------------------------------------------------------
    def step(self, batch: dict, batch2: dict | None) -> dict:
        inputs = self.family.generator_inputs(batch)
        for tap in list(self.s_taps.values()) + list(self.t_taps.values()):
            tap.reset()
        logs = {}
        # The student's forward below draws the random numbers the teacher's drew (dropout).
        with torch.random.fork_rng(devices=self._rng_devices):
            t_fakes, t_feats = self._teacher_phase(batch, inputs, logs)
        with self.precision.autocast():
            s_fakes = {n: self.s_gens[n](inputs[n]) for n in self.family.generator_names}
        if self.opt_sd is not None:
            self._student_d_phase(batch, inputs, s_fakes, logs)
        self._student_g_phase(batch, inputs, s_fakes, t_fakes, t_feats, logs)
        logs.update(self.mode.extra_step(self, batch2))
        self.precision.update()
        self.iteration += 1
        return logs

    def _teacher_phase(self, batch: dict, inputs: dict, logs: dict) -> tuple[dict, dict]:
        """1. D_T then G_T (or a frozen forward); the teacher's generator taps fill here."""
        names = self.family.generator_names
        if self.distill.teacher == "frozen":
            with torch.no_grad(), running_stats_kept(self.t_gens), self.precision.autocast():
                t_fakes = {n: self.t_gens[n](inputs[n]) for n in names}
            if self.train_teacher_d:
                self.opt_td.zero_grad(set_to_none=True)
                with self.precision.autocast():
                    d_total, _ = self.teacher_update.d_loss(self.t_discs, inputs, t_fakes, batch)
                self.precision.backward(d_total)
                self.precision.step(self.opt_td)
                logs["T_D"] = d_total.detach()
        else:
            t_fakes, t_logs = self.teacher_update.step(batch, inputs)
            logs.update({f"T_{k}": v for k, v in t_logs.items()})
        t_feats = {n: [f.detach() for f in self.t_taps[n].outputs] for n in names}
        return {n: f.detach() for n, f in t_fakes.items()}, t_feats

    def _student_d_phase(self, batch: dict, inputs: dict, s_fakes: dict, logs: dict) -> None:
        """2. D_S's weights (the mode's own parameters, e.g. alpha, stay frozen)."""
        self.opt_sd.zero_grad(set_to_none=True)
        with self.precision.autocast():
            d_total, _ = self.teacher_update.d_loss(self.s_discs, inputs, s_fakes, batch, role="S",
                                                    extra=self.mode.d_loss_extra())
        self.precision.backward(d_total)
        self.precision.step(self.opt_sd)
        logs["S_D"] = d_total.detach()
        logs.update(self.mode.after_d_step(self, inputs, s_fakes))

    def _student_g_phase(self, batch: dict, inputs: dict, s_fakes: dict, t_fakes: dict, t_feats: dict,
                         logs: dict) -> None:
        """3. G_S: adversarial (vs D_S) + task + distillation from G_T's and D_T's features."""
        fam = self.family
        self.opt_sg.zero_grad(set_to_none=True)
        with frozen(self.s_discs, self.t_discs), self.precision.autocast():
            adv = (self.teacher_update.g_adv(self.s_discs, inputs, s_fakes) if self.opt_sd is not None
                   else torch.zeros((), device=self.device))
            task = fam.task_loss(self.s_gens, inputs, s_fakes, batch)
            content = texture = d_content = d_texture = torch.zeros((), device=self.device)
            for n in fam.generator_names:
                c, t = distill_terms(self.adapters[n](list(self.s_taps[n].outputs)), t_feats[n])
                dc, dt = self._d_feature_terms(n, inputs, s_fakes[n], t_fakes[n])
                content, texture, d_content, d_texture = content + c, texture + t, d_content + dc, d_texture + dt
            w_m, w_t = self._term_weights(adv, task, content + d_content, texture + d_texture)
            terms = {"adv": adv, "task": task, "content": w_m * content, "texture": w_t * texture,
                     "d_content": w_m * d_content, "d_texture": w_t * d_texture}
            if self.classifiers:
                c = self.classifier_cfg
                guide = sum(classifier_guidance(self.classifiers[n], s_fakes[n].float(), c.mode)
                            for n in self.classifiers)
                terms["classifier"] = c.phi * guide
                logs["S_classifier"] = guide.detach()
            g_total = sum(terms.values())
        if self.iteration % self.train_cfg.log_every == 0:
            self.grad_norms = self._term_grad_norms(terms)
        self.precision.backward(g_total)
        self.precision.step(self.opt_sg)
        logs.update({"S_G_adv": adv.detach(), "S_G_task": task.detach(), "S_content": content.detach(),
                     "S_texture": texture.detach(), "S_d_content": d_content.detach(),
                     "S_d_texture": d_texture.detach()})

    def _student_params(self) -> list[torch.Tensor]:
        return [p for p in self.s_gens.parameters() if p.requires_grad]

    def _term_grad_norms(self, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each weighted term's gradient norm on the student generators' parameters (not the
        adapters'): what each term asks of the student, to weigh it against the task loss."""
        return {f"grad_{k}": v for k, v in gradient_norms(terms, self._student_params()).items()}

    def _term_weights(self, adv: torch.Tensor, task: torch.Tensor, content: torch.Tensor,
                      texture: torch.Tensor) -> tuple[float, float]:
        """The content and texture weights: gamma_m and gamma_t, or (``balance: task``) the weights
        that make the content and the texture terms' gradient norms gamma_m and gamma_t times the
        task loss's, chosen once, at the first iteration, from the unweighted terms given here."""
        d = self.distill
        if d.balance == "off":
            return d.gamma_m, d.gamma_t
        if self.balanced is None:
            norms = gradient_norms({"adv": adv, "task": task, "content": content, "texture": texture},
                                   self._student_params())
            # every rank must weigh alike: the mean of the ranks' norms
            g_adv, g_task, g_content, g_texture = (float(v) for v in distributed.all_reduce_mean(
                torch.stack([norms[k] for k in ("adv", "task", "content", "texture")])))
            reference = g_task if g_task > 0 else g_adv
            self.balanced = (d.gamma_m * reference / g_content if g_content > 0 else d.gamma_m,
                             d.gamma_t * reference / g_texture if g_texture > 0 else d.gamma_t)
        return self.balanced

    def _d_feature_terms(self, name: str, inputs: dict, s_fake: torch.Tensor,
                         t_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Content and texture terms between D_T's features of G_S's and G_T's outputs.

        Both forwards of D_T measure, so its running statistics stay as its own step left them;
        the gradient reaches G_S through the second.
        """
        fam, d = self.family, self.t_discs[name]
        with running_stats_kept(d):
            with torch.no_grad():
                d(fam.d_input(name, inputs, t_fake))
            teacher = list(self.dt_taps[name].outputs)
            d(fam.d_input(name, inputs, s_fake))
        return distill_terms(list(self.dt_taps[name].outputs), teacher)

    # --- reporting and state ---------------------------------------------------------------
    def log_extras(self) -> dict:
        """The mode's diagnostics (e.g. the active-channel fraction of every masked layer) and the
        latest gradient norm of each term of the student's loss."""
        weights = ({"w_content": torch.tensor(self.balanced[0]), "w_texture": torch.tensor(self.balanced[1])}
                   if self.balanced is not None else {})
        return {**self.mode.log_extras(), **self.grad_norms, **weights}

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
                "adapters": self.adapters.state_dict(), "optimizers": opts, "mode": self.mode.state_dict(),
                "precision": self.precision.state_dict(), "family": self.family.state_dict(),
                "iteration": self.iteration, "balanced": self.balanced}

    def load_state_dict(self, state: dict) -> None:
        self.t_gens.load_state_dict(state["t_gens"])
        self.t_discs.load_state_dict(state["t_discs"])
        self.s_gens.load_state_dict(state["s_gens"])
        self.s_discs.load_state_dict(state["s_discs"])
        self.adapters.load_state_dict(state["adapters"])
        for k, o in self._optimizers().items():
            if o is not None:
                o.load_state_dict(state["optimizers"][k])
        self.mode.load_state_dict(state["mode"])
        self.precision.load_state_dict(state["precision"])
        self.family.load_state_dict(state["family"])
        self.iteration = state["iteration"]
        self.balanced = state.get("balanced")  # absent in checkpoints of earlier versions

    def outputs(self) -> dict:
        return {"t_gens": self.t_gens.state_dict(), "s_gens": self.s_gens.state_dict()}

    def _optimizers(self) -> dict:
        return {"tg": self.opt_tg, "td": self.opt_td, "sg": self.opt_sg, "sd": self.opt_sd}

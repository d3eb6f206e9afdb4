"""The recipe's sections: typed, frozen dataclasses.

Every section of a recipe is a dataclass here; the ``model`` section is the family's own
dataclass (declared in its module with :mod:`.schema`). Reading a file, applying ``--set``
overrides and picking the family's ``model`` section happen in :mod:`gancompress.families.recipe`; this module knows
no family. Relative paths in a recipe are taken relative to the working directory the command
runs in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from .schema import bounded, to_plain

#: Upper bounds that catch typing slips (an epoch count of 10^30) before anything is built.
MAX_EPOCHS = 100_000
MAX_WORKERS = 128
MAX_SEED = 2**32 - 1
MAX_GMACS = 1e6
#: The TorchScript-based ONNX exporter's newest opset (torch.onnx._constants).
MAX_OPSET = 20


@dataclass(frozen=True)
class Budget:
    """A pruning budget: ``kind`` 'gmacs' (``value`` GMACs) or 'ratio' (``value`` of the teacher's MACs).

    Written in a recipe as a number of GMACs (``3.0``) or a percentage string (``"25%"``).
    """

    kind: Literal["gmacs", "ratio"]
    value: float

    DESCRIPTION = "GMACs (a number) or a percentage like '25%'"

    @classmethod
    def from_raw(cls, raw: Any) -> "Budget":
        """Parse ``3.0`` or ``"25%"``; ValueError says what is wrong."""
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError(f"expected {cls.DESCRIPTION}, got {raw!r}")
        if isinstance(raw, str):
            text = raw.strip()
            if text.endswith("%"):
                try:
                    ratio = float(text[:-1]) / 100.0
                except ValueError:
                    raise ValueError(f"expected a percentage like '25%', got {raw!r}") from None
                if not 0.0 < ratio <= 1.0:
                    raise ValueError(f"a ratio budget must lie in (0%, 100%], got {raw!r}")
                return cls("ratio", ratio)
            try:
                raw = float(text)
            except ValueError:
                raise ValueError(f"expected {cls.DESCRIPTION}, got {raw!r}") from None
        try:
            value = float(raw)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value) or not 0 < value <= MAX_GMACS:
            raise ValueError(f"a GMACs budget must be a positive number below {MAX_GMACS:g}, got {raw!r}")
        return cls("gmacs", value)

    def to_raw(self) -> float | str:
        return self.value if self.kind == "gmacs" else f"{self.value * 100:g}%"

    def macs(self, teacher_macs: int) -> int:
        """The budget in MACs; a ratio is taken of ``teacher_macs``."""
        return int(round(self.value * 1e9)) if self.kind == "gmacs" else int(round(self.value * teacher_macs))

    def __str__(self) -> str:
        return f"{self.value:g} GMACs" if self.kind == "gmacs" else f"{self.value:.0%} of the teacher"


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how a batch is made. Family-specific keys are ignored by others.

    ``num_workers``: DataLoader worker processes per training process; None (the default) chooses
    them from the cores available (:func:`gancompress.system.threads.data_workers`): on the CPU 0 up to 4
    cores per process (workers would compete with the training threads), else ``min(4, cores // 4)``;
    on CUDA ``min(8, cores - 1)``. An explicit count is kept. Workers run one thread each.
    """

    root: str = ""
    train_split: str = "train"
    eval_split: str = "val"
    direction: Literal["AtoB", "BtoA"] = "AtoB"
    load_size: int = field(default=286, metadata=bounded(1))
    crop_size: int = field(default=256, metadata=bounded(1))
    center_crop: int = field(default=0, metadata=bounded(0))
    flip: bool = True
    pairing: Literal["random", "serial"] = "random"
    batch_size: int = field(default=1, metadata=bounded(1))
    eval_batch_size: int = field(default=1, metadata=bounded(1))
    num_workers: int | None = field(default=None, metadata=bounded(0, MAX_WORKERS))  # None: automatic
    max_items: int = field(default=0, metadata=bounded(0))
    on_bad_image: Literal["error", "skip"] = "error"


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and loop settings shared by every training stage."""

    pretrain_epochs: int = field(default=0, metadata=bounded(0, MAX_EPOCHS))
    lr_g: float = field(default=2e-4, metadata=bounded(0, lo_open=True))
    lr_d: float = field(default=2e-4, metadata=bounded(0, lo_open=True))
    beta1: float = field(default=0.5, metadata=bounded(0, 1))
    beta2: float = field(default=0.999, metadata=bounded(0, 1))
    gan_loss: Literal["hinge", "lsgan", "vanilla"] = "hinge"
    log_every: int = field(default=50, metadata=bounded(1))
    checkpoint_every: int = field(default=500, metadata=bounded(1))
    keep_checkpoints: int = field(default=3, metadata=bounded(1))
    samples_per_epoch: bool = True
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = True
    sync_bn: bool = False  # SyncBatchNorm across torchrun's processes (CUDA only)


@dataclass(frozen=True)
class SparseConfig:
    """Stage 1: the sparse model trained with an L1 penalty (METHOD 1.1)."""

    method: Literal["slimming", "l1"] = "slimming"
    l1_lambda: float | None = field(default=None, metadata=bounded(0))
    epochs: int | None = field(default=None, metadata=bounded(1, MAX_EPOCHS))


@dataclass(frozen=True)
class PruneConfig:
    """Stage 2: prune to a MACs budget (METHOD 1.2).

    ``budget`` is a number of GMACs (``3.0``), a ratio of the teacher's MACs written as a
    percentage string (``"25%"``), or a mapping from generator name to either, for families with
    several generators (``{AtoB: 2.4, BtoA: 2.7}``).
    """

    budget: Budget | dict[str, Budget] = Budget("ratio", 0.5)
    tolerance: float = field(default=0.02, metadata=bounded(0, 1, lo_open=True))
    round_to: int = field(default=1, metadata=bounded(1))
    inherit_weights: bool = False

    def budget_for(self, name: str) -> Budget:
        """The budget of generator ``name`` (one budget for all, or this generator's own)."""
        return self.budget[name] if isinstance(self.budget, dict) else self.budget


@dataclass(frozen=True)
class DistillConfig:
    """Stage 3: online collaborative distillation (METHOD 1.3 and 3)."""

    teacher: Literal["scratch", "continue", "frozen"] = "scratch"
    epochs_const: int = field(default=100, metadata=bounded(0, MAX_EPOCHS))
    epochs_decay: int = field(default=100, metadata=bounded(0, MAX_EPOCHS))
    gamma_m: float = field(default=1.0, metadata=bounded(0))
    gamma_t: float = field(default=1.0, metadata=bounded(0))
    d_layers: tuple[int, ...] = (2, 4)
    # The learning rate of stage 3's four optimisers over the epochs (optim.schedule_factor):
    # 'linear' (pix2pix): constant for epochs_const, then linearly to 0 over epochs_decay;
    # 'step' (GCC's SRGAN, torch's StepLR): x lr_step_factor every lr_step_every epochs
    # (0: every epochs_const epochs, so 15 + 15 gives 1e-4 then 1e-5).
    lr_schedule: Literal["linear", "step"] = "linear"
    lr_step_every: int = field(default=0, metadata=bounded(0, MAX_EPOCHS))
    lr_step_factor: float = field(default=0.1, metadata=bounded(0, 1, lo_open=True))
    # Generator-only pre-training of the pruned student on the family's pretrain loss (SRGAN's
    # pixel MSE) before stage 3, as GCC starts its SRGAN student from an MSE-trained model of
    # the pruned architecture (the pipeline's 'pretrain_P' stage). 0: none.
    student_pretrain_epochs: int = field(default=0, metadata=bounded(0, MAX_EPOCHS))

    def validate(self) -> str | None:
        if len(set(self.d_layers)) != len(self.d_layers) or any(i < 1 for i in self.d_layers):
            return f"d_layers: expected distinct 1-based layer numbers, got {list(self.d_layers)}"
        return None


@dataclass(frozen=True)
class DMDConfig:
    """DMD's dynamic mask (METHOD 5). The appendix leaves these open; the defaults are ours."""

    placement: Literal["feature", "input", "head"] = "feature"
    layer: int = field(default=2, metadata=bounded(1))              # d, 1-based among D's mask points
    mask_ratio: float = field(default=0.3, metadata=bounded(0, 1))  # fraction of mask elements zeroed
    # lambda: mask on while R_t > lambda. An element mask keeping a share k of evenly spread
    # features gives R_t ~ sqrt(k) (0.84 for the default ratio), so lambda sits there: the mask goes
    # on when the dropped elements carried less than their share of D's feature energy.
    threshold: float = field(default=0.84, metadata=bounded(-1, 1))
    samples: int = field(default=8, metadata=bounded(1))            # m held samples R_t is measured on
    interval: int = field(default=100, metadata=bounded(1))         # n_s iterations between checks
    heads: int = field(default=4, metadata=bounded(2))              # k logits for placement 'head'
    # What R_t compares. 'features' (the appendix): layer d's features with and without the mask;
    # for an element mask that is ~sqrt(1 - mask_ratio) whatever D has learned. 'output': D's
    # logits with and without the mask, the masked features carried through the rest of D.
    measure: Literal["features", "output"] = "features"
    # When the mask goes on. 'retardation' (the appendix): while R_t > threshold. 'random' (a
    # control): on with probability random_on_rate at each check, drawn from the DMD's own
    # checkpointed generator; R_t is still measured and logged.
    schedule: Literal["retardation", "random"] = "retardation"
    random_on_rate: float = field(default=0.3, metadata=bounded(0, 1))


@dataclass(frozen=True)
class GLeaDConfig:
    """GLeaD's generator-leading reconstruction task for the student's D (METHOD 6)."""

    weight: float = field(default=1.0, metadata=bounded(0))  # the appendix gives none; 1 weighs it like D's loss
    distance: Literal["pixel", "perceptual"] = "pixel"      # perceptual: VGG19 features (eval.vgg19_weights)
    width: int = field(default=64, metadata=bounded(1))      # channels of the decoder's 1x1 convs


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The student's discriminator (METHOD 2; DMD and GLeaD from METHOD 5-6)."""

    mode: str = "selective"  # a name in discriminators.modes.MODES (checked when the recipe is read)
    tau: float = field(default=0.5, metadata=bounded(0, 1))
    # 'auto': GCC's 1e-4, raised where stage 3 is too short for a factor to travel from alpha_init
    # to tau within alpha_reach of its iterations (method.coordination.alpha_learning_rate).
    alpha_lr: float | Literal["auto"] = field(default="auto", metadata=bounded(0, lo_open=True))
    alpha_init: float = field(default=1.0, metadata=bounded(0, 1))
    alpha_reach: float = field(default=0.1, metadata=bounded(0, 1, lo_open=True))
    alpha_decay_epochs: int = field(default=100, metadata=bounded(1, MAX_EPOCHS))
    alpha_decay: float = field(default=0.1, metadata=bounded(0, 1))
    # Adam's betas for alpha: torch's defaults, as the official GCC code uses (not train.beta1/2,
    # which are 0 and 0.9 for SAGAN).
    alpha_betas: tuple[float, ...] = (0.9, 0.999)
    global_coordination: bool = True
    local_weight: float | None = field(default=None, metadata=bounded(0))
    dmd: DMDConfig = DMDConfig()
    glead: GLeaDConfig = GLeaDConfig()

    def validate(self) -> str | None:
        if len(self.alpha_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.alpha_betas):
            return f"alpha_betas: expected two numbers in [0, 1), got {list(self.alpha_betas)}"
        if self.alpha_init <= self.tau:
            return (f"alpha_init: {self.alpha_init:g} is not above tau {self.tau:g}, so every channel would start "
                    "switched off; set alpha_init above tau")
        return None


@dataclass(frozen=True)
class ClassifierConfig:
    """Classifier-guided student loss (METHOD 6): ``phi * sum_c L_fool(C(G_S(x)))``.

    ``paths`` are real-vs-generated classifiers made by gancompress train-detector; 'fool-all' uses
    every one, 'memoryless' only the last (the latest round). No paths: the term is off.
    """

    paths: tuple[str, ...] = ()
    mode: Literal["fool-all", "memoryless"] = "fool-all"
    phi: float = field(default=0.001, metadata=bounded(0))


@dataclass(frozen=True)
class PretrainedConfig:
    """A model the user already has (README: "Compress a model you already have").

    ``generators`` maps each generator name to a file: a gancompress generator file, a state dict
    of our nets, or a pytorch-CycleGAN-and-pix2pix ``unet_*``/``resnet_*`` generator
    (``latest_net_G.pth``; CycleGAN: AtoB = ``latest_net_G_A.pth``, BtoA = ``latest_net_G_B.pth``).
    ``discriminators`` optionally does the same for their discriminators (``latest_net_D*.pth``).
    ``sparse`` is the route: 'finetune' runs stage 1 from the pretrained weights for
    ``sparse.epochs`` (usually a few) with the L1 penalty; 'skip' prunes the pretrained weights by
    their own scale/L1 statistics directly; 'scratch' trains a fresh sparse model of width
    ``model.ngf_student`` (narrower than the teacher, GCC's setting) in stage 1. Each way stage 3
    distils from the pretrained teacher, frozen or trained on (``distill.teacher``).
    """

    generators: dict[str, str] | None = None
    discriminators: dict[str, str] | None = None
    sparse: Literal["finetune", "skip", "scratch"] = "finetune"


@dataclass(frozen=True)
class ExportConfig:
    """What the export stage writes into ``export/``: TorchScript and ONNX (needs the onnx extra;
    skipped with a warning when onnx or onnxruntime is not installed)."""

    torchscript: bool = True
    onnx: bool = True
    opset: int = field(default=17, metadata=bounded(17, MAX_OPSET))


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation after export: metric files the user provides, and how much to measure."""

    max_images: int = field(default=0, metadata=bounded(0))
    inception_weights: str = ""   # pt_inception-2015-12-05-6726825d.pth, for FID/KID
    fid_extractor: str = ""       # a demo feature net (features.pt) or a TorchScript extractor (needs trust)
    # Loading a TorchScript file runs its code: allowed only when the recipe says the files named in
    # eval.segmenter / eval.fid_extractor are trusted. Whether a file is TorchScript is never guessed.
    trust_torchscript: bool = False
    segmenter: str = ""           # DRN-D-105 (drn-d-105_ms_cityscapes.pth) or our own smp segmenter, for mIoU
    vgg19_weights: str = ""       # torchvision's vgg19-dcbb9e9d.pth, for SRGAN's content loss
    latency: bool = True
    latency_iters: int = field(default=20, metadata=bounded(1))


@dataclass(frozen=True)
class BaselinesConfig:
    """``gancompress baselines``: the protocol that measures whether the distillation pays.

    One teacher per recipe is trained once (``teacher_epochs`` epochs of the family's GAN and task
    losses at ``model.ngf_teacher``, after ``train.pretrain_epochs`` of pre-training), cached, and
    taught from by every row of every seed; stages 1-2 run once from it. ``--quick`` runs every
    row on ``quick_seeds`` seeds with every stage ``quick_length`` as long, to check the machinery.
    """

    seeds: int = field(default=5, metadata=bounded(1, 100))
    quick_seeds: int = field(default=2, metadata=bounded(1, 100))
    quick_length: float = field(default=0.25, metadata=bounded(0, 1, lo_open=True))
    teacher_epochs: int | None = field(default=None, metadata=bounded(1, MAX_EPOCHS))  # None: twice stage 3's
    bootstrap_resamples: int = field(default=10_000, metadata=bounded(100, 1_000_000))


@dataclass(frozen=True)
class Recipe:
    """A whole recipe. ``model`` holds the family's own dataclass (see ``families``)."""

    name: str
    family: str
    model: Any
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    sparse: SparseConfig = SparseConfig()
    prune: PruneConfig = PruneConfig()
    distill: DistillConfig = DistillConfig()
    discriminator: DiscriminatorConfig = DiscriminatorConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    pretrained: PretrainedConfig = PretrainedConfig()
    export: ExportConfig = ExportConfig()
    eval: EvalConfig = EvalConfig()
    baselines: BaselinesConfig = BaselinesConfig()
    seed: int = field(default=0, metadata=bounded(0, MAX_SEED))
    output_dir: str = "runs"

    @property
    def distill_epochs(self) -> int:
        return self.distill.epochs_const + self.distill.epochs_decay

    @property
    def teacher_epochs(self) -> int:
        """The baselines' shared teacher's GAN epochs: the recipe's value, else twice stage 3's."""
        return self.baselines.teacher_epochs or 2 * self.distill_epochs

    @property
    def sparse_epochs(self) -> int:
        """Stage 1 length: the recipe's value, else a tenth of stage 3 (GCC Algorithm 1)."""
        if self.sparse.epochs is not None:
            return self.sparse.epochs
        return max(1, self.distill_epochs // 10)

    @property
    def route(self) -> str:
        """How the run gets its teacher and sparse model: 'scratch', 'pretrained-finetune',
        'pretrained-prune' or 'pretrained-scratch'."""
        if not self.pretrained.generators:
            return "scratch"
        return {"finetune": "pretrained-finetune", "skip": "pretrained-prune",
                "scratch": "pretrained-scratch"}[self.pretrained.sparse]

    @property
    def teacher_ngf(self) -> int:
        """The width of stage 3's teacher: the stage-1 model's when the teacher continues it (route
        'scratch' with ``distill.teacher`` frozen or continue), else ``model.ngf_teacher``."""
        if self.route == "scratch" and self.distill.teacher != "scratch":
            return self.model.ngf_student
        return self.model.ngf_teacher

    @property
    def l1_lambda(self) -> float:
        if self.sparse.l1_lambda is not None:
            return self.sparse.l1_lambda
        return 1e-2 if self.sparse.method == "slimming" else 1e-3


def recipe_to_dict(recipe: Recipe) -> dict:
    """The resolved recipe as plain YAML-able data (tuples become lists, budgets their raw form)."""
    return to_plain(recipe)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)

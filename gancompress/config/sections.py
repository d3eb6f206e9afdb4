"""The recipe's sections: typed, frozen dataclasses.

Every section of a recipe is a dataclass here, every key declared with
:func:`~gancompress.config.schema.setting`: its default, its one-line meaning and its range, the
one source of the generated recipe reference (docs/reference/recipe.md). The ``model`` section is
the family's own dataclass (declared in its module the same way). Reading a file, applying
``--set`` overrides and picking the family's ``model`` section happen in
:mod:`gancompress.families.recipe`; this module knows no family. Relative paths in a recipe are
taken relative to the working directory the command runs in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import yaml

from .budget import Budget, RuntimeName
from .schema import setting, to_plain

#: Upper bounds that catch typing slips (an epoch count of 10^30) before anything is built.
MAX_EPOCHS = 100_000
MAX_WORKERS = 128
MAX_SEED = 2**32 - 1
#: The TorchScript-based ONNX exporter's newest opset (torch.onnx._constants).
MAX_OPSET = 20


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how a batch is made (each family's folder layout: docs/datasets.md).
    A key another family has no use for is ignored by it."""

    root: str = setting("", "the dataset folder, in the family's layout (relative to the working directory)")
    train_split: str = setting("train", "the sub-folder of data.root trained on (sagan: '' reads data.root "
                               "itself; cyclegan reads <split>A and <split>B)")
    eval_split: str = setting("val", "the sub-folder of data.root evaluated on, as data.train_split")
    direction: Literal["AtoB", "BtoA"] = setting("AtoB", "aligned pairs (pix2pix): AtoB takes the left half "
                                                 "as the input, BtoA the right half")
    load_size: int = setting(286, "pix2pix, cyclegan: training images are resized to this side, then "
                             "cropped at random to data.crop_size", lo=1)
    crop_size: int = setting(256, "pix2pix, cyclegan: side of the training crops and of the evaluation "
                             "images", lo=1)
    center_crop: int = setting(0, "sagan: side of the centre crop taken before resizing (0: the whole "
                               "image)", lo=0)
    flip: bool = setting(True, "random horizontal flips while training")
    pairing: Literal["random", "serial"] = setting("random", "cyclegan: the B image paired with an A image, "
                                                   "at random or the one of the same index")
    batch_size: int = setting(1, "images per training batch and process (torchrun: the global batch is N "
                              "times larger)", lo=1)
    eval_batch_size: int = setting(1, "images per batch when evaluating", lo=1)
    num_workers: int | None = setting(None, "DataLoader worker processes per training process, one thread "
                                      "each; null: chosen from the cores (docs/performance.md)",
                                      lo=0, hi=MAX_WORKERS)
    max_items: int = setting(0, "use only the first N image files of each folder (0: all)", lo=0)
    on_bad_image: Literal["error", "skip"] = setting("error", "an unreadable or unusable image: error stops "
                                                     "naming the file, skip leaves it out and counts it")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and loop settings shared by every training stage."""

    pretrain_epochs: int = setting(0, "epochs of generator-only pre-training on the family's pretrain loss "
                                   "(SRGAN: pixel MSE) before a generator's GAN training; 0: none",
                                   lo=0, hi=MAX_EPOCHS)
    lr_g: float = setting(2e-4, "Adam learning rate of the generators", lo=0, lo_open=True)
    lr_d: float = setting(2e-4, "Adam learning rate of the discriminators", lo=0, lo_open=True)
    beta1: float = setting(0.5, "Adam's beta1, generators and discriminators", lo=0, hi=1)
    beta2: float = setting(0.999, "Adam's beta2, generators and discriminators", lo=0, hi=1)
    gan_loss: Literal["hinge", "lsgan", "vanilla"] = setting("hinge", "the adversarial loss")
    log_every: int = setting(50, "iterations between loss records in metrics.jsonl (the only wait on the "
                             "device)", lo=1)
    checkpoint_every: int = setting(500, "iterations between checkpoints (one more at each stage's end)", lo=1)
    keep_checkpoints: int = setting(3, "checkpoints kept per stage, the newest", lo=1)
    samples_per_epoch: bool = setting(True, "write a sample grid (input | teacher | student | target) into "
                                      "samples/ every epoch")
    amp: Literal["auto", "off", "bf16", "fp16"] = setting("auto", "mixed precision: auto is bf16 on a GPU that "
                                                          "has it, else off (fp32); fp16 uses a grad scaler")
    channels_last: bool = setting(False, "train in the channels_last memory format (faster convs on tensor "
                                  "cores)")
    compile: bool = setting(False, "torch.compile the nets before training")
    cudnn_benchmark: bool = setting(True, "let cuDNN pick the fastest conv algorithms for the input shapes")
    sync_bn: bool = setting(False, "SyncBatchNorm across torchrun's processes (CUDA only; no effect with one "
                            "process)")


@dataclass(frozen=True)
class SparseConfig:
    """Stage 1: the sparse model trained with an L1 penalty (METHOD 1.1)."""

    method: Literal["slimming", "l1"] = setting("slimming", "what the L1 penalty acts on: slimming the norm "
                                                "layers' scales, l1 the conv filters' weights")
    l1_lambda: float | None = setting(None, "the penalty's weight; null: 1e-2 for slimming, 1e-3 for l1", lo=0)
    epochs: int | None = setting(None, "stage-1 epochs; null: a tenth of stage 3's (GCC Algorithm 1)",
                                 lo=1, hi=MAX_EPOCHS)


@dataclass(frozen=True)
class PruneConfig:
    """Stage 2: prune to a MACs or latency budget (METHOD 1.2).

    ``budget`` is a number of GMACs (``3.0``), a ratio of the teacher's MACs written as a
    percentage string (``"25%"``), a latency target (``"6ms@onnxruntime:b1"``: the pruned
    generator's median latency on that runtime at that batch, measured on this machine), or a
    mapping from generator name to any of these, for families with several generators
    (``{AtoB: 2.4, BtoA: 2.7}``). A latency budget is met within ``latency_tolerance``, not
    ``tolerance``: timings carry a few per cent of noise, which a 2 % band would mistake for a miss.
    """

    budget: Budget | dict[str, Budget] = setting(Budget("ratio", 0.5), "how small the student must be: GMACs "
                                                 "(3.0, complete count), a share of the teacher's MACs ('25%'), a "
                                                 "latency target ('6ms@onnxruntime:b1': ms on a runtime at a batch), "
                                                 "or one per generator ({AtoB: 2.4, BtoA: 2.7})")
    tolerance: float = setting(0.02, "accepted relative distance of the pruned MACs from the budget",
                               lo=0, hi=1, lo_open=True)
    latency_tolerance: float = setting(0.1, "accepted relative distance of the pruned generator's measured latency "
                                       "from a latency budget", lo=0, hi=1, lo_open=True)
    latency_max_time: float = setting(0.5, "seconds one latency measurement of a candidate may take at most "
                                      "(it stops earlier once stable)", lo=0, hi=60, lo_open=True)
    round_to: int = setting(1, "keep every pruned width a multiple of this (8 suits tensor cores)", lo=1)
    inherit_weights: bool = setting(False, "start the student from the pruned weights (GCC re-initialises it)")

    def budget_for(self, name: str) -> Budget:
        """The budget of generator ``name`` (one budget for all, or this generator's own)."""
        return self.budget[name] if isinstance(self.budget, dict) else self.budget


@dataclass(frozen=True)
class DistillConfig:
    """Stage 3: online collaborative distillation (METHOD 1.3 and 3)."""

    teacher: Literal["scratch", "continue", "frozen"] = setting(
        "scratch", "stage 3's teacher: trained from scratch alongside the student (GCC), or the stage-1 / "
        "pretrained model trained on (continue) or frozen")
    epochs_const: int = setting(100, "stage-3 epochs at the initial learning rate", lo=0, hi=MAX_EPOCHS)
    epochs_decay: int = setting(100, "stage-3 epochs after those: the rate decays linearly to 0 (lr_schedule "
                                "linear)", lo=0, hi=MAX_EPOCHS)
    gamma_m: float = setting(1.0, "weight of the content (feature) distillation term", lo=0)
    gamma_t: float = setting(1.0, "weight of the texture (Gram) distillation term", lo=0)
    # The terms' raw scales differ by orders of magnitude between families, widths and data (a Gram
    # matrix of D features against a pixel L1), so fixed weights tuned on one run mislead another.
    balance: Literal["off", "task"] = setting(
        "off", "off: gamma_m and gamma_t weigh the raw terms; task: they are ratios, the content terms' "
        "(G and D features together) and the texture terms' gradient norm on the student to the task "
        "loss's (the adversarial term's where the family has none), measured at stage 3's first "
        "iteration and kept from then on")
    d_layers: tuple[int, ...] = setting((2, 4), "the teacher D's layers (1-based) whose features of the "
                                        "student's output are distilled")
    # 'linear' is pix2pix's schedule; 'step' is GCC's SRGAN (torch's StepLR), so 15 + 15 epochs give
    # 1e-4 then 1e-5 (optim.schedule_factor).
    lr_schedule: Literal["linear", "step"] = setting("linear", "stage 3's learning rate: linear (constant, "
                                                     "then linearly to 0) or step (x lr_step_factor every "
                                                     "lr_step_every epochs)")
    lr_step_every: int = setting(0, "epochs between steps of the step schedule (0: every epochs_const "
                                 "epochs)", lo=0, hi=MAX_EPOCHS)
    lr_step_factor: float = setting(0.1, "the step schedule's factor", lo=0, hi=1, lo_open=True)
    # GCC starts its SRGAN student from an MSE-trained model of the pruned architecture (the
    # pipeline's 'pretrain_P' stage).
    student_pretrain_epochs: int = setting(0, "epochs of generator-only pre-training of the pruned student on "
                                           "the family's pretrain loss before stage 3; 0: none",
                                           lo=0, hi=MAX_EPOCHS)

    def validate(self) -> str | None:
        if len(set(self.d_layers)) != len(self.d_layers) or any(i < 1 for i in self.d_layers):
            return f"d_layers: expected distinct 1-based layer numbers, got {list(self.d_layers)}"
        return None


@dataclass(frozen=True)
class DMDConfig:
    """DMD's dynamic mask (METHOD 5). The appendix leaves these open; the defaults are ours."""

    placement: Literal["feature", "input", "head"] = setting("feature", "where the mask acts: on layer d's "
                                                             "output, on D's input, or on k logits of D's head")
    layer: int = setting(2, "d: the masked layer, 1-based among D's mask points", lo=1)
    mask_ratio: float = setting(0.3, "share of the mask's elements set to 0", lo=0, hi=1)
    # An element mask keeping a share k of evenly spread features gives R_t ~ sqrt(k) (0.84 for
    # the default ratio), so lambda sits there: the mask goes on when the dropped elements carried
    # less than their share of D's feature energy.
    threshold: float = setting(0.84, "lambda: the mask is on while the retardation metric R_t exceeds it",
                               lo=-1, hi=1)
    samples: int = setting(8, "m: the held samples R_t is measured on", lo=1)
    interval: int = setting(100, "n_s: iterations between two measurements of R_t", lo=1)
    heads: int = setting(4, "k: logits of D's widened head (placement head)", lo=2)
    # For an element mask the appendix's R_t is ~sqrt(1 - mask_ratio) whatever D has learned
    # (docs/discriminator_modes.md); 'output' measures where it depends on D.
    measure: Literal["features", "output"] = setting("features", "what R_t compares with and without the "
                                                     "mask: layer d's features (the appendix) or D's output")
    schedule: Literal["retardation", "random"] = setting("retardation", "when the mask goes on: while R_t > "
                                                         "threshold, or at random (a control; R_t still logged)")
    random_on_rate: float = setting(0.3, "schedule random: the probability that the mask is on at a check",
                                    lo=0, hi=1)


@dataclass(frozen=True)
class GLeaDConfig:
    """GLeaD's generator-leading reconstruction task for the student's D (METHOD 6)."""

    weight: float = setting(1.0, "weight of the reconstruction term in D's loss (the appendix gives none; 1 "
                            "weighs it like D's own loss)", lo=0)
    distance: Literal["pixel", "perceptual"] = setting("pixel", "the reconstruction's distance: L1 on pixels, "
                                                       "or on VGG19 relu2_2 features (needs eval.vgg19_weights)")
    width: int = setting(64, "channels of the decoder's 1x1 convs", lo=1)


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The student's discriminator (METHOD 2; DMD and GLeaD from METHOD 5-6)."""

    mode: str = setting("selective", "the student's D in stage 3, a mode of the MODES registry "
                        "(docs/discriminator_modes.md)")
    tau: float = setting(0.5, "retention threshold: a channel whose factor alpha falls below it is off "
                         "(appendix: Pix2Pix 0.5, others 0.1)", lo=0, hi=1)
    alpha_lr: float | Literal["auto"] = setting("auto", "alpha's learning rate; auto: GCC's 1e-4, raised where "
                                                "stage 3 is too short for a factor to reach tau within "
                                                "alpha_reach of its iterations", lo=0, lo_open=True)
    alpha_init: float = setting(1.0, "every retention factor's initial value (1: every channel on)", lo=0, hi=1)
    alpha_reach: float = setting(0.1, "alpha_lr auto: the share of stage 3's iterations in which a factor "
                                 "can travel from alpha_init to tau", lo=0, hi=1, lo_open=True)
    alpha_decay_epochs: int = setting(100, "epochs between the decays of alpha's learning rate", lo=1,
                                      hi=MAX_EPOCHS)
    alpha_decay: float = setting(0.1, "the factor of each decay of alpha's learning rate", lo=0, hi=1)
    # torch's defaults, as the official GCC code uses, not train.beta1/2 (0 and 0.9 for SAGAN).
    alpha_betas: tuple[float, ...] = setting((0.9, 0.999), "Adam's betas of the retention factors")
    global_coordination: bool = setting(True, "include GCC's global term |gap_S - L_target| in alpha's "
                                        "objective (false: the local capacity term only)")
    local_weight: float | None = setting(None, "c, the weight of the local capacity term; null: the family's "
                                         "D-loss weight (1/2 where D's loss is halved)", lo=0)
    dmd: DMDConfig = setting(DMDConfig(), "DMD's dynamic mask (modes dmd, selective+dmd)")
    glead: GLeaDConfig = setting(GLeaDConfig(), "GLeaD's reconstruction task (mode glead)")

    def validate(self) -> str | None:
        if len(self.alpha_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.alpha_betas):
            return f"alpha_betas: expected two numbers in [0, 1), got {list(self.alpha_betas)}"
        if self.alpha_init <= self.tau:
            return (f"alpha_init: {self.alpha_init:g} is not above tau {self.tau:g}, so every channel would start "
                    "switched off; set alpha_init above tau")
        return None


@dataclass(frozen=True)
class ClassifierConfig:
    """Classifier-guided student loss (METHOD 6): ``phi * sum_c L_fool(C(G_S(x)))``."""

    paths: tuple[str, ...] = setting((), "real-vs-generated classifier files from gancompress train-detector; "
                                     "empty: no classifier term")
    mode: Literal["fool-all", "memoryless"] = setting("fool-all", "fool every classifier listed, or only the "
                                                      "last (memoryless)")
    phi: float = setting(0.001, "weight of the fooling term in the student's loss", lo=0)


@dataclass(frozen=True)
class PretrainedConfig:
    """A model the user already has (docs/pipeline.md, "Routes").

    ``generators`` maps each generator name to a file: a gancompress generator file, a state dict
    of our nets, or a pytorch-CycleGAN-and-pix2pix ``unet_*``/``resnet_*`` generator
    (``latest_net_G.pth``; CycleGAN: AtoB = ``latest_net_G_A.pth``, BtoA = ``latest_net_G_B.pth``).
    Each route distils from the pretrained teacher in stage 3, frozen or trained on
    (``distill.teacher``).
    """

    generators: dict[str, str] | None = setting(None, "the trained generators to compress, one file per "
                                                "generator name ({G: latest_net_G.pth}); null: train from "
                                                "scratch")
    discriminators: dict[str, str] | None = setting(None, "their discriminators' files, optional (else stage "
                                                    "1 trains one, or stage 3 from scratch)")
    sparse: Literal["finetune", "skip", "scratch"] = setting(
        "finetune", "the route: finetune the pretrained weights under the L1 penalty in stage 1, skip stage 1 "
        "and prune them as they are, or train a fresh, narrower sparse model (model.ngf_student) taught by them")


@dataclass(frozen=True)
class ExportConfig:
    """What the export stage writes into ``export/``."""

    torchscript: bool = setting(True, "write the student as TorchScript (export/generator.pt)")
    onnx: bool = setting(True, "write the student as ONNX (needs the onnx extra; skipped with a warning "
                         "without it)")
    opset: int = setting(17, "the ONNX opset", lo=17, hi=MAX_OPSET)
    int8_calibration: int = setting(256, "gancompress export RUN_DIR --int8 and benchmark's int8 rows: training "
                                    "inputs the int8 activation ranges are calibrated on, a strided sample of "
                                    "data.train_split", lo=1)
    int8_tolerance: float = setting(0.02, "gancompress export RUN_DIR --int8 refuses an int8 student whose headline "
                                    "metric is worse than the fp32 ONNX student's by more than this fraction "
                                    "(0.02: 2 %)", lo=0.0, hi=1.0)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation after export: metric files the user provides, and how much to measure."""

    max_images: int = setting(0, "evaluate on the first N images only (0: all)", lo=0)
    inception_weights: str = setting("", "torch-fidelity's pt_inception-2015-12-05-6726825d.pth, for FID/KID "
                                     "(docs/datasets.md)")
    fid_extractor: str = setting("", "a demo feature net (features.pt) or a TorchScript extractor for FID/KID "
                                 "instead of Inception")
    # Whether a file is TorchScript is never guessed from its content.
    trust_torchscript: bool = setting(False, "allow TorchScript files in eval.segmenter / eval.fid_extractor "
                                      "(loading one runs its code)")
    segmenter: str = setting("", "the mIoU segmenter: DRN-D-105's drn-d-105_ms_cityscapes.pth (published "
                             "Cityscapes mIoU) or one from gancompress train-segmenter; '': no mIoU")
    vgg19_weights: str = setting("", "torchvision's vgg19-dcbb9e9d.pth (SRGAN's content loss, GLeaD's "
                                 "perceptual distance)")
    latency: bool = setting(True, "measure teacher and student latency")
    latency_iters: int = setting(20, "timed runs per latency measurement on a GPU", lo=1)
    runtimes: tuple[RuntimeName, ...] = setting(("eager", "torchscript"), "the runtimes teacher and student latency is "
                                        "measured on, at batch 1 (eager, torchscript, onnxruntime, openvino)")
    runtime_max_time: float = setting(0.5, "seconds one latency measurement may take at most (it stops when its "
                                      "median is stable)", lo=0, lo_open=True)


@dataclass(frozen=True)
class BaselinesConfig:
    """``gancompress baselines``: the protocol that measures whether the distillation pays.

    One teacher per recipe is trained once (``teacher_epochs`` epochs of the family's GAN and task
    losses at ``model.ngf_teacher``, after ``train.pretrain_epochs`` of pre-training), cached, and
    taught from by every row of every seed; stages 1-2 run once from it. ``--quick`` runs every
    row on ``quick_seeds`` seeds with every stage ``quick_length`` as long, to check the machinery.
    """

    seeds: int = setting(5, "seeds every row runs on", lo=1, hi=100)
    quick_seeds: int = setting(2, "seeds with --quick", lo=1, hi=100)
    quick_length: float = setting(0.25, "--quick: every stage this share of its length", lo=0, hi=1,
                                  lo_open=True)
    teacher_epochs: int | None = setting(None, "GAN epochs of the shared teacher; null: twice stage 3's",
                                         lo=1, hi=MAX_EPOCHS)
    bootstrap_resamples: int = setting(10_000, "bootstrap resamples of the paired differences' 95 % "
                                       "intervals", lo=100, hi=1_000_000)


@dataclass(frozen=True)
class Recipe:
    """A whole recipe. ``model`` holds the family's own dataclass (see ``families``)."""

    name: str = setting(doc="the run's name: 1-100 letters, digits, '.', '_', '-'; the run folder is "
                        "<output_dir>/<name>")
    family: str = setting(doc="the GAN family, a name of the FAMILIES registry (its model section: below)")
    model: Any = setting(doc="the family's own section (its keys: below, per family)")
    data: DataConfig = setting(DataConfig(), "the dataset and its batches")
    train: TrainConfig = setting(TrainConfig(), "optimisers and the training loop, every stage")
    sparse: SparseConfig = setting(SparseConfig(), "stage 1: the sparse model")
    prune: PruneConfig = setting(PruneConfig(), "stage 2: pruning to the budget")
    distill: DistillConfig = setting(DistillConfig(), "stage 3: distillation")
    discriminator: DiscriminatorConfig = setting(DiscriminatorConfig(), "the student's discriminator in stage 3")
    classifier: ClassifierConfig = setting(ClassifierConfig(), "the classifier-guided loss of the student")
    pretrained: PretrainedConfig = setting(PretrainedConfig(), "a trained model to compress instead of "
                                           "training one")
    export: ExportConfig = setting(ExportConfig(), "the export stage")
    eval: EvalConfig = setting(EvalConfig(), "evaluation: evaluator files and what to measure")
    baselines: BaselinesConfig = setting(BaselinesConfig(), "gancompress baselines' protocol")
    seed: int = setting(0, "seeds weights, data order and augmentation", lo=0, hi=MAX_SEED)
    output_dir: str = setting("runs", "the parent folder of run folders")

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

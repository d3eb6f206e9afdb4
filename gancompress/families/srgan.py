"""SRGAN: 4x single-image super-resolution (SRResNet G with sub-pixel upsampling, SRGAN D).

G maps an LR image to its HR version; D judges HR images alone. G's loss is SRGAN's: a content
loss (MSE between VGG19 features of G's output and of the HR image, 'VGG54' = relu5_4 by default,
or plain pixel MSE) plus ``adv_weight`` (1e-3) times the vanilla adversarial loss, through the
base class's ``g_adv_weight``. SRGAN and GCC first pre-train SRResNet on pixel MSE alone
(``train.pretrain_epochs``, :meth:`SRGANFamily.pretrain_loss`).

Pruning goes through the sub-pixel blocks (``gancompress.method.layer_pruners``): dropping channel c of a
:class:`~gancompress.nets.srresnet.SubPixelBlock` drops its conv filters ``4c .. 4c+3``. The
blocks have no norm layer, so only ``sparse.method: l1`` scores (and so narrows) them.

Evaluation: PSNR and SSIM on the Y channel with ``scale`` border pixels cropped, per image then
averaged, for the teacher, the student and the bicubic baseline, on whole images of
``<data.root>/<data.eval_split>``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import setting
from ..data.sr import LAYOUT, SRDataset, bicubic_upscale
from ..metrics.evaldata import Baseline, EvalBatch, EvalData, Reference
from ..metrics.image import to_unit
from ..nets.srresnet import SRDiscriminator, SRResNet
from ..nets.vgg import VGGFeatures, missing_weights_error, vgg19_layer_names
from .base import Family

#: The standard SR test sets (split name -> number of images) published PSNR/SSIM are measured on.
STANDARD_SR_SETS = {"Set5": 5, "Set14": 14, "B100": 100, "BSD100": 100, "Urban100": 100}


@dataclass(frozen=True)
class SRGANModel:
    """The recipe's ``model`` section for srgan (SRGAN's defaults; GCC's D: appendix Table II)."""

    scale: int = setting(4, "upscaling factor, a power of 2", lo=2)
    n_blocks: int = setting(16, "SRResNet's residual blocks", lo=1)
    ngf_teacher: int = setting(64, "the teacher's trunk width", lo=1)
    ngf_student: int = setting(24, "the sparse model's trunk width, which pruning narrows into the student", lo=1)
    ndf: int = setting(64, "width of the discriminator's first block", lo=1)
    d_blocks: int = setting(8, "the discriminator's conv blocks (SRGAN 8, GCC's D 4)", lo=2)
    d_fc: int = setting(1024, "hidden units of the discriminator's head; 0: GCC's head (global average pool, "
                        "one Linear)", lo=0)
    lr_crop: int = setting(24, "side of the LR training crops (HR crops are scale times larger); MACs and the "
                           "budget are counted at this input", lo=1)
    content_loss: Literal["vgg", "mse"] = setting("vgg", "the content loss: MSE of VGG19 features (needs "
                                                  "eval.vgg19_weights) or pixel MSE")
    vgg_layer: str = setting("relu5_4", "the VGG19 layer compared: relu5_4 (SRGAN's VGG54), relu2_2 (VGG22), ...")
    content_weight: float = setting(1.0, "weight of the content loss", lo=0)
    adv_weight: float = setting(1e-3, "weight of the generator's adversarial loss", lo=0)

    def validate(self) -> str | None:
        """A problem with the section (prefixed by 'model.' in the error), or None."""
        if 2 ** round(math.log2(self.scale)) != self.scale:
            return f"scale: must be a power of 2 (2, 4, 8), got {self.scale}"
        names = vgg19_layer_names()
        if self.vgg_layer not in names:
            return f"vgg_layer: unknown VGG19 layer {self.vgg_layer!r} (valid: {', '.join(names)})"
        return None

    @property
    def hr_crop(self) -> int:
        return self.lr_crop * self.scale


class SRGANFamily(Family):
    name = "srgan"
    ModelConfig = SRGANModel
    generator_names = ("G",)
    layout = LAYOUT
    d_loss_weight = 1.0

    def __init__(self, recipe):
        super().__init__(recipe)
        self.g_adv_weight = self.cfg.adv_weight
        self._vgg: VGGFeatures | None = None
        self._datasets: dict[tuple[str, object], SRDataset] = {}

    # --- networks -------------------------------------------------------------------------
    def build_generator(self, name: str, ngf: int) -> nn.Module:
        """SRResNet with PyTorch's default initialisation, as the SRGAN reference code."""
        return SRResNet(self.cfg.scale, ngf, self.cfg.n_blocks)

    def build_discriminator(self, name: str) -> nn.Module:
        c = self.cfg
        return SRDiscriminator(c.ndf, c.d_blocks, c.d_fc, input_size=c.hr_crop)

    def reinit_generator(self, generator: nn.Module) -> nn.Module:
        """Re-draw every layer's parameters with its own default initialisation (GCC re-initialises)."""
        for m in generator.modules():
            if m is not generator and callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
        return generator

    def example_input(self, name: str, batch: int = 1, device="cpu") -> torch.Tensor:
        s = self.cfg.lr_crop
        return torch.zeros(batch, 3, s, s, device=device)

    def custom_pruners(self) -> dict:
        from ..method.layer_pruners import CUSTOM_PRUNERS
        return dict(CUSTOM_PRUNERS)

    # --- data -----------------------------------------------------------------------------
    def dataset(self, split: str, train: bool) -> SRDataset:
        """Fixed-size items (``hr_crop``): random crops when ``train``, else centre crops."""
        key = (split, train)
        if key not in self._datasets:  # screening a folder reads every header: do it once
            d = self.recipe.data
            self._datasets[key] = SRDataset(d.root, split, self.cfg.scale, self.cfg.hr_crop, train, d.flip,
                                            d.max_items, d.on_bad_image)
        return self._datasets[key]

    def eval_dataset(self) -> SRDataset:
        """Whole images of ``data.eval_split`` (cut to a multiple of the scale)."""
        key = (self.recipe.data.eval_split, "whole")
        if key not in self._datasets:
            d = self.recipe.data
            self._datasets[key] = SRDataset(d.root, d.eval_split, self.cfg.scale, 0, False, False,
                                            0, d.on_bad_image)
        return self._datasets[key]

    def check_data(self) -> None:
        """Training and evaluation folders, and the VGG19 weights when the content loss needs them."""
        super().check_data()
        self.eval_dataset()
        if self.cfg.content_loss == "vgg":
            self._content_net(torch.device("cpu"))

    def synthetic_batch(self, batch_size, device):
        lr, hr = self.cfg.lr_crop, self.cfg.hr_crop
        return {"lr": torch.rand(batch_size, 3, lr, lr, device=device) * 2 - 1,
                "hr": torch.rand(batch_size, 3, hr, hr, device=device) * 2 - 1,
                "index": torch.arange(batch_size, device=device)}

    def generator_inputs(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"G": batch["lr"]}

    def real(self, name: str, batch: dict) -> torch.Tensor:
        return batch["hr"]

    # --- losses ---------------------------------------------------------------------------
    def _content_net(self, device: torch.device) -> VGGFeatures:
        """The frozen VGG19 features, loaded once and moved to ``device``."""
        if self._vgg is None:
            path = self.recipe.eval.vgg19_weights
            if not path:
                raise missing_weights_error(path)
            self._vgg = VGGFeatures(path, self.cfg.vgg_layer)
        return self._vgg.to(device)

    def task_loss(self, gens, inputs, fakes, batch):
        """``content_weight`` x content loss: MSE of VGG19 features or of pixels, against the HR image."""
        fake, real = fakes["G"], batch["hr"]
        if self.cfg.content_loss == "vgg":
            vgg = self._content_net(fake.device)
            with torch.no_grad():
                target = vgg(real)
            loss = F.mse_loss(vgg(fake).float(), target.float())
        else:
            loss = F.mse_loss(fake.float(), real.float())
        return self.cfg.content_weight * loss

    def pretrain_loss(self, gens, inputs, fakes, batch):
        """SRResNet pre-training: pixel MSE to the HR image."""
        return F.mse_loss(fakes["G"].float(), batch["hr"].float())

    def visuals(self, batch, inputs, teacher, student):
        """Rows: bicubic upscaling of the LR input | teacher | student | HR."""
        rows = [bicubic_upscale(inputs["G"], self.cfg.scale), teacher["G"]]
        if student is not None:
            rows.append(student["G"])
        return rows + [batch["hr"]]

    # --- evaluation -----------------------------------------------------------------------
    eval_metrics = ("psnr_ssim",)

    def eval_data(self, name: str) -> EvalData:
        """Whole images of ``data.eval_split`` (cut to a multiple of the scale), one at a time;
        ``eval.max_images`` limits how many. Y-channel PSNR/SSIM with ``scale`` border pixels
        cropped, for every role and for bicubic upscaling ('bicubic').
        """
        data = self.eval_dataset()
        count = min(self.recipe.eval.max_images or len(data), len(data))
        scale = self.cfg.scale
        split = self.recipe.data.eval_split

        def batches():
            for i in range(count):
                item = data[i]
                yield EvalBatch(inputs=item["lr"][None], target=to_unit(item["hr"][None]))

        standard = STANDARD_SR_SETS.get(split)
        reference = Reference(
            f"GCC / SRGAN: x{scale} Y-PSNR/SSIM on {split}", images=standard,
            blocker="" if standard else (f"data.eval_split '{split}' is not a standard SR test set "
                                         f"({', '.join(STANDARD_SR_SETS)})"))
        return EvalData(
            split=split, count=count, batches=batches, psnr_border=scale,
            baselines={"bicubic": Baseline(metrics=("psnr_ssim",),
                                           output=lambda b: to_unit(bicubic_upscale(b.inputs, scale)))},
            references={"psnr_ssim": reference})


FAMILY = SRGANFamily

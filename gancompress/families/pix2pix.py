"""Pix2Pix: paired image-to-image translation (U-Net or ResNet G, PatchGAN D on concat(A, image))."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import setting
from ..data.aligned import LAYOUT, AlignedDataset
from ..errors import RecipeError
from ..metrics.evaldata import Baseline, EvalBatch, EvalData, ImageSet, Reference
from ..metrics.image import to_unit
from ..nets.init import init_normal
from ..nets.patchgan import PatchDiscriminator
from ..nets.unet import UnetGenerator
from .base import Family


@dataclass(frozen=True)
class Pix2PixModel:
    """The recipe's ``model`` section for pix2pix."""

    netG: Literal["unet", "resnet"] = setting("unet", "the generator: a U-Net or a ResNet")
    num_downs: int = setting(8, "U-Net: downsamplings; data.crop_size must be a multiple of 2^num_downs", lo=5)
    n_blocks: int = setting(9, "ResNet: residual blocks", lo=1)
    ngf_teacher: int = setting(64, "the teacher generator's width (filters of its first layer)", lo=1)
    ngf_student: int = setting(32, "the sparse model's width, which pruning narrows into the student", lo=1)
    ndf: int = setting(128, "the PatchGAN discriminator's width", lo=1)
    n_layers_D: int = setting(3, "the PatchGAN's strided conv layers", lo=1)
    norm: Literal["batch", "instance", "instance_affine"] = setting(
        "batch", "the generator's norm layers (instance has no scales for sparse.method slimming to act on)")
    dropout: bool = setting(True, "dropout in the generator (pix2pix's noise)")
    input_nc: int = setting(3, "channels of the input images", lo=1)
    output_nc: int = setting(3, "channels of the output images", lo=1)
    l1_weight: float = setting(100.0, "weight of the L1 loss against the target image", lo=0)


class Pix2PixFamily(Family):
    name = "pix2pix"
    ModelConfig = Pix2PixModel
    generator_names = ("G",)
    layout = LAYOUT
    d_loss_weight = 0.5  # pix2pix halves D's loss

    def build_generator(self, name: str, ngf: int) -> nn.Module:
        c = self.cfg
        if c.netG == "unet":
            g = UnetGenerator(c.input_nc, c.output_nc, c.num_downs, ngf, c.norm, c.dropout)
        else:
            from ..nets.resnet import ResnetGenerator
            g = ResnetGenerator(c.input_nc, c.output_nc, ngf, c.n_blocks, c.norm, c.dropout)
        return init_normal(g)

    def build_discriminator(self, name: str) -> nn.Module:
        c = self.cfg
        d_norm = "batch" if c.norm == "batch" else "instance"
        return init_normal(PatchDiscriminator(c.input_nc + c.output_nc, c.ndf, c.n_layers_D, d_norm))

    def check_recipe(self) -> None:
        c, d = self.cfg, self.recipe.data
        if d.crop_size > d.load_size:
            raise RecipeError(f"data.crop_size: {d.crop_size} is larger than data.load_size {d.load_size}; "
                              "crops are taken from the image resized to load_size")
        if c.netG == "unet" and d.crop_size % 2 ** c.num_downs:
            raise RecipeError(f"model.num_downs: a U-Net with {c.num_downs} downsamplings needs a crop size that is "
                              f"a multiple of {2 ** c.num_downs}, got data.crop_size {d.crop_size}; lower "
                              "model.num_downs or change the crop size")
        if c.netG == "resnet" and d.crop_size % 4:
            raise RecipeError(f"data.crop_size: the ResNet generator needs a multiple of 4, got {d.crop_size}")
        super().check_recipe()

    def example_input(self, name: str, batch: int = 1, device="cpu") -> torch.Tensor:
        size = self.recipe.data.crop_size
        return torch.zeros(batch, self.cfg.input_nc, size, size, device=device)

    def dataset(self, split: str, train: bool):
        d = self.recipe.data
        return AlignedDataset(d.root, split, d.direction, d.load_size if train else d.crop_size,
                              d.crop_size, d.flip, train, d.max_items, d.on_bad_image)

    def check_data(self) -> None:
        """The training split and the evaluation split (screened now, not after training)."""
        super().check_data()
        self.dataset(self.recipe.data.eval_split, train=False)

    def synthetic_batch(self, batch_size, device):
        size, c = self.recipe.data.crop_size, self.cfg
        return {"A": torch.rand(batch_size, c.input_nc, size, size, device=device) * 2 - 1,
                "B": torch.rand(batch_size, c.output_nc, size, size, device=device) * 2 - 1,
                "index": torch.arange(batch_size, device=device)}

    def generator_inputs(self, batch: dict) -> dict[str, torch.Tensor]:
        return {"G": batch["A"]}

    def real(self, name: str, batch: dict) -> torch.Tensor:
        return batch["B"]

    def d_input(self, name, inputs, image):
        return torch.cat([inputs["G"], image], 1)

    def task_loss(self, gens, inputs, fakes, batch):
        return self.cfg.l1_weight * F.l1_loss(fakes["G"], batch["B"])

    # --- evaluation -----------------------------------------------------------------------
    eval_metrics = ("psnr_ssim", "miou", "fid_kid")

    def eval_data(self, name: str) -> EvalData:
        """G(A) against B on ``data.eval_split`` (``eval.max_images`` caps it).

        PSNR/SSIM compare with B; mIoU segments the output against the label map it was made
        from: ``<root>/<eval_split>_trainids/<file>`` when present (Cityscapes' 19 trainIds at
        full resolution, written by gancompress prepare-cityscapes), else the colour label map A;
        the real photo B is scored too ('real', the segmenter's ceiling). FID/KID compare with
        the real B images of the split.
        """
        d = self.recipe.data
        data = self.dataset(d.eval_split, train=False)
        count = min(self.recipe.eval.max_images or len(data), len(data))
        subset = torch.utils.data.Subset(data, range(count))

        def loader():
            return torch.utils.data.DataLoader(subset, batch_size=d.eval_batch_size)

        def batches():
            for batch in loader():
                yield EvalBatch(inputs=batch["A"], target=to_unit(batch["B"]),
                                load_labels=lambda batch=batch: self._labels(data, batch))

        size = (d.crop_size, d.crop_size)
        reals = ImageSet(name=f"{d.eval_split} B", files=tuple(data.files[:count]),
                         transform=f"aligned {d.direction}: target half, resized to {d.crop_size}x{d.crop_size}",
                         images=lambda: (to_unit(batch["B"]) for batch in loader()))
        return EvalData(
            split=d.eval_split, count=count, batches=batches, resolution=size, reals=reals,
            baselines={"real": Baseline(metrics=("miou",), output=lambda b: b.target)},
            references={
                "miou": Reference("GCC Table 2 / GAN Compression: pix2pix Cityscapes mIoU (DRN-D-105, val)",
                                  images=500, resolution=(256, 256)),
                "fid_kid": Reference("GAN Compression: pix2pix Cityscapes FID (real val photos)", images=500,
                                     resolution=(256, 256),
                                     note="GAN Compression computed FID with pytorch-fid (the same TF Inception "
                                          "weights, torch's bilinear resize); torch-fidelity resizes as TF1 did, "
                                          "so figures can differ slightly"),
            })

    def _labels(self, data, batch) -> list[torch.Tensor]:
        """The batch's label maps: (H, W) trainIds from the ``_trainids`` files, else A's (H, W, 3) colours."""
        import numpy as np
        from PIL import Image

        maps = []
        for index, a in zip(batch["index"].tolist(), batch["A"]):
            path = data.files[index]
            trainids = path.parent.parent / f"{path.parent.name}_trainids" / path.name
            if trainids.is_file():
                with Image.open(trainids) as im:
                    maps.append(torch.from_numpy(np.asarray(im, dtype=np.int64)))
            else:
                maps.append(((a.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.long))
        return maps

    def visuals(self, batch, inputs, teacher, student):
        rows = [inputs["G"], teacher["G"]]
        if student is not None:
            rows.append(student["G"])
        return rows + [batch["B"]]


FAMILY = Pix2PixFamily

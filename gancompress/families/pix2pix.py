"""Pix2Pix: paired image-to-image translation (U-Net or ResNet G, PatchGAN D on concat(A, image))."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RecipeError
from ..schema import bounded
from ..data.aligned import AlignedDataset
from ..nets.init import init_normal
from ..nets.patchgan import PatchDiscriminator
from ..nets.unet import UnetGenerator
from .base import Family


@dataclass(frozen=True)
class Pix2PixModel:
    """The recipe's ``model`` section for pix2pix."""

    netG: Literal["unet", "resnet"] = "unet"
    num_downs: int = field(default=8, metadata=bounded(5))
    n_blocks: int = field(default=9, metadata=bounded(1))
    ngf_teacher: int = field(default=64, metadata=bounded(1))
    ngf_student: int = field(default=32, metadata=bounded(1))
    ndf: int = field(default=128, metadata=bounded(1))
    n_layers_D: int = field(default=3, metadata=bounded(1))
    norm: Literal["batch", "instance", "instance_affine"] = "batch"
    dropout: bool = True
    input_nc: int = field(default=3, metadata=bounded(1))
    output_nc: int = field(default=3, metadata=bounded(1))
    l1_weight: float = field(default=100.0, metadata=bounded(0))


class Pix2PixFamily(Family):
    name = "pix2pix"
    ModelConfig = Pix2PixModel
    generator_names = ("G",)
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

    @torch.no_grad()
    def evaluate(self, generators, device):
        """PSNR/SSIM of G(A) against B, and mIoU when ``eval.segmenter`` names a segmenter.

        mIoU follows the pix2pix/GCC protocol: segment the generated image, upsample the
        prediction to the label's resolution, one confusion matrix over the evaluation split.
        Labels come from ``<root>/<eval_split>_trainids/<file>`` when present (Cityscapes, made
        by tools/prepare_cityscapes.py), else from the colour label map A via the segmenter's
        palette. The real photos B give the ceiling ('real').
        """
        from ..metrics.image import psnr_ssim_y, to_unit
        from ..metrics.miou import confusion_matrix, load_segmenter, miou_from_confusion

        data = self.dataset(self.recipe.data.eval_split, train=False)
        limit = self.recipe.eval.max_images or len(data)
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(min(limit, len(data)))),
                                             batch_size=self.recipe.data.eval_batch_size)
        seg = load_segmenter(self.recipe.eval.segmenter, device) if self.recipe.eval.segmenter else None
        roles = list(generators)
        sums = {r: {"psnr": 0.0, "ssim": 0.0} for r in roles}
        cms = {r: None for r in roles + ["real"]}
        count = 0
        for batch in loader:
            a, b = batch["A"].to(device), batch["B"].to(device)
            outs = {r: to_unit(generators[r]["G"](a)) for r in roles}
            n = a.shape[0]
            for r in roles:
                m = psnr_ssim_y(outs[r].cpu(), to_unit(b).cpu(), border=0)
                sums[r]["psnr"] += m["psnr"] * n
                sums[r]["ssim"] += m["ssim"] * n
            if seg is not None:
                labels = self._labels(data, batch, seg)
                for r, images in list(outs.items()) + [("real", to_unit(b))]:
                    pred = seg.predict(images, out_size=labels.shape[-2:]).cpu()
                    cm = confusion_matrix(pred, labels, seg.num_classes)
                    cms[r] = cm if cms[r] is None else cms[r] + cm
            count += n
        result = {r: {k: v / count for k, v in sums[r].items()} for r in roles}
        if seg is not None:
            for r, cm in cms.items():
                result.setdefault(r, {})["miou"] = miou_from_confusion(cm)["miou"]
        return {"G": result}

    def _labels(self, data, batch, seg) -> torch.Tensor:
        """(N, H, W) class ids of the batch's label maps (trainId files, else A's colours)."""
        from PIL import Image
        import numpy as np

        ids = []
        for index, a in zip(batch["index"].tolist(), batch["A"]):
            path = data.files[index]
            trainids = path.parent.parent / f"{path.parent.name}_trainids" / path.name
            if trainids.is_file():
                with Image.open(trainids) as im:
                    ids.append(torch.from_numpy(np.asarray(im, dtype=np.int64)))
            else:
                rgb = ((a.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.long)
                ids.append(seg.labels_from_colour(rgb))
        return torch.stack(ids)

    def visuals(self, batch, inputs, teacher, student):
        rows = [inputs["G"], teacher["G"]]
        if student is not None:
            rows.append(student["G"])
        return rows + [batch["B"]]


FAMILY = Pix2PixFamily

"""CycleGAN: unpaired translation with two ResNet generators and two PatchGAN discriminators.

Generator 'AtoB' maps domain A to B and 'BtoA' maps B to A; the discriminator keyed 'AtoB'
judges AtoB's outputs against real B images, 'BtoA' judges BtoA's against real A. The task loss
is the cycle loss both ways plus the identity loss; discriminators train on fakes drawn from a
history of 50 images each (CycleGAN's image pool). Each generator is pruned to its own budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config.schema import setting
from ..data.unaligned import LAYOUT, DomainDataset, UnalignedDataset, domain_files
from ..errors import RecipeError
from ..metrics.evaldata import Baseline, EvalBatch, EvalData, ImageSet, Reference
from ..metrics.image import to_unit
from ..nets.init import init_normal
from ..nets.patchgan import PatchDiscriminator
from ..nets.resnet import MobileResnetGenerator, ResnetGenerator
from .base import Family

# generator name -> (domain it reads, domain it writes)
DIRECTIONS = {"AtoB": ("A", "B"), "BtoA": ("B", "A")}


@dataclass(frozen=True)
class CycleGANModel:
    """The recipe's ``model`` section for cyclegan.

    ``input_nc`` is domain A's channels, ``output_nc`` domain B's; the identity loss feeds B to
    AtoB, so it needs both equal.
    """

    netG: Literal["resnet", "mobile"] = setting("resnet", "the generators: CycleGAN's ResNet, or mobile (its "
                                                "residual convs depthwise-separable, as GAN Compression's)")
    n_blocks: int = setting(9, "residual blocks of each generator", lo=1)
    ngf_teacher: int = setting(64, "the teacher generators' width (filters of the first layer)", lo=1)
    ngf_student: int = setting(24, "the sparse models' width, which pruning narrows into the students", lo=1)
    ndf: int = setting(64, "the PatchGAN discriminators' width", lo=1)
    n_layers_D: int = setting(3, "the PatchGANs' strided conv layers", lo=1)
    norm: Literal["instance", "instance_affine"] = setting(
        "instance", "the generators' norm layers (instance has no scales for sparse.method slimming to act on)")
    dropout: bool = setting(False, "dropout inside each residual block")
    input_nc: int = setting(3, "channels of domain A's images", lo=1)
    output_nc: int = setting(3, "channels of domain B's images", lo=1)
    lambda_cycle: float = setting(10.0, "weight of the cycle loss, both ways", lo=0)
    lambda_identity: float = setting(0.5, "weight of the identity loss, times lambda_cycle (0: off)", lo=0)
    pool_size: int = setting(50, "generated images in each discriminator's history (0: none)", lo=0)

    def validate(self) -> str | None:
        if self.lambda_identity > 0 and self.input_nc != self.output_nc:
            return (f"lambda_identity: the identity loss needs input_nc == output_nc (got {self.input_nc} "
                    f"and {self.output_nc}); set model.lambda_identity: 0")
        return None


class ImagePool:
    """A history of generated images (CycleGAN's ImagePool), for one discriminator.

    Until it holds ``size`` images every query image is stored and returned as it is. Then each
    image of a batch is, with probability 1/2, swapped for a random stored one (which it
    replaces in the pool), else returned as it is. Randomness comes from torch's global RNG,
    whose state the training loop checkpoints, so a resumed run draws the same.

    Args:
        size: capacity; 0 turns the pool off.
    """

    def __init__(self, size: int):
        self.size = size
        self.images: torch.Tensor | None = None  # (count, C, H, W), count <= size
        self.count = 0

    @torch.no_grad()
    def query(self, fake: torch.Tensor) -> torch.Tensor:
        """Images for the discriminator: (N, C, H, W) detached fakes -> (N, C, H, W)."""
        if self.size == 0:
            return fake
        fake = fake.detach()
        n = fake.shape[0]
        coins = torch.rand(n).tolist()
        slots = torch.randint(0, self.size, (n,)).tolist()
        out = []
        for i in range(n):
            image = fake[i:i + 1]
            if self.images is None or self.images.shape[1:] != image.shape[1:]:
                self.images = image.new_empty((self.size, *image.shape[1:]))
                self.count = 0
            if self.images.device != image.device or self.images.dtype != image.dtype:
                self.images = self.images.to(image.device, image.dtype)
            if self.count < self.size:
                self.images[self.count] = image[0]
                self.count += 1
                out.append(image)
            elif coins[i] > 0.5:
                slot = slots[i]
                out.append(self.images[slot:slot + 1].clone())
                self.images[slot] = image[0]
            else:
                out.append(image)
        return torch.cat(out)

    def state_dict(self) -> dict:
        stored = self.images[:self.count].clone() if self.images is not None else torch.empty(0)
        return {"images": stored}

    def load_state_dict(self, state: dict) -> None:
        stored = state["images"]
        self.count = int(stored.shape[0]) if stored.dim() == 4 else 0
        if self.count == 0:
            self.images = None
            return
        self.images = stored.new_empty((self.size, *stored.shape[1:]))
        self.images[:self.count] = stored


class CycleGANFamily(Family):
    name = "cyclegan"
    ModelConfig = CycleGANModel
    generator_names = ("AtoB", "BtoA")
    layout = LAYOUT
    d_loss_weight = 0.5  # CycleGAN halves D's loss

    def __init__(self, recipe):
        super().__init__(recipe)
        self.pools: dict[str, ImagePool] = {}

    def check_recipe(self) -> None:
        d = self.recipe.data
        if d.crop_size % 4:
            raise RecipeError(f"data.crop_size: the ResNet generator needs a multiple of 4, got {d.crop_size}")
        if d.crop_size > d.load_size:
            raise RecipeError(f"data.crop_size: {d.crop_size} is larger than data.load_size {d.load_size}; "
                              "crops are taken from the image resized to load_size")
        if self.recipe.sparse.method == "slimming" and self.cfg.norm == "instance":
            raise RecipeError("sparse.method: slimming needs norm layers with scales, and model.norm 'instance' "
                              "has none; set sparse.method: l1 or model.norm: instance_affine")
        super().check_recipe()

    def _channels(self, name: str) -> tuple[int, int]:
        c = self.cfg
        return (c.input_nc, c.output_nc) if name == "AtoB" else (c.output_nc, c.input_nc)

    # --- networks -------------------------------------------------------------------------
    def build_generator(self, name: str, ngf: int) -> nn.Module:
        c = self.cfg
        net = ResnetGenerator if c.netG == "resnet" else MobileResnetGenerator
        return init_normal(net(*self._channels(name), ngf, c.n_blocks, c.norm, c.dropout))

    def build_discriminator(self, name: str) -> nn.Module:
        c = self.cfg
        return init_normal(PatchDiscriminator(self._channels(name)[1], c.ndf, c.n_layers_D, norm="instance"))

    def example_input(self, name: str, batch: int = 1, device="cpu") -> torch.Tensor:
        """A smooth gradient image (N, C, crop, crop) in [-1, 1], not zeros.

        InstanceNorm of a constant map divides rounding noise by sqrt(eps), so export parity
        checks (TorchScript, ONNX) on an all-zero input would compare amplified noise.
        """
        size = self.recipe.data.crop_size
        ramp = torch.linspace(-1.0, 1.0, size, device=device)
        image = ramp.view(1, 1, 1, size) * ramp.flip(0).view(1, 1, size, 1)
        return image.expand(batch, self._channels(name)[0], size, size).contiguous()

    def custom_pruners(self) -> dict:
        """The shared pruners; torch-pruning itself prunes affine InstanceNorm's scale and shift."""
        from ..method.layer_pruners import CUSTOM_PRUNERS
        return CUSTOM_PRUNERS

    # --- data -----------------------------------------------------------------------------
    def dataset(self, split: str, train: bool) -> UnalignedDataset:
        d = self.recipe.data
        return UnalignedDataset(d.root, split, d.load_size if train else d.crop_size, d.crop_size, d.flip,
                                train, d.pairing, d.max_items, d.on_bad_image)

    def check_data(self) -> None:
        """Both domains of the training split must be readable (the evaluation split when FID is on)."""
        self.dataset(self.recipe.data.train_split, train=True)
        if self.recipe.eval.fid_extractor or self.recipe.eval.inception_weights:
            self.dataset(self.recipe.data.eval_split, train=False)

    def synthetic_batch(self, batch_size, device):
        size = self.recipe.data.crop_size
        a_nc, b_nc = self._channels("AtoB")
        return {"A": torch.rand(batch_size, a_nc, size, size, device=device) * 2 - 1,
                "B": torch.rand(batch_size, b_nc, size, size, device=device) * 2 - 1,
                "index": torch.arange(batch_size, device=device)}

    def generator_inputs(self, batch: dict) -> dict[str, torch.Tensor]:
        return {n: batch[src] for n, (src, _) in DIRECTIONS.items()}

    def real(self, name: str, batch: dict) -> torch.Tensor:
        return batch[DIRECTIONS[name][1]]

    def fake_for_d(self, key: str, fake: torch.Tensor) -> torch.Tensor:
        """A pooled batch for discriminator ``key`` ('<role>:<name>', one pool each)."""
        if key not in self.pools:
            self.pools[key] = ImagePool(self.cfg.pool_size)
        return self.pools[key].query(fake)

    def task_loss(self, gens, inputs, fakes, batch):
        """``lambda_cycle * (|G_BA(G_AB(A)) - A|_1 + |G_AB(G_BA(B)) - B|_1)`` plus the identity
        loss ``lambda_identity * lambda_cycle * (|G_AB(B) - B|_1 + |G_BA(A) - A|_1)`` (skipped at 0).

        Args:
            gens: 'AtoB' and 'BtoA' generators.
            inputs: the generators' inputs (A for AtoB, B for BtoA), each (N, C, H, W).
            fakes: their outputs on ``inputs``, each (N, C, H, W).
        """
        c = self.cfg
        a, b = inputs["AtoB"], inputs["BtoA"]
        loss = c.lambda_cycle * (F.l1_loss(gens["BtoA"](fakes["AtoB"]), a) + F.l1_loss(gens["AtoB"](fakes["BtoA"]), b))
        if c.lambda_identity > 0:
            weight = c.lambda_identity * c.lambda_cycle
            loss = loss + weight * (F.l1_loss(gens["AtoB"](b), b) + F.l1_loss(gens["BtoA"](a), a))
        return loss

    def visuals(self, batch, inputs, teacher, student):
        """Rows: real A | teacher AtoB | student AtoB | real B, then real B | ... BtoA ... | real A."""
        rows = []
        for n, (src, dst) in DIRECTIONS.items():
            rows += [batch[src], teacher[n]] + ([student[n]] if student is not None else []) + [batch[dst]]
        return rows

    # --- evaluation -----------------------------------------------------------------------
    eval_metrics = ("fid_kid",)

    def eval_data(self, name: str) -> EvalData:
        """``name`` translates test images of its source domain; FID/KID compare them with the
        target domain's test images (``eval.max_images`` caps both). The role 'input' scores the
        untranslated source images against the target domain: what doing nothing scores.
        """
        src, dst = DIRECTIONS[name]
        source, target = self._domain_set(src), self._domain_set(dst)
        size = self.recipe.data.crop_size

        def batches():
            for x in self._batches(source.files):
                yield EvalBatch(inputs=x)

        return EvalData(
            split=f"{self.recipe.data.eval_split}{src} -> {self.recipe.data.eval_split}{dst}", count=len(source),
            batches=batches, resolution=(size, size), reals=target,
            baselines={"input": Baseline(metrics=("fid_kid",), images=source)},
            references={"fid_kid": Reference(
                "GAN Compression / GCC: CycleGAN horse2zebra FID", resolution=(256, 256),
                blocker="the published horse2zebra FID compares with the real train+test images of the target "
                        "domain; this run compares with data.eval_split's images only")})

    def _domain_set(self, domain: str) -> ImageSet:
        """The evaluation images of one domain as an :class:`ImageSet` ([0, 1], resized to ``crop_size``)."""
        d = self.recipe.data
        files = tuple(domain_files(d.root, d.eval_split, domain, d.max_items, d.on_bad_image))
        if self.recipe.eval.max_images:
            files = files[:self.recipe.eval.max_images]

        def images() -> Iterator[torch.Tensor]:
            return (to_unit(x) for x in self._batches(files))

        return ImageSet(name=f"{d.eval_split}{domain}", files=files,
                        transform=f"resized to {d.crop_size}x{d.crop_size} (bicubic)", images=images)

    def _batches(self, files) -> Iterator[torch.Tensor]:
        """Batches (N, C, crop, crop) in [-1, 1] of ``files``, in order."""
        d = self.recipe.data
        yield from torch.utils.data.DataLoader(DomainDataset(files, d.crop_size, d.crop_size),
                                               batch_size=d.eval_batch_size)

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The image pools: {"pools": {key: {"images": (count, C, H, W)}}} (tensors only)."""
        return {"pools": {k: p.state_dict() for k, p in self.pools.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore the pools of :meth:`state_dict`; an empty state empties them."""
        self.pools = {}
        for key, pool_state in state.get("pools", {}).items():
            self.pools[key] = ImagePool(self.cfg.pool_size)
            self.pools[key].load_state_dict(pool_state)

    def reset_state(self) -> None:
        """Empty the pools (each training stage starts with empty ones)."""
        self.pools = {}


FAMILY = CycleGANFamily

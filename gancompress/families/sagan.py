"""SAGAN: unconditional 64x64 generation from a latent code (one generator 'G').

G and D are heykeetae's SAGAN (``nets.sagan``): spectral-norm transposed convs with BatchNorm and
two self-attention blocks in G, spectral-norm convs with two attention blocks in D, trained with
the hinge loss and TTUR (the recipe sets lr_g 1e-4, lr_d 4e-4, betas (0, 0.9)). There is no task
loss. Every dataset item carries the latent code z of its sample, drawn from the item's seed, so
the teacher and the student of stage 3 see the same z and a resumed run the same codes.

Spectral norm and pruning: torch-pruning cannot prune a parametrized weight, so
:meth:`SAGANFamily.before_pruning` folds spectral norm into plain weights and
:meth:`SAGANFamily.after_pruning` puts it back on the pruned convs (see ``nets.sagan`` for what
that does to the function). Attention blocks are pruned with their block's channels
(``gancompress.method.layer_pruners``); their query/key width stays. MACs budgets are met on the complete
count, which includes the spectral-norm convs and the attention matmuls that thop misses.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config.schema import setting
from ..data.imagefolder import ImageFolderDataset
from ..errors import DataError
from ..method.pruning import architecture_record, rebuild
from ..metrics.evaldata import EvalBatch, EvalData, ImageSet, Reference
from ..metrics.image import to_unit
from ..nets.sagan import (
    SAGANDiscriminator,
    SAGANGenerator,
    SelfAttention,
    fold_spectral_norm,
    restore_spectral_norm,
    strip_spectral_norm,
)
from .base import Family

LAYOUT = ("a flat folder of RGB images, e.g. CelebA's img_align_celeba/ (an empty data.train_split "
          "or data.eval_split reads data.root itself; 'train' reads data.root/train); gancompress "
          "make-demo-data sagan writes one")


@dataclass(frozen=True)
class SAGANModel:
    """The recipe's ``model`` section for sagan (GCC appendix Table I: ngf 64 / 48, ndf 64)."""

    z_dim: int = setting(128, "size of the latent code z", lo=1)
    ngf_teacher: int = setting(64, "the teacher generator's width", lo=1)
    ngf_student: int = setting(48, "the sparse model's width, which pruning narrows into the student", lo=1)
    ndf: int = setting(64, "the discriminator's width", lo=1)
    image_size: int = setting(64, "side of the generated images (the nets make 64x64 only)", lo=1)

    def validate(self) -> str | None:
        if self.image_size != 64:
            return (f"image_size: the SAGAN nets (gancompress.nets.sagan) make 64x64 images, got "
                    f"{self.image_size}; set model.image_size: 64")
        return None


class SAGANFamily(Family):
    name = "sagan"
    ModelConfig = SAGANModel
    generator_names = ("G",)
    layout = LAYOUT
    d_loss_weight = 1.0  # hinge D loss, not halved

    # --- networks -------------------------------------------------------------------------
    def build_generator(self, name: str, ngf: int) -> nn.Module:
        """A SAGAN generator of width ``ngf`` (z (N, z_dim) -> (N, 3, 64, 64)), torch's default
        init as in heykeetae's code."""
        return SAGANGenerator(self.cfg.z_dim, ngf)

    def build_discriminator(self, name: str) -> nn.Module:
        """A SAGAN discriminator of width ``ndf`` ((N, 3, 64, 64) -> (N, 1) logits)."""
        return SAGANDiscriminator(self.cfg.ndf)

    def example_input(self, name: str, batch: int = 1, device="cpu") -> torch.Tensor:
        """A fixed standard-normal batch of codes (N, z_dim) (seeded, so traces are repeatable;
        not zeros, so export parity checks compare more than the biases)."""
        gen = torch.Generator().manual_seed(0)
        return torch.randn(batch, self.cfg.z_dim, generator=gen).to(device)

    @torch.no_grad()
    def reinit_generator(self, generator: nn.Module) -> nn.Module:
        """Re-initialise in place with the nets' own init: torch's defaults (``reset_parameters``
        of every conv and BatchNorm), attention ``gamma`` 0, spectral norm re-applied with an
        exact sigma. Works on pruned widths."""
        token = self.before_pruning(generator)
        for m in generator.modules():
            if isinstance(m, SelfAttention):
                m.gamma.zero_()
            elif callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
        self.after_pruning(generator, token)
        return generator

    def custom_pruners(self) -> dict:
        """The :class:`SelfAttention` pruner: the block's q/k/v input channels are tied to the
        channels of the block it sits on (and its value conv's output to them too)."""
        from ..method.layer_pruners import CUSTOM_PRUNERS
        return dict(CUSTOM_PRUNERS)

    def before_pruning(self, generator: nn.Module) -> list[str]:
        """Fold spectral norm into plain weights in place; returns the folded modules' names.

        Names rather than modules: the pruning search works on copies of ``generator``.
        """
        stripped = set(map(id, strip_spectral_norm(generator)))
        return [name for name, m in generator.named_modules() if id(m) in stripped]

    def after_pruning(self, generator: nn.Module, token: list[str]) -> None:
        """Re-apply spectral norm (exact sigma, a few power iterations) to the modules named in
        ``token`` of the pruned ``generator``."""
        modules = dict(generator.named_modules())
        restore_spectral_norm([modules[name] for name in token])

    def for_export(self, generator: nn.Module) -> nn.Module:
        """A copy of ``generator`` with spectral norm folded into plain weights (eval mode): it
        computes what ``generator`` computes in eval mode, and traces to TorchScript/ONNX.

        The copy is rebuilt from the architecture record and state dict, not deep-copied: a deep
        copy of a parametrized module shares its generated class with the original, and removing
        the parametrization from the copy deletes ``weight`` from that shared class, breaking the
        original.
        """
        shipped = rebuild(self.build_generator("G", self.cfg.ngf_student), architecture_record(generator))
        shipped.load_state_dict(generator.state_dict())
        device = next(generator.parameters()).device
        shipped = shipped.to(device).eval()
        fold_spectral_norm(shipped)
        return shipped

    # --- data -----------------------------------------------------------------------------
    def dataset(self, split: str, train: bool) -> ImageFolderDataset:
        """The images of ``data.root/<split>`` (``data.root`` itself for an empty split).

        Items: {"image": (3, 64, 64) in [-1, 1], "z": (z_dim,), "index"}.
        """
        d = self.recipe.data
        if not d.root:
            raise DataError(f"data.root is empty: set it to {LAYOUT}")
        folder = Path(d.root) / split if split else Path(d.root)
        return ImageFolderDataset(folder, self.cfg.image_size, d.center_crop, d.flip, train, self.cfg.z_dim,
                                  d.max_items, d.on_bad_image, what=f"data.root; expected {LAYOUT}")

    def check_data(self) -> None:
        """The training images, and the evaluation images when FID will be measured on them."""
        super().check_data()
        if self.recipe.eval.fid_extractor or self.recipe.eval.inception_weights:
            self.dataset(self.recipe.data.eval_split, train=False)

    def synthetic_batch(self, batch_size: int, device: torch.device) -> dict:
        size = self.cfg.image_size
        return {"image": torch.rand(batch_size, 3, size, size, device=device) * 2 - 1,
                "z": torch.randn(batch_size, self.cfg.z_dim, device=device),
                "index": torch.arange(batch_size, device=device)}

    def generator_inputs(self, batch: dict) -> dict[str, torch.Tensor]:
        """The batch's own codes (N, z_dim): the same for teacher and student."""
        return {"G": batch["z"]}

    def real(self, name: str, batch: dict) -> torch.Tensor:
        return batch["image"]

    def task_loss(self, gens, inputs, fakes, batch) -> torch.Tensor:
        """SAGAN has no task loss: a zero scalar."""
        return fakes["G"].new_zeros(())

    def visuals(self, batch, inputs, teacher, student):
        """Rows teacher | student | real (the input z is not an image)."""
        rows = [teacher["G"]]
        if student is not None:
            rows.append(student["G"])
        return rows + [batch["image"]]

    # --- evaluation -----------------------------------------------------------------------
    eval_metrics = ("fid_kid",)

    def eval_data(self, name: str) -> EvalData:
        """FID/KID of samples against the real images of ``data.eval_split``.

        One sample per real image (``eval.max_images`` caps both), from codes drawn from the
        recipe's ``seed``: teacher and student are scored on the same codes, and each seed of a
        repeated measurement draws its own (the spread of a teacher's FID over seeds is its
        sampling spread).
        """
        d = self.recipe.data
        data = self.dataset(d.eval_split, train=False)
        count = min(self.recipe.eval.max_images or len(data), len(data))

        def loader():
            return torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(count)),
                                               batch_size=d.eval_batch_size)

        def batches():
            codes = torch.randn(count, self.cfg.z_dim, generator=torch.Generator().manual_seed(self.recipe.seed))
            for start in range(0, count, d.eval_batch_size):
                yield EvalBatch(inputs=codes[start:start + d.eval_batch_size])

        size = self.cfg.image_size
        crop = f"centre crop {d.center_crop}, " if d.center_crop else ""
        reals = ImageSet(name=d.eval_split or "root", files=tuple(data.files[:count]),
                         transform=f"{crop}resized to {size}x{size} (bicubic, antialiased)",
                         images=lambda: (to_unit(batch["image"]) for batch in loader()))
        return EvalData(
            split=d.eval_split or "data.root", count=count, batches=batches, resolution=(size, size), reals=reals,
            references={"fid_kid": Reference(
                "GCC: SAGAN CelebA 64x64 FID", resolution=(64, 64),
                blocker="the published SAGAN/CelebA FID protocol (number of samples, real image set) is not "
                        "pinned in gancompress")})


FAMILY = SAGANFamily

"""What a model family tells the shared pipeline.

The training loop, pruning and distillation never name an architecture: they ask the family.
A family builds its generators and discriminators (one pair per translation direction; most
families have one, named 'G'), turns a batch into generator inputs and real images, adds its task
loss, and says where its images and distillation points are.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from ..config.sections import Recipe
from ..errors import GanCompressError, RecipeError

#: Nets above this many parameters are refused before anything is allocated (4 bytes each).
MAX_PARAMS = 2_000_000_000


class Family(ABC):
    """Base class of family adapters.

    Class attributes:
        ModelConfig: the frozen dataclass of the recipe's ``model`` section; it must have
            ``ngf_teacher`` and ``ngf_student`` fields.
        generator_names: names of the generators (and of the discriminators judging them).
        layout: the dataset folder layout ``data.root`` must have, in words (the error messages
            and docs/datasets.md say it).
        d_loss_weight: factor on ``L_D_real + L_D_fake`` (1/2 where the family halves D's loss);
            also the local-capacity weight c of METHOD 2.
        g_adv_weight: factor on the generators' adversarial loss, teacher and student alike
            (SRGAN's 1e-3); a family whose recipe sets it assigns it per instance in ``__init__``.
            The discriminators' losses and GCC's gap (METHOD 2) stay unweighted.
    """

    name: ClassVar[str]
    ModelConfig: ClassVar[type]
    generator_names: ClassVar[tuple[str, ...]] = ("G",)
    layout: ClassVar[str] = ""
    d_loss_weight: ClassVar[float] = 1.0
    g_adv_weight: float = 1.0

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.cfg = recipe.model

    # --- networks -------------------------------------------------------------------------
    @abstractmethod
    def build_generator(self, name: str, ngf: int) -> nn.Module:
        """A freshly initialised generator of width ``ngf``; it has ``distill_points()``."""

    @abstractmethod
    def build_discriminator(self, name: str) -> nn.Module:
        """A freshly initialised discriminator; it has ``mask_points()`` and ``feature_points()``."""

    @abstractmethod
    def example_input(self, name: str, batch: int = 1, device: str | torch.device = "cpu") -> torch.Tensor:
        """A generator input at the recipe's shape (for MACs, tracing and export)."""

    def reinit_generator(self, generator: nn.Module) -> nn.Module:
        """Re-initialise a (pruned) generator in place, as GCC does before distillation."""
        from ..nets.init import init_normal
        return init_normal(generator)

    def custom_pruners(self) -> dict:
        """torch-pruning pruners for leaf modules it cannot trace through (type -> pruner)."""
        return {}

    def before_pruning(self, generator: nn.Module) -> object:
        """Make ``generator`` prunable in place (e.g. strip spectral norm); returns a token."""
        return None

    def after_pruning(self, generator: nn.Module, token: object) -> None:
        """Undo :meth:`before_pruning` on the pruned generator in place."""

    def for_export(self, generator: nn.Module) -> nn.Module:
        """The generator as shipped (e.g. spectral norm folded into plain weights)."""
        return generator

    def check_recipe(self) -> None:
        """Raise RecipeError for a model and data combination that cannot run.

        The default builds every generator (teacher and sparse-model widths) and discriminator on
        the ``meta`` device, so nothing is allocated, refuses nets beyond :data:`MAX_PARAMS`, and
        runs them at the recipe's shapes; a family adds checks whose message can name the
        settings more precisely, before calling this.
        """
        names = self.generator_names
        for ngf, role in ((self.cfg.ngf_teacher, "teacher"), (self.cfg.ngf_student, "sparse model")):
            with torch.device("meta"):
                inputs = {n: self.example_input(n, 1, "meta") for n in names}
                for n in names:
                    key = "model.ngf_teacher" if role == "teacher" else "model.ngf_student"
                    try:
                        g = self.build_generator(n, ngf).eval()
                        d = self.build_discriminator(n).eval()
                    except (RuntimeError, ValueError, OverflowError) as exc:
                        raise RecipeError(f"model: the {role} generator {n} (ngf {ngf}) or its discriminator cannot "
                                          f"be built ({str(exc).splitlines()[0]}); choose a smaller {key}") from None
                    size = sum(p.numel() for p in g.parameters())
                    if size > MAX_PARAMS:
                        raise RecipeError(f"model: the {role} generator {n} (ngf {ngf}) would have {size:.3g} "
                                          f"parameters; choose a smaller {key}")
                    try:
                        with torch.no_grad():
                            d(self.d_input(n, inputs, g(inputs[n])))
                    except (RuntimeError, ValueError) as exc:
                        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                        raise RecipeError(
                            f"model: the {role} generator {n} and its discriminator cannot run on the recipe's "
                            f"input {tuple(inputs[n].shape)} ({why}); check the model section's depth settings "
                            "against the data's crop size") from None

    # --- data -----------------------------------------------------------------------------
    @abstractmethod
    def dataset(self, split: str, train: bool) -> torch.utils.data.Dataset:
        """The dataset of ``split``; items are dicts of tensors; ``train`` turns augmentation on."""

    def check_data(self) -> None:
        """Raise DataError early if the recipe's data is missing or wrongly laid out."""
        self.dataset(self.recipe.data.train_split, train=True)

    def synthetic_batch(self, batch_size: int, device: torch.device) -> dict:
        """A random batch of the recipe's shapes, for benchmarks without data."""
        raise GanCompressError(f"the {self.name} family has no synthetic batch for benchmarks yet; "
                               "run gancompress benchmark without --synthetic on the recipe's data")

    @abstractmethod
    def generator_inputs(self, batch: dict) -> dict[str, torch.Tensor]:
        """The input of each generator for this batch (shared by teacher and student)."""

    @abstractmethod
    def real(self, name: str, batch: dict) -> torch.Tensor:
        """Real images the discriminator ``name`` compares the generator's output with."""

    def d_input(self, name: str, inputs: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        """What discriminator ``name`` sees for ``image`` (conditional families concatenate)."""
        return image

    def fake_for_d(self, key: str, fake: torch.Tensor) -> torch.Tensor:
        """The (detached) fake a discriminator trains on; families with image pools query them.

        ``key`` is '<role>:<generator name>' (role 'T' for the teacher or sparse model, 'S' for the
        student), so each discriminator has its own pool.
        """
        return fake

    @abstractmethod
    def task_loss(self, gens: dict[str, nn.Module], inputs: dict[str, torch.Tensor],
                  fakes: dict[str, torch.Tensor], batch: dict) -> torch.Tensor:
        """The family's non-adversarial generator loss (L1, cycle, content, ... or zero)."""

    @abstractmethod
    def visuals(self, batch: dict, inputs: dict, teacher: dict, student: dict | None) -> list[torch.Tensor]:
        """Rows of a sample grid, each (N, 3, H, W) in [-1, 1]: input | teacher | student | target."""

    def pretrain_loss(self, gens: dict[str, nn.Module], inputs: dict[str, torch.Tensor],
                      fakes: dict[str, torch.Tensor], batch: dict) -> torch.Tensor:
        """Loss of the optional generator-only pre-training (``train.pretrain_epochs``)."""
        return self.task_loss(gens, inputs, fakes, batch)

    # --- evaluation -----------------------------------------------------------------------
    #: Names of the metrics the family reports (keys of ``metrics.registry.METRICS``).
    eval_metrics: ClassVar[tuple[str, ...]] = ()

    def eval_data(self, name: str):
        """What generator ``name`` is evaluated on: a :class:`~gancompress.metrics.evaldata.EvalData`."""
        raise NotImplementedError(f"the {self.name} family declares metrics {self.eval_metrics} but no eval_data")

    def evaluate(self, generators: dict[str, dict[str, nn.Module]], device: torch.device,
                 cache_dir=None) -> dict:
        """The family's metrics for each role ('teacher', 'student', ...) and generator.

        A thin call into :func:`gancompress.metrics.registry.evaluate_generators`, which also
        returns the protocol records; use that to get them.

        Args:
            generators: role -> generator name -> module (eval mode).
            device: where to run.
            cache_dir: folder for cached real-image features, or None.

        Returns:
            generator name -> role -> {metric: value}; empty when the family has none.
        """
        from ..metrics.registry import evaluate_generators
        return evaluate_generators(self, generators, device, cache_dir)["metrics"]

    # --- state ----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Training state the family keeps (image pools); saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (nothing to restore by default)."""

    def reset_state(self) -> None:
        """Forget the training state (empty the image pools): every training stage starts afresh,
        so a run resumed at a stage boundary matches an uninterrupted one."""

"""Every check that can fail a run, made before stage 1 trains.

A mistake in a recipe must cost seconds, not the hours of stage 1: :func:`preflight` runs the
checks that would otherwise surface in stage 2 (a budget the sparse model cannot reach), stage 3
(discriminator layers, mode settings, classifier files), export or evaluation (missing evaluator
files, validation images), and raises the first problem as a one-line
:class:`~gancompress.errors.GanCompressError`. It builds nothing on the training device: the
shape checks run on the ``meta`` device and the MAC counts on small CPU nets.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config.sections import Recipe
from ..errors import GanCompressError, MissingFileError, RecipeError
from ..export.onnx_file import onnx_available
from ..families.base import Family
from ..method.classifier import load_classifiers
from ..method.discriminators.modes import make_mode
from ..metrics.macs import count_macs
from ..metrics.runtimes import get_runtime
from ..system import distributed
from ..system.optim import resolve_amp
from ..system.threads import available_cores
from .latency_budget import check_runtime
from .stages.distill import d_layer_points


def preflight(family: Family, recipe: Recipe, device: torch.device) -> None:
    """Raise the first user error a run of ``recipe`` on ``device`` would meet.

    Args:
        family: the family adapter built from ``recipe``.
        recipe: the resolved recipe.
        device: the training device.
    """
    check_device(recipe, device)
    check_route(family, recipe)
    check_stage_settings(recipe)
    family.check_recipe()
    check_budgets(family, recipe)
    check_stage3(family, recipe)
    check_files(recipe)
    check_eval_runtimes(recipe)
    family.check_data()


def check_device(recipe: Recipe, device: torch.device) -> None:
    """Precision and SyncBatchNorm against the device; DataLoader workers against the machine."""
    resolve_amp(recipe.train.amp, device)
    if recipe.train.sync_bn and distributed.world_size() > 1 and device.type != "cuda":
        raise RecipeError("train.sync_bn: SyncBatchNorm runs on CUDA devices only; set train.sync_bn: false "
                          "for processes on the CPU")
    cores = available_cores()
    if recipe.data.num_workers is not None and recipe.data.num_workers > 4 * cores:
        raise RecipeError(f"data.num_workers: {recipe.data.num_workers} worker processes on a machine with "
                          f"{cores} cores would only compete for them; choose at most {cores}")


def check_stage_settings(recipe: Recipe) -> None:
    """Settings that only make sense together."""
    if (recipe.route == "scratch" and recipe.distill.teacher != "scratch"
            and recipe.model.ngf_teacher != recipe.model.ngf_student):
        raise RecipeError(f"distill.teacher: '{recipe.distill.teacher}' continues the stage-1 model, so "
                          "model.ngf_teacher must equal model.ngf_student; use distill.teacher: scratch")


def check_route(family: Family, recipe: Recipe) -> None:
    """A pretrained model's route: settings that fit it, and files that fit the recipe's nets."""
    p = recipe.pretrained
    if not p.generators:
        if p.discriminators:
            raise RecipeError("pretrained.discriminators: set pretrained.generators too (the discriminators judge "
                              "the pretrained generators)")
        return
    if recipe.distill.teacher == "scratch":
        raise RecipeError("distill.teacher: scratch re-initialises the teacher and would throw away "
                          "pretrained.generators; use frozen (the cheapest) or continue")
    if recipe.route != "pretrained-scratch" and recipe.model.ngf_student != recipe.model.ngf_teacher:
        raise RecipeError(f"model.ngf_student: with pretrained.sparse: {p.sparse} the sparse model is the pretrained "
                          f"generator, so it must be as wide (model.ngf_teacher {recipe.model.ngf_teacher}); set "
                          f"model.ngf_student: {recipe.model.ngf_teacher}, or pretrained.sparse: scratch to train a "
                          "narrower sparse model")
    from ..pretrained.loading import check_pretrained
    check_pretrained(family, p.generators, p.discriminators, ngf=recipe.model.ngf_teacher)


def check_budgets(family: Family, recipe: Recipe) -> None:
    """Each MACs budget must lie below the sparse model's MACs (pruning only removes channels); a
    latency budget's runtime must be installed (whether it is reachable, ``--dry-run`` measures)."""
    for n in family.generator_names:
        budget = recipe.prune.budget_for(n)
        if budget.is_latency:
            check_runtime(budget)
            continue
        example = family.example_input(n, 1)
        teacher = count_macs(family.build_generator(n, recipe.model.ngf_teacher), example).complete
        sparse = (teacher if recipe.model.ngf_student == recipe.model.ngf_teacher else
                  count_macs(family.build_generator(n, recipe.model.ngf_student), example).complete)
        macs = budget.macs(teacher)
        if macs >= sparse:
            raise RecipeError(
                f"prune.budget: {budget} for generator {n} is {macs / 1e9:.4g} GMACs, not below the sparse "
                f"model's {sparse / 1e9:.4g} GMACs (model.ngf_student {recipe.model.ngf_student}); lower the "
                "budget or raise model.ngf_student")


def check_eval_runtimes(recipe: Recipe) -> None:
    """Every runtime the report times (``eval.runtimes``) is installed, with the ONNX exporter for the
    ONNX runtimes: a missing package must fail now, not at evaluation after hours of training."""
    if not recipe.eval.latency:
        return
    for name in recipe.eval.runtimes:
        try:
            runtime = get_runtime(name)
        except GanCompressError as e:
            raise RecipeError(f"eval.runtimes: {e}; or drop {name} from eval.runtimes") from None
        if runtime.needs_onnx and not onnx_available():
            raise RecipeError(f"eval.runtimes: {name} times exported ONNX files, and the onnx package is not "
                              f"installed: pip install 'gancompress[onnx]', or drop {name} from eval.runtimes")


def check_stage3(family: Family, recipe: Recipe) -> None:
    """The student discriminator's mode, the distilled D layers and the classifiers, on the CPU."""
    mode = make_mode(recipe.discriminator, seed=recipe.seed, vgg19_weights=recipe.eval.vgg19_weights)
    mode.check(family, recipe.model.ngf_student)
    for n in family.generator_names:
        d_layer_points(family.build_discriminator(n), recipe.distill.d_layers, family.name)
    load_classifiers(recipe.classifier.paths, family.generator_names, torch.device("cpu"))


def check_files(recipe: Recipe) -> None:
    """Evaluator files the recipe names must exist now, not when the run is evaluated: the message
    says which file, where it usually comes from, and which key to set."""
    from ..metrics.drn import DRN_D_105_FILENAME, DRN_D_105_URL
    from ..metrics.extractors import INCEPTION_FILENAME, INCEPTION_URL, check_fid_extractor
    from ..nets.vgg import WEIGHTS_FILE, WEIGHTS_URL

    sources = {
        "eval.segmenter": (recipe.eval.segmenter,
                           f"{DRN_D_105_FILENAME} from {DRN_D_105_URL} (published Cityscapes mIoU), or one made by "
                           "gancompress train-segmenter; set eval.segmenter: '' to train without mIoU"),
        "eval.inception_weights": (recipe.eval.inception_weights, f"{INCEPTION_FILENAME} from {INCEPTION_URL}; set "
                                   "eval.inception_weights: '' to train without FID"),
        "eval.vgg19_weights": (recipe.eval.vgg19_weights, f"torchvision's {WEIGHTS_FILE} from {WEIGHTS_URL}"),
        "eval.fid_extractor": (recipe.eval.fid_extractor, "a demo's features.pt (gancompress make-demo-data FAMILY), "
                               "or your own TorchScript feature extractor with eval.trust_torchscript: true"),
    }
    for key, (path, source) in sources.items():
        if path and not Path(path).exists():
            raise MissingFileError(f"{key}: {path} does not exist; it is usually {source}; put the file there or "
                                   f"change {key}")
    if recipe.eval.fid_extractor:
        # An untrusted TorchScript file is refused now, not at evaluation after training.
        check_fid_extractor(recipe.eval.fid_extractor, trusted=recipe.eval.trust_torchscript)

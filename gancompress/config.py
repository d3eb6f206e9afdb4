"""Recipes: typed, frozen dataclasses loaded from YAML.

A recipe is one YAML file; every key is checked against the dataclasses below (and, for the
``model`` section, against the family's own dataclass). Unknown keys, missing required keys,
wrong types and out-of-range values raise :class:`RecipeError` naming the file and the key path,
e.g. ``recipes/x.yaml: distill.gamma_t: expected a number, got 'abc'``.

Dotted overrides (``--set distill.gamma_t=1e3``) are applied to the raw mapping before the check,
so they obey the same rules. Relative paths in a recipe are taken relative to the working
directory the command runs in.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple, Union

import yaml

from .errors import RecipeError

Budget = Union[float, str, Dict[str, Union[float, str]]]


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict:
    return {"range": (lo, hi, lo_open)}


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how a batch is made. Family-specific keys are ignored by others."""

    root: str = ""
    train_split: str = "train"
    eval_split: str = "val"
    direction: Literal["AtoB", "BtoA"] = "AtoB"
    load_size: int = field(default=286, metadata=_range(1))
    crop_size: int = field(default=256, metadata=_range(1))
    center_crop: int = field(default=0, metadata=_range(0))
    flip: bool = True
    pairing: Literal["random", "serial"] = "random"
    batch_size: int = field(default=1, metadata=_range(1))
    eval_batch_size: int = field(default=1, metadata=_range(1))
    num_workers: int = field(default=2, metadata=_range(0))
    max_items: int = field(default=0, metadata=_range(0))
    on_bad_image: Literal["error", "skip"] = "error"


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and loop settings shared by every training stage."""

    pretrain_epochs: int = field(default=0, metadata=_range(0))
    lr_g: float = field(default=2e-4, metadata=_range(0, lo_open=True))
    lr_d: float = field(default=2e-4, metadata=_range(0, lo_open=True))
    beta1: float = field(default=0.5, metadata=_range(0, 1))
    beta2: float = field(default=0.999, metadata=_range(0, 1))
    gan_loss: Literal["hinge", "lsgan", "vanilla"] = "hinge"
    log_every: int = field(default=50, metadata=_range(1))
    checkpoint_every: int = field(default=500, metadata=_range(1))
    keep_checkpoints: int = field(default=3, metadata=_range(1))
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
    l1_lambda: Optional[float] = field(default=None, metadata=_range(0))
    epochs: Optional[int] = field(default=None, metadata=_range(1))


@dataclass(frozen=True)
class PruneConfig:
    """Stage 2: prune to a MACs budget (METHOD 1.2).

    ``budget`` is a number of GMACs (``3.0``), a ratio of the teacher's MACs written as a
    percentage string (``"25%"``), or a mapping from generator name to either, for families with
    several generators (``{AtoB: 2.4, BtoA: 2.7}``).
    """

    budget: Budget = "50%"
    tolerance: float = field(default=0.02, metadata=_range(0, 1, lo_open=True))
    round_to: int = field(default=1, metadata=_range(1))
    inherit_weights: bool = False


@dataclass(frozen=True)
class DistillConfig:
    """Stage 3: online collaborative distillation (METHOD 1.3 and 3)."""

    teacher: Literal["scratch", "continue", "frozen"] = "scratch"
    epochs_const: int = field(default=100, metadata=_range(0))
    epochs_decay: int = field(default=100, metadata=_range(0))
    gamma_m: float = field(default=1.0, metadata=_range(0))
    gamma_t: float = field(default=1.0, metadata=_range(0))
    d_layers: Tuple[int, ...] = (2, 4)


@dataclass(frozen=True)
class DMDConfig:
    """DMD's dynamic mask (METHOD 5). The appendix leaves these open; the defaults are ours."""

    placement: Literal["feature", "input", "head"] = "feature"
    layer: int = field(default=2, metadata=_range(1))              # d, 1-based among D's mask points
    mask_ratio: float = field(default=0.3, metadata=_range(0, 1))  # fraction of mask elements zeroed
    # lambda: mask on while R_t > lambda. An element mask keeping a share k of evenly spread
    # features gives R_t ~ sqrt(k) (0.84 for the default ratio), so lambda sits there: the mask goes
    # on when the dropped elements carried less than their share of D's feature energy.
    threshold: float = field(default=0.84, metadata=_range(-1, 1))
    samples: int = field(default=8, metadata=_range(1))            # m held samples R_t is measured on
    interval: int = field(default=100, metadata=_range(1))         # n_s iterations between checks
    heads: int = field(default=4, metadata=_range(2))              # k logits for placement 'head'


@dataclass(frozen=True)
class GLeaDConfig:
    """GLeaD's generator-leading reconstruction task for the student's D (METHOD 6)."""

    weight: float = field(default=1.0, metadata=_range(0))  # the appendix gives none; 1 weighs it like D's loss
    distance: Literal["pixel", "perceptual"] = "pixel"      # perceptual: VGG19 features (eval.vgg19_weights)
    width: int = field(default=64, metadata=_range(1))      # channels of the decoder's 1x1 convs


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The student's discriminator (METHOD 2; DMD and GLeaD from METHOD 5-6)."""

    mode: Literal["selective", "plain", "none", "dmd", "selective+dmd", "glead"] = "selective"
    tau: float = field(default=0.5, metadata=_range(0, 1))
    alpha_lr: float = field(default=1e-4, metadata=_range(0, lo_open=True))
    alpha_decay_epochs: int = field(default=100, metadata=_range(1))
    alpha_decay: float = field(default=0.1, metadata=_range(0, 1))
    global_coordination: bool = True
    local_weight: Optional[float] = field(default=None, metadata=_range(0))
    dmd: DMDConfig = DMDConfig()
    glead: GLeaDConfig = GLeaDConfig()


@dataclass(frozen=True)
class ClassifierConfig:
    """Classifier-guided student loss (METHOD 6): ``phi * sum_c L_fool(C(G_S(x)))``.

    ``paths`` are real-vs-generated classifiers made by tools/train_detector.py; 'fool-all' uses
    every one, 'memoryless' only the last (the latest round). No paths: the term is off.
    """

    paths: Tuple[str, ...] = ()
    mode: Literal["fool-all", "memoryless"] = "fool-all"
    phi: float = field(default=0.001, metadata=_range(0))


@dataclass(frozen=True)
class ExportConfig:
    torchscript: bool = True
    onnx: bool = False
    opset: int = field(default=17, metadata=_range(17))


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation after export: metric files the user provides, and how much to measure."""

    max_images: int = field(default=0, metadata=_range(0))
    inception_weights: str = ""   # pt_inception-2015-12-05-6726825d.pth, for FID/KID
    fid_extractor: str = ""       # a TorchScript feature extractor used instead of Inception
    segmenter: str = ""           # a segmenter checkpoint or TorchScript file, for mIoU
    vgg19_weights: str = ""       # torchvision's vgg19-dcbb9e9d.pth, for SRGAN's content loss
    latency: bool = True
    latency_iters: int = field(default=20, metadata=_range(1))


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
    export: ExportConfig = ExportConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = 0
    output_dir: str = "runs"

    @property
    def distill_epochs(self) -> int:
        return self.distill.epochs_const + self.distill.epochs_decay

    @property
    def sparse_epochs(self) -> int:
        """Stage 1 length: the recipe's value, else a tenth of stage 3 (GCC Algorithm 1)."""
        if self.sparse.epochs is not None:
            return self.sparse.epochs
        return max(1, self.distill_epochs // 10)

    @property
    def l1_lambda(self) -> float:
        if self.sparse.l1_lambda is not None:
            return self.sparse.l1_lambda
        return 1e-2 if self.sparse.method == "slimming" else 1e-3


# ----------------------------------------------------------------------------------------------
# Checking a raw mapping against the dataclasses.

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return "a list of " + _type_name(typing.get_args(tp)[0]).replace("a ", "").replace("an ", "") + "s"
    if origin in (dict,):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping of keys"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    return str(tp)


def _convert(tp: Any, value: Any, path: str, where: str) -> Any:
    """Return ``value`` converted to ``tp`` or raise RecipeError naming ``path``."""

    def fail(expected: str | None = None) -> RecipeError:
        return RecipeError(f"{where}: {path}: expected {expected or _type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path, where)
            except RecipeError as exc:
                errors.append(exc)
        raise fail()
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, bool):
            raise fail()
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            # YAML 1.1 reads "1e3" (no dot) as a string; accept any plain numeric string.
            try:
                number = float(value)
            except ValueError:
                raise fail() from None
        else:
            raise fail()
        if not math.isfinite(number):
            raise fail("a finite number")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    if origin is Literal:
        if value in typing.get_args(tp) and isinstance(value, str):
            return value
        raise fail()
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise fail()
        item_tp = typing.get_args(tp)[0]
        items = [_convert(item_tp, v, f"{path}[{i}]", where) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict) or not value:
            raise fail("a non-empty mapping")
        key_tp, val_tp = typing.get_args(tp)
        return {str(k): _convert(val_tp, v, f"{path}.{k if str(k).isidentifier() else repr(k)}", where)
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path, where)
    raise TypeError(f"unsupported recipe type {tp!r} at {path}")


def _check_range(f: dataclasses.Field, value: Any, path: str, where: str) -> None:
    if "range" not in f.metadata or value is None or isinstance(value, bool):
        return
    lo, hi, lo_open = f.metadata["range"]
    if lo is not None and (value < lo or (lo_open and value == lo)):
        op = ">" if lo_open else ">="
        raise RecipeError(f"{where}: {path}: must be {op} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise RecipeError(f"{where}: {path}: must be <= {hi}, got {value!r}")


def build_dataclass(cls: type, raw: Any, path: str, where: str, overrides_types: dict | None = None):
    """Build dataclass ``cls`` from the mapping ``raw``; errors name ``where`` and the key path.

    Args:
        cls: a frozen dataclass type.
        raw: the mapping read from YAML (``None`` means an empty mapping).
        path: the key path of ``raw`` inside the recipe ('' for the top level).
        where: the recipe file name, for messages.
        overrides_types: optional field name -> type replacing the declared type (used for the
            family-specific ``model`` section).
    """
    prefix = f"{path}." if path else ""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: {path or '<top level>'}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    if overrides_types:
        hints.update(overrides_types)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            valid = ", ".join(sorted(fields))
            shown = key if isinstance(key, str) and key.isidentifier() else repr(key)
            raise RecipeError(f"{where}: {prefix}{shown}: unknown key (valid keys here: {valid})")
    kwargs = {}
    for name, f in fields.items():
        key_path = f"{prefix}{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"{where}: {key_path}: required key is missing")
            if dataclasses.is_dataclass(hints[name]) and not dataclasses.is_dataclass(f.default):
                kwargs[name] = build_dataclass(hints[name], {}, key_path, where)
            continue
        value = _convert(hints[name], raw[name], key_path, where)
        _check_range(f, value, key_path, where)
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        problem = check()
        if problem:
            raise RecipeError(f"{where}: {prefix}{problem}")
    return obj


def _apply_override(raw: dict, assignment: str, where: str) -> None:
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r}: expected KEY.PATH=VALUE, e.g. distill.gamma_t=1e3")
    key_path, text = assignment.split("=", 1)
    keys = key_path.strip().split(".")
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise RecipeError(f"{where}: --set {key_path}: '{key}' is not a section")
        node = child
    try:
        node[keys[-1]] = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError(f"--set {assignment!r}: value is not valid YAML ({exc.problem})") from None


def _validate_budget(budget: Budget, where: str) -> None:
    values = budget.values() if isinstance(budget, dict) else [budget]
    for value in values:
        try:
            parse_budget(value)
        except ValueError as exc:
            raise RecipeError(f"{where}: prune.budget: {exc}") from None


def parse_budget(value: float | str) -> Tuple[str, float]:
    """Parse one budget: ``3.0`` -> ('gmacs', 3.0); ``"25%"`` -> ('ratio', 0.25)."""
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"expected GMACs (a number) or a percentage like '25%', got {value!r}") from None
        else:
            try:
                ratio = float(text[:-1]) / 100.0
            except ValueError:
                raise ValueError(f"expected a percentage like '25%', got {value!r}") from None
            if not 0.0 < ratio <= 1.0:
                raise ValueError(f"a ratio budget must lie in (0%, 100%], got {value!r}")
            return "ratio", ratio
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a GMACs budget must be a positive number, got {value!r}")
    return "gmacs", float(value)


def load_recipe(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> Recipe:
    """Read, override and check a recipe file.

    Args:
        path: the YAML file.
        overrides: ``KEY.PATH=VALUE`` strings applied before checking.

    Returns:
        The frozen :class:`Recipe`, its ``model`` the family's dataclass.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise RecipeError(f"{where}: recipe file not found (pass the path of a YAML recipe, e.g. recipes/demo/pix2pix.yaml)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{where}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    return recipe_from_dict(raw, where, overrides)


def recipe_from_dict(raw: Any, where: str = "<recipe>", overrides=()) -> Recipe:
    """Check a raw mapping (as read from YAML) and build the :class:`Recipe`."""
    from .families import get_family  # the registry lives with the families

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping of recipe keys at the top level, got {type(raw).__name__}")
    raw = _deep_copy(raw)
    for assignment in overrides:
        _apply_override(raw, assignment, where)
    family_name = raw.get("family")
    if not isinstance(family_name, str):
        raise RecipeError(f"{where}: family: required key, expected one of the family names, got {family_name!r}")
    try:
        family = get_family(family_name)
    except KeyError as exc:
        raise RecipeError(f"{where}: family: {exc.args[0]}") from None
    recipe = build_dataclass(Recipe, raw, "", where, overrides_types={"model": family.ModelConfig})
    _validate_budget(recipe.prune.budget, where)
    if isinstance(recipe.prune.budget, dict):
        names = set(family.generator_names)
        given = set(recipe.prune.budget)
        if given != names:
            raise RecipeError(
                f"{where}: prune.budget: expected one budget for each generator {sorted(names)}, got {sorted(given)}")
    if len(set(recipe.distill.d_layers)) != len(recipe.distill.d_layers) or any(i < 1 for i in recipe.distill.d_layers):
        raise RecipeError(f"{where}: distill.d_layers: expected distinct 1-based layer numbers, got {list(recipe.distill.d_layers)}")
    return recipe


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def recipe_to_dict(recipe: Recipe) -> dict:
    """The resolved recipe as plain YAML-able data (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(recipe)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)

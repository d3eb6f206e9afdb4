"""The run folder: every path a run reads or writes, named in one place.

::

    recipe.yaml            the resolved recipe the weights were trained with
    .lock                  held by the process running the folder (a kernel lock; its PID inside)
    history.jsonl          one line per start or resume (time, command, settings changed)
    history/recipe-<n>.yaml  the recipe before the n-th resume that changed settings
    pretrain/<stage>.pt    optional generator-only pre-training (train.pretrain_epochs > 0)
    sparse/model.pt        stage 1: the sparse generators and discriminators
    pruned/pruned.pt       stage 2: pruned architectures (see method.pruning.architecture_record) + weights
    student/, teacher/     stage 3: rebuildable generator files (export.generator.load_generator)
    checkpoints/           <stage>-<step>.pt, the latest train.keep_checkpoints of each stage
    samples/               PNG grids per epoch: input | teacher | student | target
    metrics.jsonl          losses and diagnostics every train.log_every iterations
    export/                TorchScript and ONNX students (generator.pt/.onnx, or generator_<name>.*)
    cache/                 evaluation caches (real images' features, keyed by their file list)
    detectors/             real-vs-generated classifiers (gancompress train-detector)
    report.json, report.md teacher vs student MACs, params, latency and task metric
    plot_<name>.png        report.md's training curves (with matplotlib: gancompress[plots])

A stage is done when its output file exists. A recipe's ``name`` becomes the folder
``<output_dir>/<name>``, so it must be a safe folder name (:func:`safe_run_name`).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import RecipeError

ROLES = ("teacher", "student")

MAX_NAME = 100
ALLOWED = (f"1 to {MAX_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit "
           "(it names the folder <output_dir>/<name>)")
# \w is Unicode-aware: letters and digits of any script are fine in a folder name.
_NAME = re.compile(r"[^\W_][\w.-]*")


def safe_run_name(name: str, where: str = "<recipe>") -> str:
    """Return ``name`` if it is safe as one folder name, else raise RecipeError.

    Refused: an empty name, one over :data:`MAX_NAME` characters (or 255 bytes of UTF-8),
    ``.``/``..`` or anything starting with a dot, path separators (so ``../x`` and absolute
    paths), spaces, control and other characters outside letters, digits, ``.``, ``_`` and ``-``.

    Args:
        name: the recipe's ``name``.
        where: the recipe file, for the message (``<where>: name: ...``).
    """
    if not isinstance(name, str):
        raise RecipeError(f"{where}: name: expected a string, got {name!r}; use {ALLOWED}")
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    if not name:
        raise RecipeError(f"{where}: name: is empty; use {ALLOWED}")
    if len(name) > MAX_NAME:
        raise RecipeError(f"{where}: name: '{shown}' has {len(name)} characters, more than {MAX_NAME}; use {ALLOWED}")
    if len(name.encode("utf-8", "surrogatepass")) > 255:  # a folder name's limit on common file systems
        raise RecipeError(f"{where}: name: '{shown}' is longer than 255 bytes in UTF-8; use {ALLOWED}")
    if not _NAME.fullmatch(name) or not name.isprintable():
        raise RecipeError(f"{where}: name: '{shown}' is not a plain folder name; use {ALLOWED}")
    return name


class RunDir:
    """The paths of one run folder.

    Args:
        root: the folder (``<output_dir>/<name>`` unless the user chose another).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __str__(self) -> str:
        return str(self.root)

    # --- what the run was started with --------------------------------------------------
    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def history(self) -> Path:
        return self.root / "history.jsonl"

    def archived_recipe(self, n: int) -> Path:
        """The recipe a run had before its ``n``-th resume with changed settings (1-based)."""
        return self.root / "history" / f"recipe-{n}.yaml"

    def archived_recipes(self) -> list[Path]:
        return sorted((self.root / "history").glob("recipe-*.yaml"))

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    # --- stage outputs --------------------------------------------------------------------
    def pretrain(self, stage: str) -> Path:
        """The generators of the pre-training stage ``stage`` ('pretrain_S', 'pretrain_T', ...)."""
        return self.root / "pretrain" / f"{stage}.pt"

    @property
    def sparse(self) -> Path:
        return self.root / "sparse" / "model.pt"

    @property
    def pruned(self) -> Path:
        return self.root / "pruned" / "pruned.pt"

    def generator(self, role: str, name: str) -> Path:
        """The rebuildable generator file of ``role`` ('teacher' or 'student') and generator ``name``."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return self.root / role / f"generator_{name}.pt"

    # --- training -------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, stage: str, step: int) -> Path:
        return self.checkpoints / f"{stage}-{step:09d}.pt"

    def sample_grid(self, stage: str, epoch: int) -> Path:
        """The sample grid after ``epoch`` (1-based) of ``stage``."""
        return self.root / "samples" / f"{stage}-epoch{epoch:04d}.png"

    def sample_grids(self, stage: str) -> list[Path]:
        return sorted((self.root / "samples").glob(f"{stage}-epoch*.png"))

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    # --- export and report ----------------------------------------------------------------
    def export(self, name: str, names: tuple[str, ...], suffix: str) -> Path:
        """The exported student ``name`` with ``suffix`` ('.pt' TorchScript, '.onnx'): one
        generator is ``generator<suffix>``, several are ``generator_<name><suffix>``."""
        stem = "generator" if len(names) == 1 else f"generator_{name}"
        return self.root / "export" / f"{stem}{suffix}"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    def detector(self, role: str, name: str) -> Path:
        """A real-vs-generated classifier trained on generator ``name`` of ``role``."""
        return self.root / "detectors" / f"{role}_{name}.pt"

    def plot(self, name: str) -> Path:
        return self.root / f"plot_{name}.png"

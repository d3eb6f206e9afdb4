"""The run folder: every path a run reads or writes, named in one place.

::

    recipe.yaml            the resolved recipe the weights were trained with
    history.jsonl          one line per start or resume (time, command, settings changed)
    history/recipe-<n>.yaml  the recipe before the n-th resume that changed settings
    pretrain/<stage>.pt    optional generator-only pre-training (train.pretrain_epochs > 0)
    sparse/model.pt        stage 1: the sparse generators and discriminators
    pruned/pruned.pt       stage 2: pruned architectures (see prune.architecture_record) + weights
    student/, teacher/     stage 3: rebuildable generator files (export.load_generator)
    checkpoints/           <stage>-<step>.pt, the latest train.keep_checkpoints of each stage
    samples/               PNG grids per epoch: input | teacher | student | target
    metrics.jsonl          losses and diagnostics every train.log_every iterations
    export/                TorchScript and ONNX students (generator.pt/.onnx, or generator_<name>.*)
    cache/                 evaluation caches (real images' features, keyed by their file list)
    detectors/             real-vs-generated classifiers (gancompress train-detector)
    report.json, report.md teacher vs student MACs, params, latency and task metric

A stage is done when its output file exists.
"""
from __future__ import annotations

from pathlib import Path

ROLES = ("teacher", "student")


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

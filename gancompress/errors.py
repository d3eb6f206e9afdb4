"""User-facing errors.

Every exception here carries a one-line message that names what is wrong and how to fix it;
the command line prints it without a traceback and exits non-zero.
"""


class GanCompressError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class RecipeError(GanCompressError):
    """A recipe key is unknown, missing, of the wrong type or out of range."""


class DataError(GanCompressError):
    """A dataset folder is missing, empty, wrongly laid out or holds an unreadable image."""


class BudgetError(GanCompressError):
    """The pruning search cannot reach the MACs or latency budget within its tolerance."""


class CheckpointError(GanCompressError):
    """A checkpoint is missing, unreadable, unsafe to load or does not match the recipe."""


class MissingFileError(GanCompressError):
    """A file the user must provide (weights, a segmenter, a dataset archive) is absent."""


class NonFiniteLossError(GanCompressError):
    """A loss became NaN or infinite during training."""


class WriteError(GanCompressError):
    """A file could not be written (full disk, read-only folder, no permission)."""

"""Names that become paths: a recipe's ``name`` is the run folder ``<output_dir>/<name>``."""
from __future__ import annotations

import re

from ..errors import RecipeError

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

"""Every generated page, and the generated parts of hand-written ones, rebuilt or checked at once.

Whole pages: docs/reference/recipe.md, commands.md and errors.md, and docs/results/<name>.md for
each results JSON. Parts: a hand-written page (README.md, CHANGELOG.md, docs/*.md) may hold
``<!-- generated:NAME -->`` ... ``<!-- end:NAME -->``; what lies between is rewritten with the
part NAME of :func:`parts` (the demo table, the results index, the package's layers and modules).

``python tools/make_docs.py`` writes what differs (and deletes results pages whose JSON is gone);
``--check`` writes nothing, lists what differs and every broken link, and exits 1 if anything does.
"""
from __future__ import annotations

import argparse
import ast
import os
import re
import textwrap
from pathlib import Path
from typing import Callable

import gancompress

from ..cli import plain_text
from ..commands import COMMANDS, command_module
from ..families import FAMILIES
from . import command_reference, error_index, recipe_reference, results
from .links import broken_links, slug

ROOT = Path(gancompress.__file__).resolve().parents[1]
_PART = re.compile(r"(<!-- generated:(?P<name>[\w-]+)[^>]*-->\n)(?P<body>.*?)(<!-- end:(?P=name) -->)", re.S)


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text())) or ""


def _first_paragraph(doc: str) -> str:
    """The docstring's first paragraph on one line, as Markdown: names in code spans, and angle
    brackets outside them escaped (Markdown would read ``<family>`` as HTML)."""
    text = " ".join(plain_text(doc.split("\n\n")[0], code="`").split())
    pieces = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else p.replace("<", "&lt;").replace(">", "&gt;") for p in pieces)


def _first_sentence(doc: str, limit: int = 200) -> str:
    """The docstring's first sentence; past ``limit`` characters, up to its first ': ' or '; '
    outside parentheses."""
    sentence = re.split(r"(?<=\.)\s+(?=[A-Z])", _first_paragraph(doc), maxsplit=1)[0]
    depth = 0
    for i, char in enumerate(sentence if len(sentence) > limit else ""):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and sentence[i:i + 2] in (": ", "; "):
            sentence = sentence[:i]
            break
    return sentence if sentence.endswith(".") else sentence + "."


def layers(package: Path) -> list[str]:
    """The layer order of the root docstring ('Layers: a, b, ...')."""
    match = re.search(r"^Layers: ([^.]*)\.", _docstring(package / "__init__.py"), re.M)
    return [name.strip() for name in match.group(1).replace("\n", " ").split(",")]


def layers_part(package: Path) -> str:
    """The table of layers: what each holds and what it may import, from the docstrings."""
    order = layers(package)
    lines = ["| layer | holds | may import |", "|---|---|---|"]
    for rank, layer in enumerate(order):
        init = package / layer / "__init__.py"
        path = init if init.is_file() else package / f"{layer}.py"
        doc = _docstring(path)
        declared = re.search(r"^May import: ([^.]*)\.", doc, re.M)
        if declared is not None and declared.group(1).startswith("every layer"):
            allowed = "every layer"
        else:  # a module (errors, cli) follows the order like a subpackage
            names = ([n.strip() for n in declared.group(1).replace("\n", " ").split(",")] if declared
                     else order[:rank])
            allowed = ("nothing" if names in ([], ["nothing"]) else f"`{names[0]}` to `{names[-1]}`"
                       if names == order[:rank] and len(names) > 1 else ", ".join(f"`{n}`" for n in names))
        where = f"`{layer}/`" if init.is_file() else f"`{layer}.py`"
        lines.append(f"| {where} | {_first_paragraph(doc).replace('|', chr(92) + '|')} | {allowed} |")
    return "\n".join(lines)


def modules_part(package: Path) -> str:
    """Every module of the package with the first sentence of its docstring, layer by layer."""
    lines = []
    for layer in layers(package):
        folder = package / layer
        if not folder.is_dir():
            continue
        lines += [f"- `{layer}/`"]
        for path in sorted(folder.rglob("*.py")):
            if path.name != "__init__.py" or path.parent != folder:
                name = path.relative_to(folder).with_suffix("").as_posix().removesuffix("/__init__")
                lines.append(f"  - `{name}`: {_first_sentence(_docstring(path))}")
    return "\n".join(lines)


def layouts_part() -> str:
    """Each family's dataset layout (``Family.layout``, the text its errors give), as a code block."""
    lines = ["```text"]
    for name, family in FAMILIES.items():
        lines += textwrap.wrap(family.layout, 98, initial_indent=f"{name:<9} ", subsequent_indent=" " * 10,
                               break_on_hyphens=False)
    return "\n".join(lines + ["```"])


def run_folder_part(package: Path) -> str:
    """The run folder's files, from :class:`~gancompress.files.rundir.RunDir`'s module docstring."""
    after = _docstring(package / "files" / "rundir.py").split("::\n", 1)[1].splitlines()
    block = []
    for line in after:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    return "```text\nruns/<name>/\n" + textwrap.indent(textwrap.dedent("\n".join(block)).strip("\n"), "  ") + "\n```"


def weights_part() -> str:
    """The evaluator and loss weight files: which file, what for, where from (the code's constants)."""
    from ..metrics import drn, extractors
    from ..nets import vgg

    rows = [(drn.DRN_D_105_FILENAME, "eval.segmenter", "mIoU with DRN-D-105 (published Cityscapes figures)",
             drn.DRN_D_105_URL),
            (extractors.INCEPTION_FILENAME, "eval.inception_weights", "FID and KID (torch-fidelity's Inception)",
             extractors.INCEPTION_URL),
            (vgg.WEIGHTS_FILE, "eval.vgg19_weights", "SRGAN's VGG content loss, GLeaD's perceptual distance",
             vgg.WEIGHTS_URL)]
    lines = ["| file | recipe key | for | download from |", "|---|---|---|---|"]
    lines += [f"| `{f}` | `{key}` | {what} | {url} |" for f, key, what, url in rows]
    return "\n".join(lines)


def exit_statuses_part() -> str:
    """Every exit status of the command line (``cli.EXIT_STATUSES``), as a table."""
    from ..cli import EXIT_STATUSES

    return "\n".join(["| status | meaning |", "|---|---|"]
                     + [f"| {code} | {text} |" for code, text in EXIT_STATUSES.items()])


def commands_part(page_dir: Path, root: Path) -> str:
    """A table of the subcommands (the COMMANDS registry and each module's HELP), linked to their help."""
    reference = Path(os.path.relpath(root / "docs" / "reference" / "commands.md", page_dir)).as_posix()
    lines = ["| command | what it does |", "|---|---|"]
    for name in COMMANDS:
        lines.append(f"| [`{name}`]({reference}#{slug('gancompress ' + name)}) | {command_module(name).HELP} |")
    return "\n".join(lines)


def parts(root: Path) -> dict[str, Callable[[Path], str]]:
    """Part name -> function of the page's folder giving the part's text (links relative to it)."""
    package, folder = root / "gancompress", root / "docs" / "results"

    def prefix(page_dir: Path) -> str:
        return Path(os.path.relpath(folder, page_dir)).as_posix() + "/"

    return {"demo-table": lambda page_dir: results.demo_part(folder, prefix(page_dir)),
            "results-index": lambda page_dir: results.index_part(folder, prefix(page_dir)),
            "layouts": lambda page_dir: layouts_part(),
            "weights": lambda page_dir: weights_part(),
            "exit-statuses": lambda page_dir: exit_statuses_part(),
            "commands": lambda page_dir: commands_part(page_dir, root),
            "paper-recipes": lambda page_dir: recipe_reference.recipes_part(root / "recipes"),
            "demo-recipes": lambda page_dir: recipe_reference.recipes_part(root / "recipes" / "demo"),
            "run-folder": lambda page_dir: run_folder_part(package),
            "layers": lambda page_dir: layers_part(package),
            "modules": lambda page_dir: modules_part(package)}


def hand_written(root: Path) -> list[Path]:
    """The Markdown pages written by hand (generated parts aside)."""
    return [p for p in [root / "README.md", root / "CHANGELOG.md", *sorted((root / "docs").glob("*.md"))]
            if p.is_file()]


def fill(text: str, page_dir: Path, root: Path) -> str:
    """``text`` with every generated part rewritten; ValueError names an unknown part."""
    known = parts(root)

    def replace(m: re.Match) -> str:
        if m.group("name") not in known:
            raise ValueError(f"unknown generated part {m.group('name')!r} (known: {', '.join(known)})")
        return m.group(1) + known[m.group("name")](page_dir).rstrip("\n") + "\n" + m.group(4)

    return _PART.sub(replace, text)


def expected(root: Path = ROOT) -> dict[Path, str]:
    """Every page that make_docs writes, with the text it would write."""
    docs = root / "docs"
    out = {docs / "reference" / "recipe.md": recipe_reference.render(),
           docs / "reference" / "commands.md": command_reference.render(),
           docs / "reference" / "errors.md": error_index.render(root / "gancompress")}
    out.update(results.pages(docs / "results"))
    for page in hand_written(root):
        out[page] = fill(page.read_text(), page.parent, root)
    return out


def stale(root: Path = ROOT, pages: dict[Path, str] | None = None) -> list[str]:
    """What differs from what make_docs would write (``pages``, default :func:`expected`), one line
    each; empty when every page is current."""
    pages = expected(root) if pages is None else pages
    out = [f"{p.relative_to(root)} (differs)" if p.is_file() else f"{p.relative_to(root)} (missing)"
           for p, text in pages.items() if not p.is_file() or p.read_text() != text]
    out += [f"{p.relative_to(root)} (its JSON is gone: delete it)" for p in results.orphans(root / "docs" / "results")]
    return out


def links(root: Path = ROOT, pages: dict[Path, str] | None = None) -> list[str]:
    """Every broken relative link or anchor of the Markdown pages as make_docs would write them."""
    pages = expected(root) if pages is None else pages
    markdown = set(pages) | set(root.glob("*.md")) | set((root / "docs").rglob("*.md"))
    return [problem for page in sorted(markdown) for problem in broken_links(page, pages)]


def write(root: Path = ROOT) -> list[str]:
    """Write every page that differs, delete orphaned results pages; returns what changed."""
    changed = []
    for page, text in expected(root).items():
        if not page.is_file() or page.read_text() != text:
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(text)
            changed.append(f"wrote {page.relative_to(root)}")
    for page in results.orphans(root / "docs" / "results"):
        page.unlink()
        changed.append(f"deleted {page.relative_to(root)} (its JSON is gone)")
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python tools/make_docs.py [--check]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="make_docs.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; list the pages that differ and the broken links, exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        pages = expected()
        problems = stale(pages=pages) + [f"broken link: {p}" for p in links(pages=pages)]
        for line in problems:
            print(line)
        print("run: python tools/make_docs.py" if problems else "every generated page is current; every link resolves")
        return 1 if problems else 0
    for line in write():
        print(line)
    return 0

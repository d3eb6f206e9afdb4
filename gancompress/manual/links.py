"""Relative links and #anchors of Markdown pages, checked the way GitHub resolves them.

A heading's anchor is GitHub's: the heading's text (code spans and link texts kept, markup
dropped), lowercased, punctuation other than ``-`` and ``_`` removed, spaces turned into ``-``,
and ``-1``, ``-2``, ... appended to repeats within a page.
"""
from __future__ import annotations

import re
from pathlib import Path

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE_SPAN = re.compile(r"(`+)(?:.+?)\1")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks, inline code spans blanked."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text (without its repeat suffix)."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a page, repeats numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(page: Path, pages: dict[Path, str] | None = None) -> list[str]:
    """Every relative link of ``page`` that points at no file, or at no heading of its target.

    Args:
        page: the Markdown file.
        pages: texts to use instead of the files on disk (pages about to be written), by path.

    Returns:
        'page:line: target (why)' for each broken link; absolute URLs are not checked.
    """
    pages = {p.resolve(): t for p, t in (pages or {}).items()}

    def read(path: Path) -> str:
        return pages[path] if path in pages else path.read_text()

    problems = []
    for number, line in prose_lines(read(page.resolve())):
        for match in _LINK.finditer(line):
            target = match.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            where = (page.parent / path_part).resolve() if path_part else page.resolve()
            if where not in pages and not where.exists():
                problems.append(f"{page}:{number}: {target} (no such file)")
            elif anchor and where.suffix == ".md" and anchor not in anchors(read(where)):
                problems.append(f"{page}:{number}: {target} (no heading #{anchor} in {where.name})")
    return problems

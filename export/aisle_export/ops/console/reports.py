"""Experiment reports on disk (``aisle experiment report --out DIR`` writes ``report.md``,
``report.json`` and ``report.png``): listed, rendered and served without leaving their directory.

Markdown is rendered with markdown-it-py with raw HTML off (a report's text can never inject script
into the page); a path is served only if it resolves inside the reports directory and is a ``.md``,
``.png`` or ``.json`` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SERVED_SUFFIXES = (".md", ".png", ".json")
#: Reports listed at most (the newest first): a directory of thousands is a mistake, not a console page.
MAX_REPORTS = 200


class NotAReport(ValueError):
    """A path outside the reports directory, or not a report file."""


def list_reports(root: Path) -> list[dict[str, Any]]:
    """Every ``.md`` under ``root`` (newest first), with the ``.png`` beside it of the same stem."""
    found = sorted(root.rglob("*.md"), key=lambda p: p.stat().st_mtime, reverse=True)[:MAX_REPORTS]
    out = []
    for md in found:
        images = sorted(p for p in md.parent.glob(f"{md.stem}*.png"))
        out.append(
            {
                "path": md.relative_to(root).as_posix(),
                "title": _title(md),
                "images": [p.relative_to(root).as_posix() for p in images],
            }
        )
    return out


def _title(md: Path) -> str:
    for line in md.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return md.stem


def resolve(root: Path, relative: str) -> Path:
    """``relative`` inside ``root``; ``NotAReport`` for anything else (``..``, links out, other files)."""
    base = root.resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base) or path.suffix not in SERVED_SUFFIXES or not path.is_file():
        raise NotAReport(f"path {relative!r} is not a report file (.md, .png, .json) under the reports directory")
    return path


def render(path: Path) -> str:
    """A report's Markdown as HTML (tables on, raw HTML off)."""
    from markdown_it import MarkdownIt

    return str(MarkdownIt("commonmark", {"html": False}).enable("table").render(path.read_text(encoding="utf-8")))

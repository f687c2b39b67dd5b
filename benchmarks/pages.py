"""Writing a benchmark's table into a docs page, between the markers that hold its place."""

from __future__ import annotations

from pathlib import Path

from scr_ros.fileio import atomic_write_text


def write_between_markers(page: Path, begin: str, end: str, body: str) -> None:
    """Replace what stands between ``begin`` and ``end`` in ``page`` with ``body`` (atomically);
    a page without both markers is refused, so a table is never appended where nobody reads it."""
    text = page.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise SystemExit(f"{page} has no benchmark markers ({begin!r} ... {end!r})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(page, f"{head}{begin}\n{body}{end}{tail}")

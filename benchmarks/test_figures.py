#!/usr/bin/env python3
"""The figures the test suite's trained maps measured, side by side by training precision.

    SCR_TEST_PRECISION=fp32 SCR_TEST_FIGURES=fp32.jsonl python -m pytest -q test
    python benchmarks/test_figures.py fp32.jsonl [bf16.jsonl ...] [--doc docs/development.md]

Each input is what the ``figure`` fixture (test/conftest.py) appended during one run: a JSON line
per figure with the test, its name, the value, the thread count, the training precision and the
CPU. A column is one (precision, threads, CPU) found in the files; a figure a test records more
than once (the inliers of each frame) shows its range. The bound each figure is held to is in
the test beside it, with the figures of both precisions.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pages import publish  # noqa: E402

BEGIN = "<!-- test figures: written by benchmarks/test_figures.py -->"
END = "<!-- end of test figures -->"


def read_lines(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{n}: not a JSON line ({e})") from e
            missing = {"test", "figure", "value"} - set(row)
            if missing:
                raise SystemExit(f"{path}:{n}: no {', '.join(sorted(missing))}")
            rows.append(row)
    if not rows:
        raise SystemExit("no figures in " + ", ".join(map(str, paths)))
    return rows


def column_of(row: dict) -> str:
    cpu = row.get("cpu", "CPU not recorded")
    return f"{row.get('precision', 'precision not recorded')}, {row.get('threads', '?')} threads, {cpu}"


def cell(values: list) -> str:
    def fmt(v) -> str:
        if isinstance(v, int):  # counts, and bools as 0 / 1
            return str(int(v))
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"

    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(min(values))} to {fmt(max(values))} ({len(values)})"


def table(rows: list[dict]) -> str:
    columns = sorted({column_of(r) for r in rows})
    values: dict[tuple[str, str], dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        values[(r["test"], r["figure"])][column_of(r)].append(r["value"])
    lines = ["| test | figure | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for (test, name), by_column in sorted(values.items()):
        short = test.removeprefix("test/")
        cells = [cell(by_column[c]) if by_column.get(c) else "" for c in columns]
        lines.append(f"| `{short}` | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("figures", type=Path, nargs="+", metavar="FILE.jsonl", help="SCR_TEST_FIGURES files")
    ap.add_argument("--doc", type=Path, default=None, help="write the table between its markers in this page")
    ap.add_argument("--command", default=None, help="how the files were made, for the page's banner")
    args = ap.parse_args(argv)
    rows = read_lines(args.figures)
    banner = f"Written by `python benchmarks/test_figures.py {' '.join(map(str, args.figures))}`"
    if args.command:
        banner += f" from {args.command}"
    publish(banner + ".\n\n" + table(rows), args.doc, BEGIN, END, "test figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What several benchmarks share: measuring the rows still missing from a JSON, writing a table
into a docs page between the markers that hold its place, frames held in memory, and timing a
relocalizer over them."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from scr_ros.evaluation.localization import FrameResult, localize_frames
from scr_ros.fileio import atomic_write_json, replace_between_markers


def measure_missing(
    json_path: Path,
    rows: list[dict],
    combinations: Iterable[tuple[str, ...]],
    key: Callable[[dict], tuple[str, ...]],
    measure: Callable[..., dict],
    summary: Callable[[dict], str],
) -> list[dict]:
    """Measure each combination not yet among ``rows`` (by ``key``), appending each row to
    ``rows`` and saving them to ``json_path`` as soon as it is measured, so an interrupted run
    keeps what it measured and ``--resume`` continues it."""
    done = {key(r) for r in rows}
    for combination in combinations:
        if combination in done:
            continue
        print(" / ".join(combination) + " ...", file=sys.stderr, flush=True)
        row = measure(*combination)
        rows.append(row)
        atomic_write_json(json_path, rows)
        print("  " + summary(row), file=sys.stderr, flush=True)
    return rows


def write_table(page: Path, begin: str, end: str, body: str, name: str = "benchmark") -> None:
    """The benchmark's text between its markers in ``page``; a page without them is refused."""
    replace_between_markers(page, begin, end, body, name)


def publish(text: str, page: Path | None, begin: str, end: str, name: str) -> None:
    """Print the benchmark's text and, given a page, write it there between its markers."""
    print(text)
    if page is not None:
        write_table(page, begin, end, text, name)


class HeldFrame:
    """A dataset frame whose image is decoded once, so a rate measured over it is the
    relocalizer's alone (the node gets its images decoded in memory too)."""

    def __init__(self, frame) -> None:
        self.name, self.pose, self.camera = frame.name, frame.pose, frame.camera
        self.image = frame.load_image()

    def load_image(self) -> np.ndarray:
        return self.image


def timed_localization(reloc, frames, pipelined: bool = False, repeat: int = 1) -> tuple[list[FrameResult], float]:
    """``localize_frames`` over ``frames`` after a three-frame warm-up (kernels, caches, cuDNN's
    choices): the results and the seconds of the fastest of ``repeat`` runs (the poses are the
    same each time)."""
    localize_frames(reloc, frames[:3], pipelined=pipelined)
    seconds = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        results = localize_frames(reloc, frames, pipelined=pipelined)
        seconds = min(seconds, time.perf_counter() - t0)
    return results, seconds


def results_page_head(title: str, script: str, command: str, results: dict, note: str = "") -> list[str]:
    """The first lines of a docs/results page: its title, the command that wrote it (also as a
    comment, for whoever regenerates it), the commit, machine and date it was measured on."""
    return [
        f"# {title}",
        "",
        f"<!-- written by benchmarks/{script}; command: {command} -->",
        f"Command: `{command}`; commit {results['commit']}; machine: {results['machine']}; {results['date']}. "
        f"Nothing else ran beside it.{' ' + note if note else ''}",
        "",
    ]

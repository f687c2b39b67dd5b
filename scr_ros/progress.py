"""Progress reports of long work, and the terminal bar that shows them.

Long steps (filling the training buffer, training, rendering, converting a bag) call a
``progress(Progress)`` callback; the CLI passes a :class:`ProgressBar`, the mapping node a
function that logs, tests a list's ``append``. ``cancel`` arguments take anything with
``is_set()`` (a :class:`threading.Event`).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Callable, Protocol


@dataclass
class Progress:
    """One report: ``step`` of ``total`` of ``stage`` (``buffer``, ``train``, ``cloud``, ...)."""

    stage: str
    step: int
    total: int
    elapsed_s: float
    loss: float | None = None
    message: str = ""
    # Where the whole job stands (0..1) when the stage is one of several (map building: the
    # builder weighs each stage by its usual share of the time); never decreases within a job.
    overall: float | None = None

    @property
    def fraction(self) -> float:
        return self.step / max(self.total, 1)

    @property
    def eta_s(self) -> float | None:
        return self.elapsed_s * (self.total - self.step) / self.step if self.step else None


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


# What the bar calls each stage.
STAGE_NAMES = {
    "pool": "rendering pool",
    "pretrain": "pretraining",
    "pca": "sampling features for PCA",
    "global": "global encodings",
    "buffer": "filling buffer",
    "labels": "first stage for labels",
    "partitions": "training partition classifier",
    "classifier": "training keypoint classifier",
    "finetune": "fine-tuning head on keypoints",
    "train": "training head",
    "cloud": "map point cloud",
    "render": "rendering",
    "localize": "localizing",
    "register": "registering added frames",
    "convert": "writing bag",
    "record": "reading bag",
}


def console_progress() -> bool:
    """Whether long work shows a progress bar: when the library's log shows INFO lines (the
    ``scr`` command sets that up; a program using the library decides with :mod:`logging`)."""
    return logging.getLogger("scr_ros").isEnabledFor(logging.INFO)


class ProgressBar:
    """A tqdm bar on stderr that follows :class:`Progress` reports stage by stage.

    ``enabled=False`` makes it a no-op, so callers need not branch; by default it is shown when
    :func:`console_progress` says so.
    """

    def __init__(self, enabled: bool | None = None):
        self.enabled = console_progress() if enabled is None else enabled
        self.bar = None
        self.stage = None
        self.last_refresh = 0.0
        # A log file or CI console gets a line per refresh, so refresh it rarely.
        self.interval = 0.5 if sys.stderr.isatty() else 15.0

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if p.stage != self.stage:
            self.close()
            self.stage = p.stage
            unit = "it" if p.stage in ("train", "pretrain") else "img"
            self.bar = tqdm(
                total=p.total,
                desc=STAGE_NAMES.get(p.stage, p.stage),
                unit=unit,
                file=sys.stderr,
                dynamic_ncols=True,
                mininterval=0.5,
            )
        self.bar.total = p.total
        self.bar.n = p.step
        post = {}
        if p.loss is not None:
            post["loss"] = f"{p.loss:.3f}"
        if p.message:
            post["info"] = p.message
        if post:
            self.bar.set_postfix(post, refresh=False)
        now = time.monotonic()
        if now - self.last_refresh >= self.interval or p.step >= p.total:
            self.last_refresh = now
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.stage = None


def counter(report: Callable[[Progress], None], stage: str) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback that reports ``stage`` to ``report`` with the time since now
    (for steps that count items rather than build :class:`Progress` themselves)."""
    t0 = time.perf_counter()
    return lambda done, total: report(Progress(stage, done, total, time.perf_counter() - t0))

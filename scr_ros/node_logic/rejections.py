"""Why a node refused its input, counted and logged per reason, without ROS.

One shared log throttle hides every reason but the first: a camera that sends the wrong encoding
while camera_info is also missing would only ever report one of the two. Here each *kind* of
reason (its text with the numbers masked, so "image is 640x480 ..." and "image is 320x240 ..."
are one kind) has its own throttle and its own count, and the counts go into the diagnostics.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Callable

_SIZE = re.compile(r"\b\d+x\d+\b")
# A number on its own, not part of a name such as 'yuv422' or 'mono16'.
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![A-Za-z_\d])")


def reason_kind(reason: str) -> str:
    """``reason`` with every number (and WxH size) replaced by ``#``: the kind of refusal."""
    return _NUMBER.sub("#", _SIZE.sub("#x#", reason))


class Rejections:
    """Counts refusals by kind and decides which to log now.

    :meth:`add` returns the line to log, or ``None`` while that kind is throttled (at most one
    line per kind every ``period_s``; the next line says how many were not logged). At most
    ``max_kinds`` kinds are tracked by name; further kinds are counted as ``other``.
    """

    def __init__(self, period_s: float = 5.0, max_kinds: int = 12, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s, self.max_kinds, self.clock = period_s, max_kinds, clock
        self.counts: dict[str, int] = {}
        self.total = 0
        self.last = ""  # the most recent reason, verbatim
        self._logged: dict[str, tuple[float, int]] = {}  # kind -> (last log time, count then)
        self._lock = threading.Lock()

    def add(self, where: str, reason: str) -> str | None:
        """Count one refusal of ``where`` (e.g. "image skipped") for ``reason``; the line to log, or None."""
        kind = reason_kind(f"{where}: {reason}")
        now = self.clock()
        with self._lock:
            if kind not in self.counts and len(self.counts) >= self.max_kinds:
                kind = "other"
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.total += 1
            self.last = f"{where}: {reason}"
            last = self._logged.get(kind)
            if last is not None and now - last[0] < self.period_s:
                return None
            skipped = self.counts[kind] - 1 - (last[1] if last else 0)
            self._logged[kind] = (now, self.counts[kind])
        return self.last + (f" ({skipped} more like this since the last message)" if skipped > 0 else "")

    def values(self) -> dict[str, str]:
        """Diagnostics key-values: one ``refused: KIND`` entry per kind, most frequent first."""
        with self._lock:
            items = sorted(self.counts.items(), key=lambda kv: -kv[1])
        return {f"refused: {kind}": str(n) for kind, n in items}

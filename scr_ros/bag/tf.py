"""Time-indexed poses and a small TF buffer for reading bags offline.

rclpy's tf2 buffer is not available off-robot, so bag reading keeps its own: every ``/tf``
edge is a :class:`PoseSeries` (interpolated between stamps, like tf2, and never extrapolated
beyond a tolerance), every ``/tf_static`` edge a constant. Lookups walk the tree from both
frames up to their common ancestor.
"""

from __future__ import annotations

import bisect

import numpy as np

from ..evaluation.trajectory import interpolate_pose
from ..geometry import invert_pose


class PoseSeries:
    """Poses by stamp (nanoseconds), any insertion order.

    :meth:`at` returns the pose at an exact stamp, interpolates between the two neighbours when
    they are at most ``max_gap_ns`` apart, and raises ``LookupError`` (saying why) otherwise.
    """

    def __init__(self) -> None:
        self._stamps: list[int] = []
        self._poses: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._stamps)

    def add(self, stamp_ns: int, T: np.ndarray) -> None:
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            self._poses[i] = T  # a repeated stamp: the later message wins, as in tf2
            return
        self._stamps.insert(i, stamp_ns)
        self._poses.insert(i, T)

    @property
    def stamps(self) -> list[int]:
        return list(self._stamps)

    def at(self, stamp_ns: int, max_gap_ns: int) -> np.ndarray:
        s = self._stamps
        if not s:
            raise LookupError("no poses recorded")
        i = bisect.bisect_left(s, stamp_ns)
        if i < len(s) and s[i] == stamp_ns:
            return self._poses[i]
        if i == 0 or i == len(s):
            side, nearest = ("before the first", s[0]) if i == 0 else ("after the last", s[-1])
            raise LookupError(
                f"stamp {stamp_ns * 1e-9:.3f} s is {side} pose ({nearest * 1e-9:.3f} s); no extrapolation"
            )
        t0, t1 = s[i - 1], s[i]
        if t1 - t0 > max_gap_ns:
            raise LookupError(
                f"no pose within {max_gap_ns * 1e-9:.3f} s: neighbours at {t0 * 1e-9:.3f} s and {t1 * 1e-9:.3f} s"
            )
        return interpolate_pose(self._poses[i - 1], self._poses[i], (stamp_ns - t0) / (t1 - t0))


class TfBuffer:
    """Transforms from a bag's ``/tf`` and ``/tf_static``.

    Args:
        max_gap_s: the longest interval between two messages of one edge that lookups
            interpolate across.
    """

    def __init__(self, max_gap_s: float = 0.5) -> None:
        self.max_gap_ns = int(max_gap_s * 1e9)
        self._parent: dict[str, str] = {}
        self._dynamic: dict[str, PoseSeries] = {}
        self._static: dict[str, np.ndarray] = {}

    def add(self, parent: str, child: str, T_parent_child: np.ndarray, stamp_ns: int, static: bool = False) -> None:
        parent, child = parent.lstrip("/"), child.lstrip("/")
        old = self._parent.get(child)
        if old is not None and old != parent:
            raise LookupError(f"frame {child!r} has two parents in the bag: {old!r} and {parent!r} (TF needs a tree)")
        self._parent[child] = parent
        if static:
            self._static[child] = T_parent_child
        else:
            self._dynamic.setdefault(child, PoseSeries()).add(stamp_ns, T_parent_child)

    @property
    def frames(self) -> set[str]:
        return set(self._parent) | set(self._parent.values())

    def edges(self) -> list[tuple[str, str, bool]]:
        """(parent, child, static) for every edge."""
        return [(p, c, c in self._static) for c, p in sorted(self._parent.items())]

    def _to_root(self, frame: str) -> list[str]:
        """``frame``, its parent, ... up to the root of its tree."""
        chain, seen = [], set()
        while frame in self._parent:
            if frame in seen:
                raise LookupError(f"TF cycle through {frame!r}")
            seen.add(frame)
            chain.append(frame)
            frame = self._parent[frame]
        chain.append(frame)
        return chain

    def _edge(self, child: str, stamp_ns: int) -> np.ndarray:
        if child in self._static:
            return self._static[child]
        try:
            return self._dynamic[child].at(stamp_ns, self.max_gap_ns)
        except LookupError as exc:
            raise LookupError(f"{self._parent[child]} -> {child}: {exc}") from None

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray:
        """``T_target_source`` at ``stamp_ns``: the pose of ``source`` in ``target``."""
        target, source = target.lstrip("/"), source.lstrip("/")
        up_s, up_t = self._to_root(source), self._to_root(target)
        if up_s[-1] != up_t[-1]:
            known = ", ".join(sorted(self.frames)) or "none"
            raise LookupError(f"{target!r} and {source!r} are not connected in TF (frames in the bag: {known})")
        common = next(f for f in up_s if f in set(up_t))

        def pose_in(ancestor: str, chain: list[str]) -> np.ndarray:
            T = np.eye(4)
            for frame in chain[: chain.index(ancestor)]:
                T = self._edge(frame, stamp_ns) @ T
            return T

        return invert_pose(pose_in(common, up_t)) @ pose_in(common, up_s)

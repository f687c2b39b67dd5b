"""The relocalizer's gates, without ROS: which fixes it trusts and when it says so.

- :class:`JumpGate`: a confirmed fix that jumps farther from the last trusted one than odometry
  allows (:class:`Limits`) is refused;
- :class:`FixConfirmation`: the first fix (or the first after a reset) is confirmed only after
  several consecutive fixes agree;
- :class:`InitialPoseTrigger`: when the base pose goes to ``/initialpose``;
- :class:`RateMeter`: the input, processing and publishing rates the diagnostics report.

Poses are 4x4 ``T_parent_child`` matrices (the pose of child in parent), as in
:mod:`scr_ros.node_logic.relocalizer_core`.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..geometry import invert_pose, rotation_angle_deg


class RateMeter:
    """Events per second over a sliding window (default 5 s) of a monotonic clock."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._times.append(self.clock())
            self._trim()

    def _trim(self) -> None:
        cutoff = self.clock() - self.window_s
        while self._times and self._times[0] < cutoff:
            self._times.popleft()

    def rate(self) -> float:
        with self._lock:
            self._trim()
            return len(self._times) / self.window_s


def disagreement(
    T_map_cam: np.ndarray, T_odom_cam: np.ndarray | None, prev_map_cam: np.ndarray, prev_odom_cam: np.ndarray | None
) -> tuple[float, float]:
    """How far (m, deg) a fix lies from the previous one carried forward by odometry (or, without
    odometry on either side, from the previous one itself)."""
    predicted = (
        prev_map_cam
        if T_odom_cam is None or prev_odom_cam is None
        else prev_map_cam @ invert_pose(prev_odom_cam) @ T_odom_cam
    )
    delta = invert_pose(predicted) @ T_map_cam
    return float(np.linalg.norm(delta[:3, 3])), rotation_angle_deg(delta[:3, :3])


@dataclass(frozen=True)
class Limits:
    """How far (m, deg) a fix may lie from the previous one carried forward. With odometry the
    carried-forward pose already holds the motion, so the limits are fixed; without it (tf_mode
    none, odometry missing) the camera may have moved in between, so the limits grow with the
    image time since the previous fix at ``max_speed`` / ``max_turn_rate_deg``."""

    translation: float
    rotation_deg: float
    speed: float = 0.0
    turn_rate_deg: float = 0.0

    @classmethod
    def from_params(cls, p: dict) -> "Limits":
        return cls(p["max_jump_translation"], p["max_jump_rotation_deg"], p["max_speed"], p["max_turn_rate_deg"])

    @property
    def off(self) -> bool:
        return self.translation <= 0

    def exceeded(self, dt: float, dr: float, odometry: bool, elapsed_s: float) -> bool:
        grow = 0.0 if odometry else max(0.0, elapsed_s)
        return dt > self.translation + self.speed * grow or dr > self.rotation_deg + self.turn_rate_deg * grow

    def describe(self, odometry: bool, elapsed_s: float) -> str:
        if odometry:
            return f"{self.translation:.2f} m / {self.rotation_deg:.1f} deg"
        grow = max(0.0, elapsed_s)
        return (
            f"{self.translation + self.speed * grow:.2f} m / {self.rotation_deg + self.turn_rate_deg * grow:.1f} deg "
            f"without odometry, {grow:.1f} s after the last fix"
        )


class JumpGate:
    """Rejects fixes that disagree with the trusted pose: lost frames rather than teleporting the robot.

    The reference is the last *confirmed* fix (:meth:`trust`), carried to the new image stamp by
    the odometry motion in between (``T_map_cam_prev . T_odom_cam_prev^-1 . T_odom_cam_now``); a
    new fix further than the limits from that prediction is rejected. Without odometry (tf_mode
    none) the prediction is the reference itself and the limits grow with the time since it
    (:class:`Limits`). Before anything is confirmed there is no reference and the first-fix check
    alone decides, so a wrong first fix cannot lock the right ones out. After ``reset_after``
    consecutive rejections the reference is dropped (a wrong earlier fix, or a kidnapped robot):
    the next fixes must confirm each other before TF and initialpose follow them.
    """

    def __init__(self) -> None:
        self._ref: tuple[np.ndarray, np.ndarray | None, int] | None = None
        self.consecutive = 0

    def check(
        self, T_map_cam: np.ndarray, T_odom_cam: np.ndarray | None, stamp_ns: int, limits: Limits, reset_after: int
    ) -> str:
        """``""`` to let the fix through, otherwise why it is rejected."""
        if limits.off or self._ref is None:
            return ""
        prev_map, prev_odom, prev_ns = self._ref
        odometry = T_odom_cam is not None and prev_odom is not None
        dt, dr = disagreement(T_map_cam, T_odom_cam, prev_map, prev_odom)
        elapsed = (stamp_ns - prev_ns) * 1e-9
        if not limits.exceeded(dt, dr, odometry, elapsed):
            self.consecutive = 0
            return ""
        if self.consecutive >= reset_after:
            self.reset()  # give up the reference: the first-fix check decides again
            return ""
        self.consecutive += 1
        where = "where odometry puts the camera" if odometry else "the last confirmed fix"
        return (
            f"pose jump: {dt:.2f} m / {dr:.1f} deg from {where} (limits {limits.describe(odometry, elapsed)}; "
            f"{self.consecutive} in a row)"
        )

    def trust(self, T_map_cam: np.ndarray, T_odom_cam: np.ndarray | None, stamp_ns: int) -> None:
        """A confirmed fix: the reference from now on."""
        self._ref = (np.array(T_map_cam), None if T_odom_cam is None else np.array(T_odom_cam), stamp_ns)
        self.consecutive = 0

    def reset(self) -> None:
        self._ref, self.consecutive = None, 0


class FixConfirmation:
    """The first-fix check: TF and initialpose follow the fixes only once ``needed`` consecutive
    fixes agreed, each within the jump limits of the previous one carried forward by odometry
    (or, without odometry, of the previous one itself with the limits grown by the time between).
    A fix that disagrees starts the count again from itself. A confirmed run ends when a fix is
    rejected, when the node is lost (no fix for ``lost_timeout`` of image time: the robot may
    have been carried anywhere meanwhile), on a clock jump, a new map and ``~/reset``."""

    def __init__(self) -> None:
        self._last: tuple[np.ndarray, np.ndarray | None, int] | None = None
        self.count = 0

    def add(
        self, T_map_cam: np.ndarray, T_odom_cam: np.ndarray | None, stamp_ns: int, needed: int, limits: Limits
    ) -> bool:
        """Count this fix; whether the run it belongs to is confirmed."""
        if self._last is None:
            self.count = 1
        elif self.count < needed:
            prev_map, prev_odom, prev_ns = self._last
            odometry = T_odom_cam is not None and prev_odom is not None
            dt, dr = disagreement(T_map_cam, T_odom_cam, prev_map, prev_odom)
            agrees = limits.off or not limits.exceeded(dt, dr, odometry, (stamp_ns - prev_ns) * 1e-9)
            self.count = self.count + 1 if agrees else 1
        else:
            self.count += 1
        self._last = (np.array(T_map_cam), None if T_odom_cam is None else np.array(T_odom_cam), stamp_ns)
        return self.count >= needed

    @property
    def last_stamp_ns(self) -> int | None:
        return None if self._last is None else self._last[2]

    def reset(self) -> None:
        self._last, self.count = None, 0


class InitialPoseTrigger:
    """When the base pose goes to initialpose: on the first confirmed fix, on the first confirmed
    fix after none for ``lost_timeout`` seconds of image time (the node was lost), and when asked."""

    def __init__(self) -> None:
        self.last_fix_ns: int | None = None
        self.requested = False

    def due(self, stamp_ns: int, lost_timeout_s: float) -> bool:
        lost = self.last_fix_ns is None or (stamp_ns - self.last_fix_ns) * 1e-9 > lost_timeout_s
        due = lost or self.requested
        self.last_fix_ns, self.requested = stamp_ns, False
        return due

    def reset(self) -> None:
        self.last_fix_ns, self.requested = None, False

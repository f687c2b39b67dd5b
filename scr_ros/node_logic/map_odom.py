"""REP-105's map -> odom correction from a camera fix, and its future-dated re-publication."""

from __future__ import annotations

import threading

import numpy as np

from ..geometry import invert_pose


def map_to_odom(T_map_cam: np.ndarray, T_odom_base: np.ndarray, T_base_cam: np.ndarray) -> np.ndarray:
    """REP-105's correction: ``T_map_odom = T_map_cam . T_cam_base . T_odom_base^-1``.

    All three at the image stamp, so that map -> odom -> base -> camera reproduces the fix.
    """
    return T_map_cam @ invert_pose(T_base_cam) @ invert_pose(T_odom_base)


class MapOdomBroadcast:
    """The last map -> odom correction and the stamps it is (re-)published with.

    Like slam_toolbox and AMCL the transform is future-dated by ``tolerance``: it is stamped
    ``now + tolerance`` on every fix and on every re-publication, so lookups at the newest
    odometry find it. Stamps strictly increase (tf2 rejects repeated stamps for a frame pair).
    """

    def __init__(self, tolerance_s: float) -> None:
        self.tolerance_ns = int(round(tolerance_s * 1e9))
        self.T_map_odom: np.ndarray | None = None
        self._last_stamp = -1
        self._lock = threading.Lock()

    def update(self, T_map_odom: np.ndarray) -> None:
        with self._lock:
            self.T_map_odom = np.array(T_map_odom, dtype=np.float64)

    def next(self, now_ns: int) -> tuple[np.ndarray, int] | None:
        """(T_map_odom, stamp) to publish now, or ``None`` without a fix or a new stamp."""
        with self._lock:
            if self.T_map_odom is None:
                return None
            stamp = int(now_ns) + self.tolerance_ns
            if stamp <= self._last_stamp:
                return None
            self._last_stamp = stamp
            return self.T_map_odom.copy(), stamp

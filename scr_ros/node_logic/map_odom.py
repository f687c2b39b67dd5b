"""REP-105's map -> odom transform, re-published future-dated between fixes."""

from __future__ import annotations

import threading

import numpy as np

# A clock that goes back by more than this (a bag played again from the start, a simulator reset)
# starts the stamps afresh rather than waiting for time to catch up with the old ones.
CLOCK_JUMP_NS = 1_000_000_000


class MapOdomBroadcast:
    """The last map -> odom correction and the stamps it is (re-)published with.

    Like slam_toolbox and AMCL the transform is future-dated by ``tolerance``: it is stamped
    ``now + tolerance`` on every fix and on every re-publication, so lookups at the newest
    odometry find it. Stamps strictly increase (tf2 rejects repeated stamps for a frame pair),
    except after the clock jumped back, when they start again from the new time.
    """

    def __init__(self, tolerance_s: float) -> None:
        self.tolerance_ns = int(round(tolerance_s * 1e9))
        self.T_map_odom: np.ndarray | None = None
        self._last_stamp = -1
        self._lock = threading.Lock()

    def update(self, T_map_odom: np.ndarray) -> None:
        with self._lock:
            self.T_map_odom = np.array(T_map_odom, dtype=np.float64)

    def reset(self) -> None:
        """Forget the correction and the stamps (the clock jumped back, a new map)."""
        with self._lock:
            self.T_map_odom, self._last_stamp = None, -1

    def next(self, now_ns: int) -> tuple[np.ndarray, int] | None:
        """(T_map_odom, stamp) to publish now, or ``None`` without a fix or a new stamp."""
        with self._lock:
            if self.T_map_odom is None:
                return None
            stamp = int(now_ns) + self.tolerance_ns
            if stamp < self._last_stamp - CLOCK_JUMP_NS:
                self._last_stamp = -1  # the clock went back: stamp from the new time on
            if stamp <= self._last_stamp:
                return None
            self._last_stamp = stamp
            return self.T_map_odom.copy(), stamp

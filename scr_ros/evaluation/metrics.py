"""Pose errors and the accuracy figures the relocalization papers report.

Translation error is the distance between estimated and true camera centres; rotation error is
the angle of ``R_est @ R_gt.T``. A frame counts as within a threshold when *both* errors are
strictly below it. Lost frames count as infinitely wrong: they lower every accuracy figure and
push the medians up, as in ACE's evaluation.
"""

from __future__ import annotations

import numpy as np

from ..geometry import rotation_angle_deg

# name -> (metres, degrees)
# The usual indoor thresholds, and 25 cm / 2 deg, the large-scene one (Cambridge, Aachen).
THRESHOLDS: dict[str, tuple[float, float]] = {
    "25cm_2deg": (0.25, 2.0),
    "10cm_5deg": (0.10, 5.0),
    "5cm_5deg": (0.05, 5.0),
    "2cm_2deg": (0.02, 2.0),
    "1cm_1deg": (0.01, 1.0),
}


def pose_error(T_est: np.ndarray | None, T_gt: np.ndarray) -> tuple[float, float]:
    """(translation error in metres, rotation error in degrees); ``inf`` for a missing estimate."""
    if T_est is None:
        return float("inf"), float("inf")
    t_err = float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]))
    r_err = rotation_angle_deg(T_est[:3, :3] @ T_gt[:3, :3].T)
    return t_err, r_err


def accuracy(t_errors_m, r_errors_deg) -> dict[str, float]:
    """Percentage of frames strictly within each threshold of :data:`THRESHOLDS`."""
    t = np.asarray(t_errors_m, dtype=np.float64)
    r = np.asarray(r_errors_deg, dtype=np.float64)
    if t.size == 0:
        return {name: 0.0 for name in THRESHOLDS}
    return {name: float(100.0 * np.mean((t < tm) & (r < rd))) for name, (tm, rd) in THRESHOLDS.items()}


def median(values) -> float:
    """Median that keeps ``inf`` (lost frames) instead of failing; NaN for no values."""
    v = np.asarray(values, dtype=np.float64)
    return float(np.median(v)) if v.size else float("nan")

"""Trajectories: TUM files, interpolation, rigid alignment and trajectory errors.

TUM trajectory files hold one pose per line, ``stamp tx ty tz qx qy qz qw`` (seconds, metres,
a unit quaternion in ROS order), ``#`` comments allowed: what robotics tools (evo, TUM RGB-D's
tools, most SLAM systems) read and write. A pose here is camera-to-world (``T_world_cam``), 4x4.

Errors are computed after one rigid alignment of the estimated positions onto the true ones
(Umeyama / Kabsch without scale, the rotation from scipy's ``Rotation.align_vectors``): the
absolute trajectory error (ATE RMSE) and the median translation and rotation errors, as evo's
``APE`` with ``--align`` computes them (``test/test_trajectory.py`` checks the two agree).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import DatasetError
from ..fileio import atomic_write_text
from ..geometry import check_pose, make_pose, pose_from_position_quaternion, pose_to_position_quaternion


def read_tum(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Stamps (N,) in seconds and camera-to-world poses (N, 4, 4) of a TUM trajectory file.

    Refuses, naming the line: a line without 8 numbers, a non-finite value, a zero quaternion,
    stamps that do not increase. Quaternions are normalized."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DatasetError(f"cannot read trajectory {path}: {exc}") from None
    stamps, poses = [], []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            values = [float(v) for v in line.replace(",", " ").split()]
        except ValueError:
            raise DatasetError(
                f"{path}:{number}: not a TUM pose line (stamp tx ty tz qx qy qz qw): {line[:80]!r}"
            ) from None
        if len(values) != 8 or not np.all(np.isfinite(values)):
            raise DatasetError(
                f"{path}:{number}: expected 8 finite numbers (stamp tx ty tz qx qy qz qw), got {line[:80]!r}"
            )
        q = np.asarray(values[4:8])
        if np.linalg.norm(q) < 1e-6:
            raise DatasetError(f"{path}:{number}: zero quaternion")
        if stamps and values[0] <= stamps[-1]:
            raise DatasetError(f"{path}:{number}: stamp {values[0]} does not increase (previous {stamps[-1]})")
        stamps.append(values[0])
        poses.append(pose_from_position_quaternion(np.asarray(values[1:4]), q / np.linalg.norm(q)))
    if not poses:
        raise DatasetError(f"{path}: no poses (expected lines of stamp tx ty tz qx qy qz qw)")
    return np.asarray(stamps, np.float64), np.stack(poses)


def write_tum(path: str | Path, stamps: Sequence[float], poses: np.ndarray, comment: str = "") -> Path:
    """Write stamps (N,) in seconds and camera-to-world poses (N, 4, 4) as a TUM file, atomically."""
    poses = np.asarray(poses, np.float64)
    if len(stamps) != len(poses):
        raise ValueError(f"{len(stamps)} stamps for {len(poses)} poses")
    lines = [f"# {line}" for line in comment.splitlines()] + ["# stamp tx ty tz qx qy qz qw"]
    for stamp, T in zip(stamps, poses):
        t, q = pose_to_position_quaternion(check_pose(T, "trajectory pose"))
        lines.append(f"{float(stamp):.9f} " + " ".join(f"{v:.9f}" for v in (*t, *q)))
    return atomic_write_text(Path(path), "\n".join(lines) + "\n")


def interpolate_pose(T0: np.ndarray, T1: np.ndarray, a: float) -> np.ndarray:
    """The pose a fraction ``a`` of the way from T0 to T1: positions linearly, rotations by slerp."""
    R = Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]]))
    delta = (R[0].inv() * R[1]).as_rotvec()
    rotation = (R[0] * Rotation.from_rotvec(a * delta)).as_matrix()
    return make_pose(rotation, (1.0 - a) * T0[:3, 3] + a * T1[:3, 3])


def poses_at(stamps: np.ndarray, poses: np.ndarray, query: np.ndarray, max_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """The trajectory (``stamps`` (N,) increasing, ``poses`` (N, 4, 4)) at the ``query`` stamps
    (M,): interpolated between the poses around each query stamp when they are at most ``max_gap``
    apart. Returns (poses (M, 4, 4), found (M,) bool); a query outside the trajectory or in a
    wider gap is not found."""
    query = np.asarray(query, np.float64)
    out = np.tile(np.eye(4), (len(query), 1, 1))
    found = np.zeros(len(query), bool)
    after = np.searchsorted(stamps, query)
    for k, (q, j) in enumerate(zip(query, after)):
        if j < len(stamps) and abs(stamps[j] - q) < 1e-9:
            out[k], found[k] = poses[j], True
        elif 0 < j < len(stamps) and stamps[j] - stamps[j - 1] <= max_gap:
            a = (q - stamps[j - 1]) / (stamps[j] - stamps[j - 1])
            out[k], found[k] = interpolate_pose(poses[j - 1], poses[j], a), True
    return out, found


def rigid_alignment(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The rigid transform A (4, 4) that best maps positions ``source`` (N, 3) onto ``target``
    (N, 3) in the least-squares sense (no scale): ``target ~ A[:3, :3] @ source + A[:3, 3]``.
    Needs three positions that are not on one line for a unique rotation."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if len(source) != len(target) or len(source) < 3:
        raise ValueError(f"rigid alignment needs at least 3 matching positions, got {len(source)} and {len(target)}")
    mu_s, mu_t = source.mean(axis=0), target.mean(axis=0)
    rotation, _ = Rotation.align_vectors(target - mu_t, source - mu_s)
    R = rotation.as_matrix()
    return make_pose(R, mu_t - R @ mu_s)


def trajectory_errors(estimated: np.ndarray, truth: np.ndarray, align: bool = True) -> dict:
    """How far camera-to-world poses ``estimated`` (N, 4, 4) are from ``truth`` (N, 4, 4): ATE
    RMSE and median of the translation errors (m) and median rotation error (degrees), after one
    rigid alignment of the estimated positions onto the true ones when ``align`` (then also the
    alignment, 4x4 as a nested list)."""
    estimated, truth = np.asarray(estimated, np.float64), np.asarray(truth, np.float64)
    A = rigid_alignment(estimated[:, :3, 3], truth[:, :3, 3]) if align else np.eye(4)
    moved = A @ estimated
    dt = np.linalg.norm(moved[:, :3, 3] - truth[:, :3, 3], axis=1)
    R_err = np.einsum("nji,njk->nik", truth[:, :3, :3], moved[:, :3, :3])
    dr = np.degrees(np.linalg.norm(Rotation.from_matrix(R_err).as_rotvec(), axis=1))
    out = {
        "frames": len(dt),
        "ate_rmse_m": float(np.sqrt(np.mean(dt**2))),
        "median_translation_m": float(np.median(dt)),
        "max_translation_m": float(np.max(dt)),
        "median_rotation_deg": float(np.median(dr)),
        "max_rotation_deg": float(np.max(dr)),
    }
    if align:
        out["alignment"] = A.tolist()
    return out

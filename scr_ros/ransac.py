"""PnP-RANSAC with poselib: 2D-3D correspondences -> camera pose.

poselib's LO-RANSAC draws minimal P3P samples, scores with a truncated reprojection error,
locally optimizes good hypotheses and finishes with a Levenberg-Marquardt refinement on the
inliers (the "pose refinement" step of ACE's pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import poselib

from .geometry import PinholeCamera, invert_pose, make_pose, project_world_points


@dataclass
class RansacConfig:
    """RANSAC settings.

    ``max_iterations`` caps latency: at 10 % inliers a P3P sample is all-inlier with probability
    1e-3, so 10,000 iterations still find the pose with probability 1 - e^-10; beyond that a
    frame is better reported lost than answered late. ``min_iterations`` keeps poselib from
    stopping on a lucky early hypothesis when the inlier ratio is high.

    The budget below was chosen by measurement (issue 30, ``benchmarks/relocalizer_speed.py``):
    against ``success_prob`` 0.9999, ``min_iterations`` 100 and poselib's 100 final
    Levenberg-Marquardt iterations, these settings cut RANSAC's time by 18 % on the demo scene,
    29 % on SUN3D and 18 % on the large synthetic room, with the accuracy at 5 cm / 5° and
    2 cm / 2° unchanged on all three. ``success_prob`` 0.99 lost a query on the
    large room. Most of what remains is poselib's local optimization, which it runs each time a
    better hypothesis turns up and which has no setting.
    """

    max_reproj_error: float = 10.0  # pixels, as ACE
    max_iterations: int = 10_000
    min_iterations: int = 50
    success_prob: float = 0.999
    seed: int = 0
    # Levenberg-Marquardt iterations of the refinement that follows RANSAC: poselib's own on
    # its inliers, and each round of refine_pose after RANSAC on a selection. It starts next to
    # the optimum, so a few suffice (on SUN3D 5 and 100 give the same poses); re-scoring the
    # inliers between refine_pose's rounds brings the mean error to that of RANSAC on all.
    refine_iterations: int = 5
    refine_rounds: int = 3

    def poselib_options(self) -> dict:
        return {
            "max_reproj_error": float(self.max_reproj_error),
            "max_iterations": int(self.max_iterations),
            "min_iterations": int(self.min_iterations),
            "success_prob": float(self.success_prob),
            "seed": int(self.seed),
        }

    def poselib_bundle_options(self) -> dict:
        """The options of poselib's refinement at the end of its RANSAC."""
        return {"max_iterations": int(self.refine_iterations)}


@dataclass
class PnPResult:
    T_world_cam: np.ndarray  # (4, 4) camera-to-world
    inlier_mask: np.ndarray  # (N,) bool
    num_inliers: int
    iterations: int


def solve_pnp(
    points2d: np.ndarray, points3d: np.ndarray, camera: PinholeCamera, config: RansacConfig | None = None
) -> PnPResult | None:
    """Robustly estimate the camera pose from pixels (N, 2) and world points (N, 3).

    Returns ``None`` when there are fewer than 4 correspondences or RANSAC finds no model.
    """
    config = config or RansacConfig()
    points2d = np.ascontiguousarray(points2d, dtype=np.float64)
    points3d = np.ascontiguousarray(points3d, dtype=np.float64)
    if len(points2d) != len(points3d):
        raise ValueError(f"{len(points2d)} pixels but {len(points3d)} scene points")
    if len(points2d) < 4:
        return None
    cam = _poselib_camera(camera)
    pose, info = poselib.estimate_absolute_pose(
        points2d, points3d, cam, config.poselib_options(), config.poselib_bundle_options()
    )
    inliers = np.asarray(info.get("inliers", []), dtype=bool)
    if inliers.size != len(points2d) or not inliers.any():
        return None
    T_cam_world = make_pose(np.asarray(pose.R), np.asarray(pose.t))
    if not np.all(np.isfinite(T_cam_world)):
        return None
    return PnPResult(invert_pose(T_cam_world), inliers, int(inliers.sum()), int(info.get("iterations", 0)))


def refine_pose(
    points2d: np.ndarray,
    points3d: np.ndarray,
    T_world_cam: np.ndarray,
    camera: PinholeCamera,
    config: RansacConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score a pose on a larger set of correspondences and refine it on their inliers.

    Used after RANSAC ran on a selected subset (the keypoint classifier's): the subset makes the
    hypothesis search fast, and the final pose still uses every correspondence that agrees with
    it. Each round is the refinement poselib ends its own RANSAC with (a Cauchy loss at half the
    inlier threshold, on the inliers; a truncated loss weighs a 9 px residual like a 1 px one
    and measurably loosens the pose), then the inliers are re-scored under the refined pose;
    up to ``config.refine_rounds`` rounds, fewer when the inlier set stops changing. Returns
    (T_world_cam (4, 4), inlier mask (N,) under the returned pose).
    """
    config = config or RansacConfig()
    points2d = np.ascontiguousarray(points2d, dtype=np.float64)
    points3d = np.ascontiguousarray(points3d, dtype=np.float64)
    cam = _poselib_camera(camera)
    options = {
        "loss_type": "CAUCHY",
        "loss_scale": 0.5 * float(config.max_reproj_error),
        "max_iterations": int(config.refine_iterations),
    }
    inliers = _reprojection_inliers(points2d, points3d, T_world_cam, camera, config.max_reproj_error)
    for _ in range(config.refine_rounds):
        if inliers.sum() < 4:
            break
        T_cam_world = invert_pose(T_world_cam)
        pose = poselib.CameraPose()
        pose.R, pose.t = T_cam_world[:3, :3], T_cam_world[:3, 3]
        refined, _ = poselib.refine_absolute_pose(points2d[inliers], points3d[inliers], pose, cam, options)
        T_refined = make_pose(np.asarray(refined.R), np.asarray(refined.t))
        if not np.all(np.isfinite(T_refined)):
            break
        T_world_cam = invert_pose(T_refined)
        previous, inliers = (
            inliers,
            _reprojection_inliers(points2d, points3d, T_world_cam, camera, config.max_reproj_error),
        )
        if np.array_equal(previous, inliers):
            break
    return T_world_cam, inliers


def _poselib_camera(camera: PinholeCamera) -> dict:
    return {
        "model": "PINHOLE",
        "width": int(camera.width),
        "height": int(camera.height),
        "params": [camera.fx, camera.fy, camera.cx, camera.cy],
    }


def _reprojection_inliers(
    points2d, points3d, T_world_cam, camera: PinholeCamera, max_reproj_error: float
) -> np.ndarray:
    proj, z = project_world_points(points3d, T_world_cam, camera)
    with np.errstate(invalid="ignore"):
        return (z > 0) & (np.linalg.norm(proj - points2d, axis=1) < max_reproj_error)


# ------------------------------------------------------------------------ what a pose's inliers constrain

# The published covariance: the least-squares one below times this (scene-coordinate errors are
# correlated, so the least-squares covariance is optimistic; docs/ros.md, Covariance), plus floors.
COVARIANCE_INFLATION = 400.0
MIN_STD_TRANSLATION = 0.01  # metres (map units)
MIN_STD_ROTATION_DEG = 0.5
# The largest position standard deviation (metres, map units) of the published covariance a fix
# may have: far content (a city kilometres away) agrees with any camera position, so thousands of
# inliers on it constrain the rotation and not the position. Chosen by measurement (issue 39,
# benchmarks/fix_trust.py): on the real rooftop video every accepted fix below it was right,
# and on the demo scene and SUN3D it refuses almost none.
MAX_POSITION_STD = 0.2


def pose_covariance(
    T_world_cam: np.ndarray, pixels: np.ndarray, points: np.ndarray, camera: PinholeCamera
) -> np.ndarray:
    """Least-squares covariance (6, 6) of a PnP pose from its inlier correspondences.

    Perturbation model, as ROS's PoseWithCovariance reads it: the camera position moves by
    ``dp`` and its orientation by a small rotation ``phi`` about the *world* (header frame) axes,
    ``R' = exp([phi]x) R``; the order is (x, y, z, rot_x, rot_y, rot_z). With the reprojection
    Jacobian J (2N x 6) at the inliers and the residual variance s^2 = sum r^2 / (2N - 6), the
    covariance is s^2 (J^T J)^-1 -- exact for independent Gaussian pixel noise.

    Args:
        T_world_cam: (4, 4) estimated camera-to-world pose.
        pixels: (N, 2) inlier pixels; points: (N, 3) their scene coordinates (world frame).
    """
    pixels = np.asarray(pixels, np.float64)
    points = np.asarray(points, np.float64)
    n = len(points)
    if n < 4:
        raise ValueError(f"a pose covariance needs at least 4 inliers, got {n}")
    R, p = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d = points - p  # world-frame offsets from the camera centre
    Xc = d @ R  # camera-frame points, R^T d row-wise
    x, y, z = Xc[:, 0], Xc[:, 1], np.maximum(Xc[:, 2], 1e-6)
    # d(u, v)/d(Xc): (N, 2, 3)
    Jp = np.zeros((n, 2, 3))
    Jp[:, 0, 0] = camera.fx / z
    Jp[:, 0, 2] = -camera.fx * x / z**2
    Jp[:, 1, 1] = camera.fy / z
    Jp[:, 1, 2] = -camera.fy * y / z**2
    # dXc/d(dp) = -R^T ; dXc/d(phi) = R^T [d]x   (from Xc' = R^T exp(-[phi]x)(X - p - dp))
    skew = np.zeros((n, 3, 3))
    skew[:, 0, 1], skew[:, 0, 2] = -d[:, 2], d[:, 1]
    skew[:, 1, 0], skew[:, 1, 2] = d[:, 2], -d[:, 0]
    skew[:, 2, 0], skew[:, 2, 1] = -d[:, 1], d[:, 0]
    J_t = -Jp @ R.T  # (N, 2, 3)
    J_r = Jp @ (R.T[None] @ skew)
    J = np.concatenate([J_t, J_r], axis=2).reshape(2 * n, 6)
    proj = np.stack([camera.fx * x / z + camera.cx, camera.fy * y / z + camera.cy], axis=1)
    sigma2 = float(np.sum((proj - pixels) ** 2)) / max(2 * n - 6, 1)
    return sigma2 * np.linalg.pinv(J.T @ J)


def published_covariance(
    cov: np.ndarray, inflation: float, min_std_translation: float, min_std_rotation_rad: float
) -> np.ndarray:
    """Scale the least-squares covariance and add floors so it is never overconfident."""
    floor = np.diag([min_std_translation**2] * 3 + [min_std_rotation_rad**2] * 3)
    out = inflation * np.asarray(cov, np.float64) + floor
    return 0.5 * (out + out.T)


def position_std(cov: np.ndarray) -> float:
    """The largest standard deviation of a (6, 6) pose covariance's position block."""
    return float(np.sqrt(max(np.linalg.eigvalsh(np.asarray(cov, np.float64)[:3, :3]).max(), 0.0)))

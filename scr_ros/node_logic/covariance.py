"""The covariance the relocalizer publishes with a pose (geometry_msgs/PoseWithCovariance).

Perturbation model, as ROS reads it: the camera position moves by ``dp`` and its orientation by
a small rotation ``phi`` about the world (header frame) axes; order (x, y, z, rot_x, rot_y, rot_z).
"""

from __future__ import annotations

import numpy as np

from ..geometry import PinholeCamera


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


def covariance_of_child(cov_parent_pose: np.ndarray, T_world_a: np.ndarray, T_a_b: np.ndarray) -> np.ndarray:
    """Covariance of ``T_world_b = T_world_a @ T_a_b`` given the covariance of ``T_world_a``.

    Same world-frame perturbation model as :func:`pose_covariance`: a rotation ``phi`` of frame
    a moves b's origin by ``phi x (R_a t_ab)``, so dp_b = dp_a - [R_a t_ab]x phi, phi_b = phi_a.
    """
    o = T_world_a[:3, :3] @ T_a_b[:3, 3]
    skew = np.array([[0.0, -o[2], o[1]], [o[2], 0.0, -o[0]], [-o[1], o[0], 0.0]])
    J = np.eye(6)
    J[:3, 3:] = -skew
    return J @ cov_parent_pose @ J.T

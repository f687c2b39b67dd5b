"""The covariance the relocalizer publishes with a pose (geometry_msgs/PoseWithCovariance).

Perturbation model, as ROS reads it: the camera position moves by ``dp`` and its orientation by
a small rotation ``phi`` about the world (header frame) axes; order (x, y, z, rot_x, rot_y, rot_z).
"""

from __future__ import annotations

import numpy as np

from ..ransac import pose_covariance, published_covariance  # noqa: F401 - re-exported: the node's covariance


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

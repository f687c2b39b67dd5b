"""The frames the nodes publish in (REP-103, REP-105) and the transforms between them, without ROS.

Frame tree: ``map -> odom -> base_link -> camera optical frame``. A pose is a 4x4
``T_parent_child`` (the pose of child in parent). The relocalizer estimates ``T_map_cam``; the
robot's mount ``T_base_cam`` (from TF, or the ``base_to_camera`` parameter) turns it into the base
pose ``T_map_base`` a navigation stack consumes; odometry ``T_odom_base`` turns that into REP-105's
``T_map_odom``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import MessageError
from ..geometry import invert_pose, make_pose, pose_from_position_quaternion


def mount_matrix(values: list[float], name: str) -> np.ndarray:
    """A mount parameter ``x y z qx qy qz qw`` (the child frame's pose in its parent) as a 4x4
    transform, or MessageError naming the parameter."""
    if len(values) != 7:
        raise MessageError(f"{name} needs 7 numbers (x y z qx qy qz qw), got {len(values)}")
    q = np.asarray(values[3:], np.float64)
    n = float(np.linalg.norm(q))
    if abs(n - 1.0) > 1e-3:
        raise MessageError(f"{name} has a quaternion of length {n:.4f}, not a rotation (x y z qx qy qz qw)")
    return pose_from_position_quaternion(np.asarray(values[:3], np.float64), q / n)


def yaw_pitch_roll(R: np.ndarray) -> tuple[float, float, float]:
    """Z-Y-X Euler angles (radians) of a rotation: ``R = Rz(yaw) Ry(pitch) Rx(roll)``, REP-103's."""
    yaw, pitch, roll = Rotation.from_matrix(R).as_euler("ZYX")
    return float(yaw), float(pitch), float(roll)


def from_yaw_pitch_roll(yaw: float, pitch: float, roll: float) -> np.ndarray:
    return Rotation.from_euler("ZYX", [yaw, pitch, roll]).as_matrix()


def planar_base_pose(T_map_base: np.ndarray, T_odom_base: np.ndarray | None = None) -> np.ndarray:
    """The base pose a 2D navigation stack wants: x, y and yaw from the fix; z, roll and pitch from
    odometry when there is one (so that map -> odom carries no roll, pitch or height), else 0
    (a robot on a level floor of the map)."""
    yaw, _, _ = yaw_pitch_roll(T_map_base[:3, :3])
    if T_odom_base is None:
        z, pitch, roll = 0.0, 0.0, 0.0
    else:
        _, pitch, roll = yaw_pitch_roll(T_odom_base[:3, :3])
        z = float(T_odom_base[2, 3])
    return make_pose(from_yaw_pitch_roll(yaw, pitch, roll), [T_map_base[0, 3], T_map_base[1, 3], z])


def map_to_odom(T_map_base: np.ndarray, T_odom_base: np.ndarray) -> np.ndarray:
    """REP-105's correction ``T_map_odom = T_map_base . T_odom_base^-1``: map -> odom -> base
    reproduces the fix (both at the image stamp)."""
    return T_map_base @ invert_pose(T_odom_base)

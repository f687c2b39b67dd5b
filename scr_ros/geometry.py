"""Rigid transforms, quaternions and the pinhole camera.

Conventions used everywhere in scr_ros (see DESIGN.md):

* A pose is a 4x4 float64 **camera-to-world** matrix ``T_world_cam``: it maps a point from the
  camera frame to the world (``map``) frame, ``X_world = T_world_cam @ X_cam``.
* Camera axes are OpenCV / ROS optical axes (REP-103): x right, y down, z forward.
* Quaternions are ``(x, y, z, w)`` as in ROS messages. transforms3d uses ``(w, x, y, z)``;
  the reordering happens here and nowhere else.
* Pixel coordinates follow OpenCV: the centre of the top-left pixel is ``(0, 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import transforms3d.quaternions as _tq

from .errors import MessageError


class InvalidPoseError(ValueError):
    """A matrix that should be a rigid transform is not one (NaN, not orthonormal, ...)."""


# --------------------------------------------------------------------------------------------
# SE(3)


def make_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Build a 4x4 transform from a rotation ``R`` (3, 3) and translation ``t`` (3,)."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).reshape(3)
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transform(s) ``T`` (..., 4, 4) using R^T, exact for rotations."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    Rt = np.swapaxes(R, -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply ``T`` (4, 4) to ``points`` (N, 3); returns (N, 3)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ T[:3, :3].T + T[:3, 3]


def check_pose(T: np.ndarray, what: str = "pose", tol: float = 1e-4) -> np.ndarray:
    """Return ``T`` as a float64 (4, 4) array, or raise :class:`InvalidPoseError` saying why.

    A valid pose is finite, has an orthonormal rotation with determinant +1 (within ``tol``)
    and a last row of ``[0, 0, 0, 1]``.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4):
        raise InvalidPoseError(f"{what}: expected a 4x4 matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise InvalidPoseError(f"{what}: contains NaN or infinite values")
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=tol):
        raise InvalidPoseError(f"{what}: last row is {T[3].tolist()}, expected [0, 0, 0, 1]")
    R = T[:3, :3]
    ortho = np.abs(R @ R.T - np.eye(3)).max()
    if ortho > tol:
        raise InvalidPoseError(f"{what}: rotation is not orthonormal (max |RR^T - I| = {ortho:.2e})")
    if np.linalg.det(R) < 0:
        raise InvalidPoseError(f"{what}: rotation has determinant -1 (a reflection)")
    return T


def orthonormalize(R: np.ndarray) -> np.ndarray:
    """Nearest rotation matrix to ``R`` (3, 3) in the Frobenius sense (SVD projection)."""
    U, _, Vt = np.linalg.svd(R)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def rotation_angle_deg(R: np.ndarray) -> float:
    """Rotation angle of ``R`` (3, 3) in degrees, in [0, 180]."""
    c = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def rotation_about_axis(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation matrix (3, 3) of ``angle_rad`` about unit vector ``axis`` (right-handed)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    return quaternion_to_matrix(np.r_[axis * np.sin(angle_rad / 2), np.cos(angle_rad / 2)])


# --------------------------------------------------------------------------------------------
# Quaternions, (x, y, z, w)


def quaternion_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) from a quaternion ``(x, y, z, w)``; the quaternion is normalized.

    Raises ``ValueError`` for a zero-length or non-finite quaternion.
    """
    q = np.asarray(q_xyzw, dtype=np.float64).reshape(4)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"quaternion (x, y, z, w) = {q.tolist()} is not a rotation")
    x, y, z, w = q / n
    return _tq.quat2mat([w, x, y, z])


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Quaternion ``(x, y, z, w)`` with ``w >= 0`` from a rotation matrix (3, 3)."""
    w, x, y, z = _tq.mat2quat(np.asarray(R, dtype=np.float64))
    q = np.array([x, y, z, w])
    return q if w >= 0 else -q


def pose_to_position_quaternion(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``T`` (4, 4) into position (3,) and quaternion ``(x, y, z, w)``."""
    return np.array(T[:3, 3], dtype=np.float64), matrix_to_quaternion(T[:3, :3])


def pose_from_position_quaternion(position: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """4x4 transform from a position (3,) and a quaternion ``(x, y, z, w)``."""
    return make_pose(quaternion_to_matrix(q_xyzw), position)


# --------------------------------------------------------------------------------------------
# Pinhole camera


@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole intrinsics in pixels of an image of ``width`` x ``height``.

    No distortion: images are expected to be rectified (as ROS ``image_rect`` topics are).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in vals):
            raise ValueError(f"camera intrinsics must be finite, got {vals}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def K(self) -> np.ndarray:
        """Calibration matrix (3, 3)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> "PinholeCamera":
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))

    def scaled(self, width: int, height: int) -> "PinholeCamera":
        """Intrinsics of the same camera after resizing the image to ``width`` x ``height``.

        Uses the half-pixel-exact mapping that ``cv2.resize`` implements:
        ``x' = (x + 0.5) * sx - 0.5``, so a point lands on the same scene content.
        """
        sx = width / self.width
        sy = height / self.height
        return PinholeCamera(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, int(width), int(height)
        )

    def with_focal_scale(self, scale: float) -> "PinholeCamera":
        """The same camera with both focal lengths scaled (a refined focal length)."""
        if scale == 1.0:
            return self
        return PinholeCamera(self.fx * scale, self.fy * scale, self.cx, self.cy, self.width, self.height)

    def as_dict(self) -> dict:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "width": self.width, "height": self.height}


def project_world_points(
    points_world: np.ndarray, T_world_cam: np.ndarray, camera: PinholeCamera
) -> tuple[np.ndarray, np.ndarray]:
    """Project world points into a camera.

    Args:
        points_world: (N, 3) points in the world frame.
        T_world_cam: (4, 4) camera-to-world pose.
        camera: intrinsics.

    Returns:
        pixels (N, 2) and depths (N,) along the optical axis. Points with depth <= 0 get NaN pixels.
    """
    X = transform_points(invert_pose(T_world_cam), points_world)
    z = X[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = camera.fx * X[:, 0] / z + camera.cx
        v = camera.fy * X[:, 1] / z + camera.cy
    px = np.stack([u, v], axis=1)
    px[z <= 0] = np.nan
    return px, z


def backproject(
    pixels: np.ndarray, depth: np.ndarray, camera: PinholeCamera, T_world_cam: np.ndarray | None = None
) -> np.ndarray:
    """Lift pixels (N, 2) with depths (N,) (metres along z) to 3D points (N, 3).

    Points are in the camera frame, or in the world frame when ``T_world_cam`` is given.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    depth = np.asarray(depth, dtype=np.float64)
    x = (pixels[:, 0] - camera.cx) / camera.fx * depth
    y = (pixels[:, 1] - camera.cy) / camera.fy * depth
    X = np.stack([x, y, depth], axis=1)
    return X if T_world_cam is None else transform_points(T_world_cam, X)


def look_at_rotation(
    forward: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0]), roll_rad: float = 0.0
) -> np.ndarray:
    """Rotation (3, 3) of an optical-frame camera looking along ``forward`` (world coords).

    The camera's y axis (down) points away from ``up``; ``roll_rad`` rotates about the optical axis.
    """
    z = np.asarray(forward, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("forward is parallel to up; the camera roll is undefined")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=1)
    if roll_rad:
        R = R @ rotation_about_axis(np.array([0.0, 0.0, 1.0]), roll_rad)
    return R


def check_transform(T: np.ndarray, what: str) -> np.ndarray:
    """A 4x4 pose from any source, or :class:`MessageError` (NaN, not a rotation)."""
    try:
        return check_pose(np.asarray(T, dtype=np.float64), what=what, tol=1e-3)
    except InvalidPoseError as exc:
        raise MessageError(str(exc)) from None


def camera_for_image(camera: PinholeCamera, width: int, height: int, allow_scaling: bool) -> PinholeCamera:
    """The intrinsics for an image of ``width`` x ``height`` from camera_info intrinsics.

    Same size: unchanged. A resized stream whose camera_info was not resized (same aspect ratio
    within 1 %) is scaled when ``allow_scaling``; anything else raises :class:`MessageError`.
    """
    if (width, height) == (camera.width, camera.height):
        return camera
    sx, sy = width / camera.width, height / camera.height
    if allow_scaling and abs(sx / sy - 1.0) < 0.01:
        return camera.scaled(width, height)
    raise MessageError(
        f"image is {width}x{height} but camera_info is for {camera.width}x{camera.height}"
        + ("" if allow_scaling else " (scaling is disabled)")
        + "; publish a camera_info that matches the image"
    )


# --------------------------------------------------------------------------------------------
# The same geometry on torch tensors, batched with one camera per row (training losses, labels)
#
# Shapes: points (N, 3); pixels (N, 2); T_cam_world (N, 3, 4) world-to-camera, the top three rows
# of inverse poses; intrinsics (N, 4) as fx, fy, cx, cy. Optical axes, pixel (0, 0) the centre of
# the top-left pixel, as everywhere.


def world_to_camera(points: torch.Tensor, T_cam_world: torch.Tensor) -> torch.Tensor:
    """World points (N, 3) -> camera-frame points (N, 3) under per-row transforms (N, 3, 4)."""
    return torch.einsum("nij,nj->ni", T_cam_world[:, :, :3], points) + T_cam_world[:, :, 3]


def camera_to_world(points_cam: torch.Tensor, T_cam_world: torch.Tensor) -> torch.Tensor:
    """Camera-frame points (N, 3) -> world points (N, 3): the inverse of :func:`world_to_camera`."""
    return torch.einsum("nji,nj->ni", T_cam_world[:, :, :3], points_cam - T_cam_world[:, :, 3])


def project_camera_points(points_cam: torch.Tensor, intrinsics: torch.Tensor, min_depth: float) -> torch.Tensor:
    """Camera-frame points (N, 3) -> pixels (N, 2); depths below ``min_depth`` are clamped to it
    (a finite pixel for points behind the camera, which callers mark invalid by their depth)."""
    fx, fy, cx, cy = intrinsics.unbind(1)
    z = points_cam[:, 2].clamp(min=min_depth)
    return torch.stack([fx * points_cam[:, 0] / z + cx, fy * points_cam[:, 1] / z + cy], dim=1)


def pixel_rays(pixels: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Pixels (N, 2) -> their rays (N, 3) in the camera frame, scaled to z = 1 (so depth times
    the ray is the back-projected point)."""
    fx, fy, cx, cy = intrinsics.unbind(1)
    return torch.stack([(pixels[:, 0] - cx) / fx, (pixels[:, 1] - cy) / fy, torch.ones_like(fx)], dim=1)

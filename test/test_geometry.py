"""Rigid transforms, quaternions (x, y, z, w) and the pinhole camera."""

import cv2
import numpy as np
import pytest

from scr_ros.geometry import (
    InvalidPoseError,
    PinholeCamera,
    backproject,
    check_pose,
    invert_pose,
    look_at_rotation,
    make_pose,
    matrix_to_quaternion,
    pose_from_position_quaternion,
    pose_to_position_quaternion,
    project_world_points,
    quaternion_to_matrix,
)


def random_unit_quaternions(rng, n):
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def rodrigues_from_xyzw(q):
    """Rotation from a unit quaternion (x, y, z, w) computed independently with cv2.Rodrigues."""
    x, y, z, w = q
    angle = 2.0 * np.arctan2(np.linalg.norm([x, y, z]), w)
    axis = np.array([x, y, z]) / max(np.linalg.norm([x, y, z]), 1e-300)
    R, _ = cv2.Rodrigues(axis * angle)
    return R


def random_pose(rng):
    R = quaternion_to_matrix(random_unit_quaternions(rng, 1)[0])
    return make_pose(R, rng.uniform(-5, 5, size=3))


def assert_proper_rotation(R, atol=1e-9):
    assert R.shape == (3, 3)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=atol)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=atol)


# --------------------------------------------------------------------------------------------
# Quaternions


def test_quaternion_to_matrix_uses_xyzw_order(rng):
    for q in random_unit_quaternions(rng, 50):
        R = quaternion_to_matrix(q)
        assert_proper_rotation(R)
        np.testing.assert_allclose(R, rodrigues_from_xyzw(q), atol=1e-9)


def test_quaternion_about_z_axis_is_a_right_handed_yaw():
    # 90 degrees about +z, in (x, y, z, w): maps x -> y.
    q = np.array([0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    R = quaternion_to_matrix(q)
    np.testing.assert_allclose(R @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(matrix_to_quaternion(R), q, atol=1e-12)


def test_quaternion_matrix_round_trip_with_sign_canonicalization(rng):
    for q in random_unit_quaternions(rng, 200):
        R = quaternion_to_matrix(q)
        q2 = matrix_to_quaternion(R)
        assert q2.shape == (4,)
        assert q2[3] >= 0.0
        assert np.linalg.norm(q2) == pytest.approx(1.0, abs=1e-12)
        # q and -q are the same rotation; the returned one is the w >= 0 representative.
        np.testing.assert_allclose(q2, q if q[3] >= 0 else -q, atol=1e-9)
        np.testing.assert_allclose(quaternion_to_matrix(-q), R, atol=1e-12)
        np.testing.assert_allclose(quaternion_to_matrix(q2), R, atol=1e-9)


def test_quaternion_is_normalized_and_degenerate_ones_refused():
    q = np.array([0.1, -0.2, 0.3, 0.9])
    np.testing.assert_allclose(quaternion_to_matrix(7.5 * q), quaternion_to_matrix(q / np.linalg.norm(q)), atol=1e-12)
    for bad in ([0.0, 0.0, 0.0, 0.0], [np.nan, 0.0, 0.0, 1.0], [0.0, np.inf, 0.0, 1.0]):
        with pytest.raises(ValueError, match="not a rotation"):
            quaternion_to_matrix(bad)


def test_pose_position_quaternion_round_trip(rng):
    for _ in range(50):
        T = random_pose(rng)
        p, q = pose_to_position_quaternion(T)
        np.testing.assert_array_equal(p, T[:3, 3])
        assert q[3] >= 0
        np.testing.assert_allclose(rodrigues_from_xyzw(q), T[:3, :3], atol=1e-9)
        T2 = pose_from_position_quaternion(p, q)
        np.testing.assert_allclose(T2, T, atol=1e-9)
        np.testing.assert_array_equal(T2[3], [0, 0, 0, 1])


# --------------------------------------------------------------------------------------------
# SE(3)


def test_invert_pose_matches_numpy_inverse(rng):
    Ts = np.stack([random_pose(rng) for _ in range(20)])
    for T in Ts:
        np.testing.assert_allclose(invert_pose(T), np.linalg.inv(T), atol=1e-10)
        np.testing.assert_allclose(invert_pose(T) @ T, np.eye(4), atol=1e-10)
    # Batched input (..., 4, 4).
    np.testing.assert_allclose(invert_pose(Ts), np.linalg.inv(Ts), atol=1e-10)
    np.testing.assert_allclose(invert_pose(Ts.reshape(4, 5, 4, 4)), np.linalg.inv(Ts).reshape(4, 5, 4, 4), atol=1e-10)


def test_check_pose_accepts_a_rigid_transform(rng):
    T = random_pose(rng).astype(np.float32)
    out = check_pose(T)
    assert out.dtype == np.float64 and out.shape == (4, 4)
    np.testing.assert_allclose(out, T)


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda T: T.__setitem__((1, 2), np.nan), "NaN"),
        (lambda T: T.__setitem__((0, 3), np.inf), "infinite"),
        (lambda T: T.__setitem__((slice(0, 3), 0), T[:3, 0] * 1.1), "not orthonormal"),
        (lambda T: T.__setitem__((0, 1), T[0, 1] + 0.05), "not orthonormal"),
        (lambda T: T.__setitem__((slice(0, 3), 2), -T[:3, 2]), "reflection"),
        (lambda T: T.__setitem__((3, 0), 0.5), "last row"),
        (lambda T: T.__setitem__((3, 3), 2.0), "last row"),
    ],
)
def test_check_pose_refuses_with_the_reason(rng, corrupt, reason):
    T = random_pose(rng)
    corrupt(T)
    with pytest.raises(InvalidPoseError, match=reason) as info:
        check_pose(T, what="frame-42 pose")
    assert "frame-42 pose" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_check_pose_refuses_wrong_shape():
    with pytest.raises(InvalidPoseError, match="4x4"):
        check_pose(np.eye(3))


# --------------------------------------------------------------------------------------------
# Pinhole camera


def test_project_backproject_round_trip(rng):
    cam = PinholeCamera(520.0, 515.0, 318.3, 241.7, 640, 480)
    T = random_pose(rng)
    px = np.c_[rng.uniform(0, 640, 500), rng.uniform(0, 480, 500)]
    depth = rng.uniform(0.2, 20.0, 500)
    X_world = backproject(px, depth, cam, T)
    # Independent check: the camera-frame point is depth * K^-1 [u, v, 1].
    X_cam = (np.linalg.inv(cam.K) @ np.c_[px, np.ones(500)].T).T * depth[:, None]
    np.testing.assert_allclose(backproject(px, depth, cam), X_cam, atol=1e-9)
    np.testing.assert_allclose(X_world, X_cam @ T[:3, :3].T + T[:3, 3], atol=1e-9)
    px2, z = project_world_points(X_world, T, cam)
    np.testing.assert_allclose(px2, px, atol=1e-7)
    np.testing.assert_allclose(z, depth, atol=1e-9)


def test_project_uses_optical_axes_and_marks_points_behind():
    cam = PinholeCamera(500.0, 500.0, 320.0, 240.0, 640, 480)
    T = np.eye(4)
    pts = np.array([[0.0, 0.0, 2.0], [1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [0.0, 0.0, -2.0]])
    px, z = project_world_points(pts, T, cam)
    np.testing.assert_allclose(px[0], [320.0, 240.0])
    np.testing.assert_allclose(px[1], [570.0, 240.0])  # +x is right
    np.testing.assert_allclose(px[2], [320.0, 490.0])  # +y is down
    assert np.all(np.isnan(px[3])) and z[3] == -2.0


def gaussian_blob(w, h, x0, y0, sigma):
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    return np.exp(-((xs - x0) ** 2 + (ys - y0) ** 2) / (2 * sigma**2)).astype(np.float32)


def centroid(img):
    img = img.astype(np.float64)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    return np.array([(xs * img).sum() / img.sum(), (ys * img).sum() / img.sum()])


@pytest.mark.parametrize("new_size", [(240, 90), (40, 15), (160, 120)])
def test_scaled_intrinsics_follow_cv2_resize(new_size):
    w0, h0 = 80, 60
    cam = PinholeCamera(70.0, 72.0, 41.3, 28.6, w0, h0)
    x0, y0 = 33.37, 26.81  # sub-pixel blob centre in the original image
    img = gaussian_blob(w0, h0, x0, y0, sigma=3.0)
    np.testing.assert_allclose(centroid(img), [x0, y0], atol=1e-3)
    w1, h1 = new_size
    resized = cv2.resize(img, (w1, h1), interpolation=cv2.INTER_LINEAR)
    measured = centroid(resized)
    # The 3D point seen at (x0, y0) by the original camera must appear at the blob in the resized image.
    X = backproject(np.array([[x0, y0]]), np.array([3.0]), cam)
    small = cam.scaled(w1, h1)
    assert (small.width, small.height) == (w1, h1)
    predicted, _ = project_world_points(X, np.eye(4), small)
    np.testing.assert_allclose(predicted[0], measured, atol=0.05)
    # A naive cx * s scaling would be off by 0.5 * (s - 1) px: make sure this test could tell.
    naive = PinholeCamera(cam.fx * w1 / w0, cam.fy * h1 / h0, cam.cx * w1 / w0, cam.cy * h1 / h0, w1, h1)
    naive_px, _ = project_world_points(X, np.eye(4), naive)
    assert np.abs(naive_px[0] - measured).max() > 0.2


@pytest.mark.parametrize(
    "args",
    [
        (np.nan, 500.0, 320.0, 240.0, 640, 480),
        (500.0, np.inf, 320.0, 240.0, 640, 480),
        (500.0, 500.0, np.nan, 240.0, 640, 480),
        (500.0, 500.0, 320.0, -np.inf, 640, 480),
        (0.0, 500.0, 320.0, 240.0, 640, 480),
        (500.0, -1.0, 320.0, 240.0, 640, 480),
        (500.0, 500.0, 320.0, 240.0, 0, 480),
        (500.0, 500.0, 320.0, 240.0, 640, -480),
    ],
)
def test_pinhole_camera_refuses_bad_values(args):
    with pytest.raises(ValueError):
        PinholeCamera(*args)


def test_pinhole_camera_K_round_trip():
    cam = PinholeCamera(500.0, 510.0, 319.5, 239.5, 640, 480)
    np.testing.assert_array_equal(cam.K, [[500.0, 0, 319.5], [0, 510.0, 239.5], [0, 0, 1]])
    assert PinholeCamera.from_K(cam.K, 640, 480) == cam


# --------------------------------------------------------------------------------------------
# look_at_rotation


def test_look_at_rotation_axes(rng):
    up = np.array([0.0, 0.0, 1.0])
    for _ in range(50):
        forward = rng.normal(size=3)
        forward[2] = np.clip(forward[2], -1.0, 1.0)  # keep it away from parallel to up
        R = look_at_rotation(forward * 3.7, up)
        assert_proper_rotation(R)
        np.testing.assert_allclose(R[:, 2], forward / np.linalg.norm(forward), atol=1e-12)
        assert R[:, 1] @ up < 0.0  # image y (down) points away from up
        assert abs(R[:, 0] @ up) < 1e-12  # no roll: image x is horizontal


def test_look_at_rotation_horizontal_and_roll():
    R = look_at_rotation(np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(R[:, 1], [0.0, 0.0, -1.0], atol=1e-12)  # y straight down
    np.testing.assert_allclose(R[:, 0], [0.0, -1.0, 0.0], atol=1e-12)  # looking along +x, right is -y
    R_roll = look_at_rotation(np.array([1.0, 0.0, 0.0]), roll_rad=0.3)
    assert_proper_rotation(R_roll)
    np.testing.assert_allclose(R_roll[:, 2], [1.0, 0.0, 0.0], atol=1e-12)
    assert np.degrees(np.arccos(np.clip(R_roll[:, 0] @ R[:, 0], -1, 1))) == pytest.approx(np.degrees(0.3))
    with pytest.raises(ValueError, match="parallel"):
        look_at_rotation(np.array([0.0, 0.0, 2.0]))

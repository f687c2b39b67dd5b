"""PnP-RANSAC (poselib) on synthetic correspondences with known pose."""

import numpy as np
import pytest

from scr_ros.geometry import PinholeCamera, backproject, look_at_rotation, make_pose, rotation_angle_deg
from scr_ros.ransac import PnPResult, RansacConfig, solve_pnp

CAM = PinholeCamera(525.0, 520.0, 319.5, 239.5, 640, 480)


def scene(rng, n=2000, outlier_ratio=0.5, noise_px=0.5):
    T = make_pose(look_at_rotation(np.array([0.4, 1.0, -0.3]), roll_rad=0.2), np.array([1.2, -0.7, 1.5]))
    px = np.c_[rng.uniform(0, 640, n), rng.uniform(0, 480, n)]
    X = backproject(px, rng.uniform(1.0, 6.0, n), CAM, T)
    observed = px + rng.normal(scale=noise_px, size=px.shape)
    outlier = rng.random(n) < outlier_ratio
    observed[outlier] = np.c_[rng.uniform(0, 640, outlier.sum()), rng.uniform(0, 480, outlier.sum())]
    return T, observed, X, outlier


def test_solve_pnp_recovers_known_pose(rng):
    T, px, X, outlier = scene(rng)
    assert 0.45 < outlier.mean() < 0.55
    result = solve_pnp(px, X, CAM)
    assert isinstance(result, PnPResult)
    # Camera-to-world, like the input pose (not its inverse).
    dR = rotation_angle_deg(result.T_world_cam[:3, :3].T @ T[:3, :3])
    dt = np.linalg.norm(result.T_world_cam[:3, 3] - T[:3, 3])
    assert dR < 0.1, dR
    assert dt < 0.01, dt
    np.testing.assert_array_equal(result.T_world_cam[3], [0, 0, 0, 1])
    mask = result.inlier_mask
    assert mask.dtype == bool and mask.shape == (len(px),)
    assert result.num_inliers == int(mask.sum())
    # Nearly all true inliers are found and few outliers slip in (a random pixel is within 10 px by chance rarely).
    assert mask[~outlier].mean() > 0.97
    assert mask[outlier].mean() < 0.02
    assert result.iterations >= RansacConfig().min_iterations


def test_solve_pnp_is_reproducible_with_seed(rng):
    T, px, X, _ = scene(rng, n=500, outlier_ratio=0.3)
    a, b = solve_pnp(px, X, CAM, RansacConfig(seed=3)), solve_pnp(px, X, CAM, RansacConfig(seed=3))
    np.testing.assert_array_equal(a.T_world_cam, b.T_world_cam)
    np.testing.assert_array_equal(a.inlier_mask, b.inlier_mask)


@pytest.mark.parametrize("n", [0, 1, 3])
def test_solve_pnp_too_few_points(rng, n):
    T, px, X, _ = scene(rng, n=10, outlier_ratio=0.0)
    assert solve_pnp(px[:n], X[:n], CAM) is None


def test_solve_pnp_mismatched_lengths(rng):
    T, px, X, _ = scene(rng, n=10, outlier_ratio=0.0)
    with pytest.raises(ValueError, match="9 pixels but 10 scene points"):
        solve_pnp(px[:9], X, CAM)
    with pytest.raises(ValueError):
        solve_pnp(px[:2], X[:3], CAM)


def test_refine_pose_uses_every_agreeing_correspondence(rng):
    """RANSAC on a small subset gives a rough pose; refining on all correspondences recovers the
    accuracy of the full set (what the relocalizer does after a selector)."""
    from scr_ros.ransac import refine_pose

    T, px, X, outlier = scene(rng, n=3000, outlier_ratio=0.3, noise_px=1.0)
    rough = T.copy()
    rough[:3, 3] += [0.01, -0.01, 0.005]  # 1.5 cm off: a few pixels at these depths
    T_ref, mask = refine_pose(px, X, rough, CAM)
    assert np.linalg.norm(T_ref[:3, 3] - T[:3, 3]) < 0.003
    assert rotation_angle_deg(T_ref[:3, :3].T @ T[:3, :3]) < 0.05
    assert mask.shape == (3000,) and mask[~outlier].mean() > 0.97 and mask[outlier].mean() < 0.02
    # Too few agreeing points: the pose comes back unchanged.
    far = T.copy()
    far[:3, 3] += [3.0, 0.0, 0.0]
    T_same, mask = refine_pose(px[:10], X[:10], far, CAM)
    assert np.array_equal(T_same, far) and mask.sum() < 4

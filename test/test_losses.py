"""ACE reprojection loss: hand-made cases with known geometry."""

import math

import numpy as np
import pytest
import torch

from scr_ros.errors import SettingsError
from scr_ros.geometry import PinholeCamera, backproject, invert_pose, look_at_rotation, make_pose, project_world_points
from scr_ros.losses import LOSSES, AceReprojectionLoss, build_loss

CAM = PinholeCamera(500.0, 490.0, 320.0, 240.0, 640, 480)
POSE = make_pose(look_at_rotation(np.array([1.0, 0.3, -0.2])), np.array([0.5, -1.0, 1.4]))  # camera-to-world


def batch(pixels: np.ndarray, coords_world: np.ndarray):
    """Tensors as the trainer passes them, for one camera (CAM, POSE)."""
    n = len(pixels)
    T_cam_world = torch.tensor(invert_pose(POSE)[:3], dtype=torch.float32).expand(n, 3, 4).contiguous()
    intr = torch.tensor([CAM.fx, CAM.fy, CAM.cx, CAM.cy], dtype=torch.float32).expand(n, 4).contiguous()
    coords = torch.tensor(coords_world, dtype=torch.float32, requires_grad=True)
    return coords, torch.tensor(pixels, dtype=torch.float32), T_cam_world, intr


def reproj_error(coords_world: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    px, _ = project_world_points(coords_world, POSE, CAM)
    return np.abs(px - pixels).sum(axis=1)


def test_perfect_predictions_give_zero_loss(rng):
    pixels = np.c_[rng.uniform(0, 640, 300), rng.uniform(0, 480, 300)]
    depth = rng.uniform(0.5, 30.0, 300)
    coords_np = backproject(pixels, depth, CAM, POSE)
    loss_fn = AceReprojectionLoss(total_iterations=1000)
    for it in (0, 500, 1000):
        coords, px, T, K = batch(pixels, coords_np)
        loss, stats = loss_fn(coords, px, T, K, iteration=it)
        assert loss.ndim == 0
        assert loss.item() < 2e-3
        assert stats["valid_fraction"] == 1.0
        assert stats["threshold_px"] == loss_fn.threshold(it)


def test_loss_is_a_mean_over_the_batch(rng):
    pixels = np.c_[rng.uniform(0, 640, 5), rng.uniform(0, 480, 5)]
    coords_np = backproject(pixels, np.full(5, 3.0), CAM, POSE) + rng.normal(scale=0.05, size=(5, 3))
    loss_fn = AceReprojectionLoss(total_iterations=100)
    one = loss_fn(*batch(pixels, coords_np), iteration=50)[0].item()
    four = loss_fn(*batch(np.tile(pixels, (4, 1)), np.tile(coords_np, (4, 1))), iteration=50)[0].item()
    assert one > 0.1
    assert four == pytest.approx(one, rel=1e-5)


def test_prediction_behind_camera_is_invalid_and_pulled_to_depth_target():
    pixel = np.array([[400.0, 150.0]])
    cam_point = np.array([[0.3, -0.4, -2.0]])  # behind the camera
    coords_np = cam_point @ POSE[:3, :3].T + POSE[:3, 3]
    loss_fn = AceReprojectionLoss(total_iterations=100)
    coords, px, T, K = batch(pixel, coords_np)
    loss, stats = loss_fn(coords, px, T, K, iteration=0)
    assert stats["valid_fraction"] == 0.0
    # The target: the point at depth_target (10 m) on the pixel's ray, in camera and world frames.
    target_cam = backproject(pixel, np.array([loss_fn.depth_target]), CAM)
    target_world = backproject(pixel, np.array([loss_fn.depth_target]), CAM, POSE)
    assert loss.item() == pytest.approx(np.abs(cam_point - target_cam).sum(), rel=1e-4)
    loss.backward()
    g = coords.grad.numpy().astype(np.float64)
    assert np.all(np.isfinite(g)) and np.linalg.norm(g) > 0
    # The descent direction points towards the target.
    assert -g[0] @ (target_world[0] - coords_np[0]) > 0
    # Following it (small steps) brings the prediction in front of the camera, closer to the target.
    x = coords_np.copy()
    for _ in range(200):
        c, p, T_, K_ = batch(pixel, x)
        value, _ = loss_fn(c, p, T_, K_, iteration=0)
        value.backward()
        x = x - 0.05 * c.grad.numpy()
        if (invert_pose(POSE)[:3, :3] @ x[0] + invert_pose(POSE)[:3, 3])[2] > loss_fn.depth_min:
            break
    z_new = (invert_pose(POSE)[:3, :3] @ x[0] + invert_pose(POSE)[:3, 3])[2]
    assert z_new > loss_fn.depth_min
    assert np.linalg.norm(x[0] - target_world[0]) < np.linalg.norm(coords_np[0] - target_world[0])


def test_invalid_when_too_far_too_close_or_beyond_hard_clamp():
    loss_fn = AceReprojectionLoss(total_iterations=10)
    pixels = np.array([[320.0, 240.0]] * 4)
    cam_pts = np.array(
        [
            [0.0, 0.0, 5.0],  # valid, perfect
            [0.0, 0.0, 0.05],  # closer than depth_min
            [0.0, 0.0, 2000.0],  # farther than depth_max
            [5.0, 0.0, 1.0],  # reprojects 2500 px away: beyond hard clamp
        ]
    )
    coords_np = cam_pts @ POSE[:3, :3].T + POSE[:3, 3]
    _, stats = loss_fn(*batch(pixels, coords_np), iteration=0)
    assert stats["valid_fraction"] == pytest.approx(0.25)
    # Each row alone, to check which one is the valid one.
    valid = [
        loss_fn(*batch(pixels[i : i + 1], coords_np[i : i + 1]), iteration=0)[1]["valid_fraction"] for i in range(4)
    ]
    assert valid == [1.0, 0.0, 0.0, 0.0]


def test_threshold_schedule():
    loss_fn = AceReprojectionLoss(total_iterations=1000)
    assert loss_fn.threshold(0) == pytest.approx(loss_fn.soft_clamp + loss_fn.soft_clamp_min)
    assert loss_fn.threshold(0) == pytest.approx(51.0)
    assert loss_fn.threshold(1000) == pytest.approx(loss_fn.soft_clamp_min)
    taus = [loss_fn.threshold(i) for i in range(0, 1001)]
    assert all(a >= b for a, b in zip(taus, taus[1:]))
    assert taus[0] > taus[-1]
    # Quarter-circle schedule: at half the iterations, tau = soft_clamp * sqrt(1 - 0.5^2) + min.
    assert loss_fn.threshold(500) == pytest.approx(50.0 * math.sqrt(0.75) + 1.0)
    # Clamped outside [0, total].
    assert loss_fn.threshold(5000) == pytest.approx(1.0)
    assert loss_fn.threshold(-10) == pytest.approx(51.0)


def _single_valid(err_px: float):
    """A prediction 4 m in front of the camera that reprojects err_px (L1, all in x) off its pixel."""
    pixel = np.array([[300.0, 200.0]])
    shifted = pixel + [[err_px, 0.0]]
    coords_np = backproject(shifted, np.array([4.0]), CAM, POSE)
    np.testing.assert_allclose(reproj_error(coords_np, pixel), [err_px], rtol=1e-6)
    return pixel, coords_np


def test_valid_loss_saturates_below_hard_clamp():
    loss_fn = AceReprojectionLoss(total_iterations=100)
    for it in (0, 100):
        tau = loss_fn.threshold(it)
        losses, grads = [], []
        for e in (500.0, 900.0):
            pixel, coords_np = _single_valid(e)
            coords, px, T, K = batch(pixel, coords_np)
            loss, stats = loss_fn(coords, px, T, K, iteration=it)
            assert stats["valid_fraction"] == 1.0
            loss.backward()
            losses.append(loss.item())
            grads.append(np.linalg.norm(coords.grad.numpy()))
        # tau * tanh(e / tau) -> tau: a huge error costs about tau, not e, and its gradient vanishes.
        assert losses[0] == pytest.approx(tau, rel=1e-3)
        assert losses[1] == pytest.approx(tau, rel=1e-3)
        assert max(grads) < 1e-2
    # Small errors are (nearly) linear: tau * tanh(e / tau) ~ e for e << tau.
    pixel, coords_np = _single_valid(0.5)
    assert loss_fn(*batch(pixel, coords_np), iteration=0)[0].item() == pytest.approx(0.5, rel=1e-2)


def test_valid_loss_gradient_reduces_reprojection_error(rng):
    loss_fn = AceReprojectionLoss(total_iterations=100)
    pixels = np.c_[rng.uniform(50, 590, 20), rng.uniform(50, 430, 20)]
    coords_np = backproject(pixels + rng.normal(scale=8.0, size=(20, 2)), rng.uniform(2, 6, 20), CAM, POSE)
    err0 = reproj_error(coords_np, pixels)
    coords, px, T, K = batch(pixels, coords_np)
    loss, stats = loss_fn(coords, px, T, K, iteration=50)
    assert stats["valid_fraction"] == 1.0
    loss.backward()
    stepped = coords_np - 1e-5 * coords.grad.numpy()
    err1 = reproj_error(stepped, pixels)
    assert np.all(err1 < err0)


def test_build_loss():
    assert "ace" in LOSSES
    loss = build_loss("ace", 123, soft_clamp=20.0)
    assert isinstance(loss, AceReprojectionLoss)
    assert loss.total_iterations == 123 and loss.soft_clamp == 20.0
    assert loss.threshold(0) == pytest.approx(21.0)
    with pytest.raises(SettingsError, match="unknown loss 'nope'.*ace"):
        build_loss("nope", 10)
    with pytest.raises(SettingsError, match="bad settings for loss 'ace'.*not_a_setting"):
        build_loss("ace", 10, not_a_setting=1)
    assert LOSSES.lookup("ace-depth").uses_depth and not LOSSES.lookup("ace").uses_depth  # read without building one


# ---------------------------------------------------------------------------------------------
# ace-depth: the depth-anchored variant


def _one_sample(pred_cam, depth):
    """A camera at the origin looking down +z, one pixel at the principal point."""
    import torch

    T = torch.eye(4)[:3][None]
    K = torch.tensor([[500.0, 500.0, 320.0, 240.0]])
    px = torch.tensor([[320.0, 240.0]])
    coords = torch.tensor([pred_cam], dtype=torch.float32, requires_grad=True)
    d = None if depth is None else torch.tensor([depth], dtype=torch.float32)
    return coords, px, T, K, d


def test_depth_loss_pulls_along_the_ray_towards_measured_depth():
    """On the ray, reprojection error is zero at any depth: only the depth term can fix it."""
    loss_fn = build_loss("ace-depth", 100)
    coords, px, T, K, d = _one_sample([0.0, 0.0, 5.0], depth=2.0)
    loss, _ = loss_fn(coords, px, T, K, 0, depth=d)
    loss.backward()
    assert coords.grad[0, 2] > 0  # descending moves z from 5 m towards 2 m
    assert abs(loss.item() - loss_fn.depth_weight * 3.0) < 1e-3
    plain = build_loss("ace", 100)
    coords2, px, T, K, _ = _one_sample([0.0, 0.0, 5.0], depth=None)
    assert plain(coords2, px, T, K, 0)[0].item() < 1e-6  # pure ACE cannot see this error


def test_depth_loss_without_depth_equals_ace():
    import torch

    rng = torch.Generator().manual_seed(0)
    coords = torch.randn(64, 3, generator=rng) + torch.tensor([0.0, 0.0, 3.0])
    px = torch.rand(64, 2, generator=rng) * 400
    T = torch.eye(4)[:3].repeat(64, 1, 1)
    K = torch.tensor([[500.0, 500.0, 320.0, 240.0]]).repeat(64, 1)
    a = build_loss("ace", 100)(coords, px, T, K, 10)[0]
    b = build_loss("ace-depth", 100)(coords, px, T, K, 10, depth=None)[0]
    c = build_loss("ace-depth", 100)(coords, px, T, K, 10, depth=torch.full((64,), float("nan")))[0]
    assert torch.allclose(a, b) and torch.allclose(a, c)


def test_depth_loss_sends_invalid_predictions_to_the_depth_point():
    loss_fn = build_loss("ace-depth", 100)
    coords, px, T, K, d = _one_sample([0.0, 0.0, -1.0], depth=2.0)  # behind the camera: invalid
    loss, stats = loss_fn(coords, px, T, K, 0, depth=d)
    assert stats["valid_fraction"] == 0.0
    # L1 to the depth point (3 m) plus the depth term (beta * 3 m), not the 10 m default target
    assert abs(loss.item() - (3.0 + loss_fn.depth_weight * 3.0)) < 1e-3

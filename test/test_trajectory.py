"""Trajectories: TUM files, TUM datasets, rigid alignment and errors (checked against evo), and
the drift model."""

from __future__ import annotations

import numpy as np
import pytest

from scr_ros.datasets import open_dataset
from scr_ros.errors import DatasetError, ScrError
from scr_ros.evaluation.drift import DRIFT_LEVELS, DriftModel, drift_poses, parse_drift
from scr_ros.evaluation.trajectory import poses_at, read_tum, rigid_alignment, trajectory_errors, write_tum
from scr_ros.geometry import look_at_rotation, make_pose, rotation_about_axis


def walk(n: int = 200, seed: int = 0) -> np.ndarray:
    """A smooth hand-held-like trajectory (N, 4, 4) over a few metres."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, n)
    poses = []
    for k, a in enumerate(t):
        centre = np.array([2.0 * np.cos(a), 1.5 * np.sin(a), 1.4 + 0.1 * np.sin(3 * a)])
        forward = np.array([np.cos(a + 1.2), np.sin(a + 1.2), -0.1]) + 0.02 * rng.normal(size=3)
        poses.append(make_pose(look_at_rotation(forward / np.linalg.norm(forward)), centre))
    return np.stack(poses)


def test_tum_files_round_trip_and_bad_lines_are_refused(tmp_path):
    poses = walk(50)
    stamps = 1_700_000_000.0 + np.arange(50) * 0.1
    path = write_tum(tmp_path / "traj.txt", stamps, poses, comment="test trajectory")
    text = path.read_text()
    assert text.startswith("# test trajectory\n# stamp tx ty tz qx qy qz qw\n")
    s, p = read_tum(path)
    np.testing.assert_allclose(s, stamps, atol=1e-6)
    np.testing.assert_allclose(p, poses, atol=1e-8)
    for bad, message in (
        ("1.0 0 0 0 0 0 0\n", "8 finite numbers"),
        ("1.0 0 0 0 0 0 0 0\n", "zero quaternion"),
        ("2.0 0 0 0 0 0 0 1\n1.0 0 0 0 0 0 0 1\n", "does not increase"),
        ("1.0 0 0 nan 0 0 0 1\n", "8 finite numbers"),
        ("# only a comment\n", "no poses"),
        ("one two three\n", "not a TUM pose line"),
    ):
        (tmp_path / "bad.txt").write_text(bad)
        with pytest.raises(DatasetError, match=message):
            read_tum(tmp_path / "bad.txt")


def test_tum_files_are_what_evo_reads(tmp_path):
    from evo.tools import file_interface

    poses = walk(30)
    stamps = np.arange(30) * 0.5
    traj = file_interface.read_tum_trajectory_file(str(write_tum(tmp_path / "t.txt", stamps, poses)))
    np.testing.assert_allclose(np.stack(traj.poses_se3), poses, atol=1e-8)
    np.testing.assert_allclose(traj.timestamps, stamps)


def test_alignment_and_errors_agree_with_evo():
    """ATE RMSE after a rigid (SE(3), no scale) alignment, as evo's APE computes it."""
    from evo.core import metrics, sync
    from evo.core.trajectory import PoseTrajectory3D

    truth = walk(120)
    rng = np.random.default_rng(1)
    # The estimate: the truth moved rigidly, plus noise of a few centimetres and a degree.
    offset = make_pose(rotation_about_axis(np.array([0.2, 0.3, 1.0]), 0.4), np.array([1.0, -2.0, 0.5]))
    estimated = []
    for T in truth:
        noise = make_pose(rotation_about_axis(rng.normal(size=3), np.radians(rng.normal())), 0.03 * rng.normal(size=3))
        estimated.append(offset @ T @ noise)
    estimated = np.stack(estimated)
    ours = trajectory_errors(estimated, truth)
    stamps = np.arange(len(truth), dtype=float)
    ref, est = (
        PoseTrajectory3D(poses_se3=list(truth), timestamps=stamps),
        PoseTrajectory3D(poses_se3=list(estimated), timestamps=stamps),
    )
    ref, est = sync.associate_trajectories(ref, est)
    est.align(ref, correct_scale=False)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    stats = ape.get_all_statistics()
    assert ours["ate_rmse_m"] == pytest.approx(stats["rmse"], rel=1e-6)
    assert ours["median_translation_m"] == pytest.approx(stats["median"], rel=1e-6)
    ape_r = metrics.APE(metrics.PoseRelation.rotation_angle_deg)
    ape_r.process_data((ref, est))
    assert ours["median_rotation_deg"] == pytest.approx(ape_r.get_all_statistics()["median"], rel=1e-5)
    # The alignment undoes the rigid offset (up to the noise).
    A = np.asarray(ours["alignment"])
    assert np.linalg.norm((A @ offset)[:3, 3]) < 0.05
    with pytest.raises(ValueError, match="at least 3"):
        rigid_alignment(truth[:2, :3, 3], truth[:2, :3, 3])


def test_poses_at_interpolates_inside_the_trajectory_only():
    poses = walk(11)
    stamps = np.arange(11) * 0.1
    got, found = poses_at(stamps, poses, np.array([-0.05, 0.0, 0.25, 1.0, 1.05]), max_gap=0.15)
    assert found.tolist() == [False, True, True, True, False]
    np.testing.assert_allclose(got[1], poses[0])
    assert np.linalg.norm(got[2][:3, 3] - (poses[2][:3, 3] + poses[3][:3, 3]) / 2) < 1e-9
    _, found = poses_at(stamps, poses, np.array([0.25]), max_gap=0.05)  # a gap wider than allowed
    assert not found[0]


# ---------------------------------------------------------------------------------------- drift


def test_drift_is_deterministic_keeps_the_first_pose_and_has_the_stated_statistics():
    # A straight drive of 10 m in 0.1 m steps along the camera's optical axis, no turning.
    forward = look_at_rotation(np.array([1.0, 0.0, 0.0]))
    poses = np.stack([make_pose(forward, [0.1 * k, 0.0, 1.0]) for k in range(101)])
    scale_only = drift_poses(poses, DriftModel(scale=1.02))
    assert np.allclose(scale_only[0], poses[0])
    assert scale_only[-1][0, 3] == pytest.approx(1.02 * 10.0, rel=1e-9)  # 2 % of 10 m
    yaw_only = drift_poses(poses, DriftModel(yaw_bias_deg_per_m=1.0))
    R = yaw_only[-1][:3, :3] @ poses[-1][:3, :3].T
    angle = np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))
    assert angle == pytest.approx(10.0, abs=1e-6)  # 1 deg/m over 10 m, about the up axis
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    assert abs(axis[2]) / np.linalg.norm(axis) > 0.999  # z is up in this world
    # The same model and seed, the same trajectory; another seed, another one.
    vio = parse_drift("vio")
    a, b, c = drift_poses(poses, vio), drift_poses(poses, vio), drift_poses(poses, parse_drift("vio,seed=1"))
    assert np.array_equal(a, b) and not np.allclose(a, c)
    # The noise has the stated size: per-axis translation noise 2 % of the step.
    noise_only = drift_poses(poses, DriftModel(translation_noise=0.02, seed=3))
    steps = np.linalg.inv(noise_only[:-1]) @ noise_only[1:]
    deviation = steps[:, :3, 3] - np.array([0.0, 0.0, 0.1])  # the step along the optical axis
    assert np.std(deviation) == pytest.approx(0.02 * 0.1, rel=0.15)


def test_drift_levels_and_specs():
    assert parse_drift("wheel") == DRIFT_LEVELS["wheel"] and DRIFT_LEVELS["wheel"].scale == 1.03
    assert parse_drift("vio,seed=4").seed == 4 and parse_drift("vio,seed=4").scale == 1.01
    assert parse_drift("scale=1.05,yaw_bias_deg_per_m=2").yaw_bias_deg_per_m == 2.0
    for bad, message in (
        ("bogus", "not a level"),
        ("vio,fast=1", "unknown setting 'fast'"),
        ("scale=x", "must be a number"),
        ("scale=5", "scale must be"),
        ("", "empty"),
    ):
        with pytest.raises(ScrError, match=message):
            parse_drift(bad)


# ------------------------------------------------------------------------------ TUM datasets


def test_a_tum_sequence_opens_as_a_dataset(tmp_path, tiny):
    """A TUM RGB-D-style folder: rgb.txt, depth.txt, groundtruth.txt at a higher rate."""
    import shutil

    frames = tiny.frames("train")[:10]
    root = tmp_path / "seq"
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rgb_lines, depth_lines = [], []
    for k, f in enumerate(frames):
        stamp = 100.0 + k
        shutil.copy(f.image_path, root / "rgb" / f"{stamp:.6f}.png")
        rgb_lines.append(f"{stamp:.6f} rgb/{stamp:.6f}.png")
        import cv2

        depth = f.load_depth()
        cv2.imwrite(str(root / "depth" / f"{stamp + 0.01:.6f}.png"), np.nan_to_num(depth * 5000).astype(np.uint16))
        depth_lines.append(f"{stamp + 0.01:.6f} depth/{stamp + 0.01:.6f}.png")
    (root / "rgb.txt").write_text("# color images\n" + "\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    # Ground truth at 20 Hz around the image stamps (every image between two of its poses).
    gt_stamps = 100.0 + np.arange(0, 9.001, 0.05)
    truth = np.stack([f.pose for f in frames])
    dense, _ = poses_at(100.0 + np.arange(10), truth, gt_stamps, max_gap=1.5)
    write_tum(root / "groundtruth.txt", gt_stamps, dense)
    c = frames[0].camera
    (root / "intrinsics.txt").write_text(f"{c.fx} {c.fy} {c.cx} {c.cy}\n")
    ds = open_dataset(root)
    assert ds.layout == "tum" and len(ds.frames("train")) == 10
    got = ds.frames("train")
    for f, T in zip(got, truth):
        np.testing.assert_allclose(f.pose, T, atol=1e-6)
    assert got[3].stamp_ns == 103_000_000_000 and got[3].depth_path is not None
    np.testing.assert_allclose(got[3].load_depth(), frames[3].load_depth(), atol=2e-4, equal_nan=True)
    # Without intrinsics.txt a folder that is not a named TUM RGB-D sequence is refused.
    (root / "intrinsics.txt").unlink()
    with pytest.raises(DatasetError, match="no intrinsics"):
        open_dataset(root)

"""Fixes a nav stack can trust: the relocalizer core's decisions on a scripted relocalizer.

The relocalizer here returns poses the test chooses (with exact 2D-3D inliers around them), so
each decision is checked frame by frame and fast: the first-fix check after a lost spell (the
kidnapped robot), the jump gate without odometry, ``~/publish_initial_pose``'s rules, frames that
finish after a reset, the TF mount and the buffer after a clock jump, ``~/status`` and
``~/localize``. The same decisions on a trained map: test_relocalizer_logic.py; over the wire:
test_ros_nodes.py.
"""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest

from scr_ros.geometry import PinholeCamera, make_pose, project_world_points, rotation_about_axis
from scr_ros.node_logic.params import ParameterError
from scr_ros.node_logic.relocalizer_core import CameraFrame, LocalizeRequests, RelocalizerCore
from scr_ros.relocalize import Localization

CAM = PinholeCamera(500.0, 500.0, 319.5, 239.5, 640, 480)
S = 10**9  # one second in ns


class ScriptedRelocalizer:
    """Stands in for :class:`~scr_ros.relocalize.Relocalizer`: ``poses`` gives, frame by frame,
    the camera pose to report (None: lost)."""

    splits_in_two = False
    device = "cpu"
    labels_name = None

    def __init__(self, seed: int = 0) -> None:
        self.poses: list[np.ndarray | None] = []
        self.config = None
        self.rng = np.random.default_rng(seed)

    def localize(self, image, camera) -> Localization:
        T = self.poses.pop(0)
        if T is None:
            empty = np.zeros((0, 2))
            return Localization(
                False, "only 3 inliers (< 100)", None, 3, 0, empty, np.zeros((0, 3)), np.zeros(0, bool), {}
            )
        n = 300
        depth = self.rng.uniform(1.0, 5.0, n)
        pix = np.stack([self.rng.uniform(0, camera.width, n), self.rng.uniform(0, camera.height, n)], axis=1)
        rays = np.stack([(pix[:, 0] - camera.cx) / camera.fx, (pix[:, 1] - camera.cy) / camera.fy, np.ones(n)], 1)
        X = (rays * depth[:, None]) @ T[:3, :3].T + T[:3, 3]
        pix = project_world_points(X, T, camera)[0] + self.rng.normal(0, 0.5, (n, 2))
        return Localization(True, "", T, n, n, pix, X, np.ones(n, bool), {})


def scripted_core(**params) -> tuple[RelocalizerCore, ScriptedRelocalizer]:
    # The camera is the base unless a test says otherwise (base_to_camera [] : from TF).
    core = RelocalizerCore({"device": "cpu", "max_image_age": 0.0, "base_to_camera": [0, 0, 0, 0, 0, 0, 1.0], **params})
    reloc = ScriptedRelocalizer()
    scene_map = types.SimpleNamespace(
        training={"frames": 1},
        encoder={"name": "scripted"},
        head=types.SimpleNamespace(head_type="none"),
        cloud_xyz=None,
    )
    core.install(("scripted.safetensors", scene_map, reloc))
    return core, reloc


def frame(stamp_ns: int) -> CameraFrame:
    return CameraFrame(np.zeros((CAM.height, CAM.width), np.uint8), CAM, stamp_ns, "camera_optical")


def pose_at(x: float, y: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    return make_pose(rotation_about_axis(np.array([0.0, 1.0, 0.0]), np.radians(yaw_deg)), np.array([x, y, 1.0]))


class Odometry:
    """A TF source: odometry that the test moves, a fixed mount, and what the core asked of it."""

    def __init__(self, T_base_cam=None) -> None:
        self.T_odom_base = np.eye(4)
        self.T_base_cam = np.eye(4) if T_base_cam is None else T_base_cam
        self.mount_lookups: list[tuple[int | None, float]] = []
        self.cleared = 0

    def odom_base(self, stamp_ns: int) -> np.ndarray:
        return self.T_odom_base

    def base_camera(self, camera_frame: str, stamp_ns: int | None, timeout_s: float) -> np.ndarray:
        self.mount_lookups.append((stamp_ns, timeout_s))
        return self.T_base_cam

    def clear(self) -> None:
        self.cleared += 1


def run(core, reloc, poses, t0_ns, dt_ns, tf=None):
    reloc.poses.extend(poses)
    return [core.process(frame(t0_ns + i * dt_ns), t0_ns + i * dt_ns, tf) for i in range(len(poses))]


def test_a_kidnapped_robot_is_not_trusted_on_its_first_fix_after_a_lost_spell():
    """Confirmed at A; carried to B while odometry stands still; lost for longer than
    lost_timeout; sees the map again at B. Nothing goes to TF or initialpose before
    confirm_fixes agreeing fixes at B, and B comes within jump_reset_frames + confirm_fixes."""
    core, reloc = scripted_core(
        confirm_fixes=3, publish_initial_pose=True, lost_timeout=1.0, tf_mode="map_to_odom", jump_reset_frames=5
    )
    odom = Odometry()
    A, B = pose_at(0.0), pose_at(4.0, 2.0, 90.0)
    outs = run(core, reloc, [A] * 3, 10 * S, S // 10, odom)
    assert [o.confirmed for o in outs] == [False, False, True] and outs[-1].initial_pose
    map_odom_at_A = core.broadcast.T_map_odom.copy()
    outs = run(core, reloc, [None] * 3, 11 * S, S // 10, odom)  # black frames
    assert [o.status for o in outs] == ["lost"] * 3 and [o.state for o in outs] == ["localized"] * 3
    # five seconds later: the robot stands at B, odometry says it never moved
    outs = run(core, reloc, [B] * 12, 16 * S, S // 10, odom)
    first_ok = next(i for i, o in enumerate(outs) if o.status == "ok")
    trusted = [i for i, o in enumerate(outs) if o.confirmed or o.initial_pose or o.T_map_odom is not None]
    assert trusted, [(o.status, o.reason) for o in outs]
    assert trusted[0] >= first_ok + 2  # three agreeing fixes at B before anything is trusted
    assert trusted[0] <= 5 + 3  # jump_reset_frames + confirm_fixes
    assert all(o.state != "localized" for o in outs[: trusted[0]])
    assert outs[trusted[0]].initial_pose and np.allclose(outs[trusted[0]].T_map_base, B)
    assert not np.allclose(core.broadcast.T_map_odom, map_odom_at_A)
    assert np.allclose(core.broadcast.T_map_odom @ odom.T_odom_base, B)


def test_a_lost_spell_without_odometry_also_needs_fresh_confirmation():
    core, reloc = scripted_core(confirm_fixes=3, publish_initial_pose=True, lost_timeout=1.0, tf_mode="none")
    A = pose_at(0.0)
    assert run(core, reloc, [A] * 3, 10 * S, S // 10)[-1].confirmed
    run(core, reloc, [None] * 3, 11 * S, S // 10)
    outs = run(core, reloc, [A] * 3, 16 * S, S // 10)
    assert [o.confirmed for o in outs] == [False, False, True]
    assert [o.initial_pose for o in outs] == [False, False, True]
    assert [o.state for o in outs] == ["unconfirmed", "unconfirmed", "localized"]


def test_without_odometry_the_jump_gate_compares_with_the_last_fix_and_allows_for_time():
    core, reloc = scripted_core(confirm_fixes=1, tf_mode="none", max_jump_translation=0.5, max_speed=1.0)
    outs = run(core, reloc, [pose_at(0.0), pose_at(3.0)], 10 * S, S // 10)
    assert outs[0].status == "ok" and outs[1].status == "jump", outs[1].reason
    assert "without odometry" in outs[1].reason and "last fix" in outs[1].reason
    # 3 s later a 3 m move is within 0.5 m + 1 m/s x 3 s
    outs = run(core, reloc, [pose_at(3.0)], 13 * S, S)
    assert outs[0].status == "ok", outs[0].reason


def test_publish_initial_pose_service_sends_only_confirmed_fixes_and_honours_the_parameter():
    core, reloc = scripted_core(confirm_fixes=3, publish_initial_pose=False, tf_mode="none")
    run(core, reloc, [pose_at(0.0)] * 3, 10 * S, S // 10)
    assert core.request_initial_pose() == ("refused", None)
    core.update_params({"publish_initial_pose": True})
    core.reset()
    outs = run(core, reloc, [pose_at(0.0)] * 2, 20 * S, S // 10)
    assert not outs[-1].confirmed and core.last_fix is None
    assert core.request_initial_pose() == ("next", None)  # an unconfirmed fix is never sent
    outs = run(core, reloc, [pose_at(0.0)], 21 * S, S // 10)
    assert outs[-1].confirmed and outs[-1].initial_pose  # the request: the next confirmed fix
    when, fix = core.request_initial_pose()
    assert when == "now" and fix is outs[-1]


def test_a_frame_begun_before_a_reset_changes_nothing_when_it_finishes():
    core, reloc = scripted_core(confirm_fixes=1, tf_mode="none")
    run(core, reloc, [pose_at(0.0)], 10 * S, S)
    reloc.poses.append(pose_at(5.0))
    started = core.begin(frame(11 * S), 11 * S)
    core.reset()
    out = core.finish(started)
    assert out.status == "stale" and "before a reset" in out.reason
    assert core.last_fix is None and core.confirmation.count == 0 and core.counters.stale_after_reset == 1
    # the same after a map swap
    reloc.poses.append(pose_at(5.0))
    started = core.begin(frame(12 * S), 12 * S)
    core.install((core.map_path, core.map, reloc))
    assert core.finish(started).status == "stale"


def test_the_mount_comes_from_the_parameter_without_tf_else_once_from_tf_for_a_static_mount():
    mount = [0.1, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5]
    core, reloc = scripted_core(confirm_fixes=1, tf_mode="map_to_odom", base_to_camera=mount)
    tf = Odometry()
    run(core, reloc, [pose_at(0.0)] * 3, 10 * S, S // 10, tf)
    assert tf.mount_lookups == []  # the parameter: no TF wait at all
    core.update_params({"base_to_camera": []})
    run(core, reloc, [pose_at(0.0)] * 3, 11 * S, S // 10, tf)
    assert tf.mount_lookups == [(None, 0.0)]  # static: looked up once, latest, no wait, then kept
    core2, reloc2 = scripted_core(
        confirm_fixes=1, tf_mode="map_to_odom", static_mount=False, tf_timeout=0.05, base_to_camera=[]
    )
    tf2 = Odometry()
    run(core2, reloc2, [pose_at(0.0)] * 2, 10 * S, S // 10, tf2)
    assert tf2.mount_lookups == [(10 * S, 0.05), (10 * S + S // 10, 0.05)]  # moving: at each stamp


def test_a_clock_jump_clears_the_tf_buffer_and_the_kept_mount():
    core, reloc = scripted_core(confirm_fixes=1, tf_mode="map_to_odom", base_to_camera=[])
    tf = Odometry()
    run(core, reloc, [pose_at(0.0)] * 2, 100 * S, S // 10, tf)
    assert tf.cleared == 0 and len(tf.mount_lookups) == 1
    outs = run(core, reloc, [pose_at(0.0)], 10 * S, S // 10, tf)  # a bag played again
    assert outs[0].clock_jump and tf.cleared == 1
    assert len(tf.mount_lookups) == 2  # looked up again after the jump


def test_status_follows_the_fixes():
    core = RelocalizerCore({"device": "cpu"})
    assert core.state == "no_map"
    core, reloc = scripted_core(confirm_fixes=2, lost_timeout=1.0, tf_mode="none")
    assert core.state == "lost"
    outs = run(core, reloc, [pose_at(0.0), pose_at(0.0), None, None], 10 * S, S // 10)
    assert [o.state for o in outs] == ["unconfirmed", "localized", "localized", "localized"]
    outs = run(core, reloc, [None], 12 * S, S)
    assert outs[0].state == "lost" and core.diagnostics()[2]["status"] == "lost"
    core.unload()
    assert core.state == "no_map"


def test_localize_requests_wait_for_a_confirmed_fix_and_time_out_with_the_reason():
    core, reloc = scripted_core(confirm_fixes=2, tf_mode="none")
    requests = LocalizeRequests()
    assert requests.wanted(on_demand=False) and not requests.wanted(on_demand=True)
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(requests.wait(5.0)))
    waiter.start()
    while requests.pending == 0:
        threading.Event().wait(0.01)
    assert requests.wanted(on_demand=True)
    for out in run(core, reloc, [None, pose_at(0.0), pose_at(0.0)], 10 * S, S // 10):
        requests.offer(out)
    waiter.join(5.0)
    assert answers and answers[0].confirmed and np.allclose(answers[0].T_map_cam, pose_at(0.0))
    assert requests.pending == 0
    for out in run(core, reloc, [None], 11 * S, S // 10):
        requests.offer(out)
    assert requests.wait(0.05) is None and "lost" in requests.last_reason


def test_a_mount_of_the_wrong_length_is_refused_with_its_name():
    with pytest.raises(ParameterError, match="base_to_camera"):
        RelocalizerCore({"device": "cpu", "base_to_camera": [0.0, 0.0, 1.0]})


# ---------------------------------------------------------------------------- max_position_std


def _correspondences(depth_range, n=600, noise_px=1.0, seed=0):
    """Pixels and scene coordinates of a camera at the origin (world = camera axes) seeing points
    at ``depth_range`` metres, the pixels with Gaussian noise."""
    rng = np.random.default_rng(seed)
    pix = np.stack([rng.uniform(0, CAM.width, n), rng.uniform(0, CAM.height, n)], axis=1)
    rays = np.stack([(pix[:, 0] - CAM.cx) / CAM.fx, (pix[:, 1] - CAM.cy) / CAM.fy, np.ones(n)], 1)
    X = rays * rng.uniform(*depth_range, n)[:, None]
    return pix + rng.normal(0, noise_px, (n, 2)), X


def _solve(pixels, coords, **config):
    from scr_ros.relocalize import Relocalizer, RelocalizerConfig
    from scr_ros.selectors import build_selector

    relocalizer = types.SimpleNamespace(config=RelocalizerConfig(**config))
    return Relocalizer._solve(relocalizer, pixels, coords, {}, CAM, build_selector("all"), {}, 0.0)


def test_a_fix_on_far_content_is_refused_with_the_reason_and_a_near_one_kept():
    """Inliers kilometres away agree with any camera position: thousands of them still leave the
    position unconstrained, and the fix is refused (lost, with the reason), while the same number
    of inliers a few metres away pin it down to centimetres."""
    near = _solve(*_correspondences((1.0, 4.0)))
    assert near.success and near.position_std < 0.05, near.position_std
    assert np.allclose(near.T_world_cam[:3, 3], 0.0, atol=0.05)
    far = _solve(*_correspondences((300.0, 2000.0)))
    assert not far.success and far.T_world_cam is None
    assert far.reason.startswith("position not constrained") and "max_position_std 0.2" in far.reason
    assert far.position_std > 0.2 and far.covariance is not None
    assert far.num_inliers > 500  # refused for what the inliers constrain, not their count
    off = _solve(*_correspondences((300.0, 2000.0)), max_position_std=0.0)
    assert off.success and off.position_std == far.position_std


def test_reports_count_accepted_and_wrong_fixes_and_refusals_by_reason():
    from scr_ros.evaluation.localization import FrameResult, summarize
    from scr_ros.evaluation.reports import format_table

    def result(name, ok, t, reason=""):
        T = np.eye(4) if ok else None
        return FrameResult(name, ok, reason, T, np.eye(4), t if ok else np.inf, 1.0 if ok else np.inf, 100, 0.5, {})

    report = summarize(
        [
            result("a", True, 0.02),
            result("b", True, 3.0),  # accepted and metres off: a wrong fix
            result("c", False, 0, "position not constrained: std 0.90 > max_position_std 0.2"),
            result("d", False, 0, "only 12 inliers (< 100)"),
            result("e", False, 0, "only 40 inliers (< 100)"),
        ]
    )
    assert report["accepted_fixes"] == 2 and report["wrong_fixes"] == 1 and report["lost"] == 3
    assert report["refused"] == {"position not constrained": 1, "too few inliers": 2}
    table = format_table(report)
    assert "accepted fixes    2, wrong 1" in table and "1 position not constrained" in table

"""The mapping node's decisions, without ROS: validation, keyframes, recording that survives a
crash and resumes, depth pairing, and the build job with progress, cancel and atomic output."""

import json
import threading
import time

import numpy as np
import pytest

from scr_ros.datasets import open_dataset
from scr_ros.errors import DatasetError, MappingCancelled, ScrError
from scr_ros.geometry import PinholeCamera, make_pose, rotation_about_axis
from scr_ros.mapfile import load_map
from scr_ros.node_logic.mapping_core import (
    KeyframePolicy,
    MapBuildJob,
    MappingCore,
    PoseBuffer,
    SessionRecorder,
    StampMatcher,
    body_to_camera_matrix,
    interpolate_pose,
)

CAM = PinholeCamera(60.0, 60.0, 31.5, 23.5, 64, 48)
S = 1_000_000_000


def pose(x=0.0, yaw_deg=0.0):
    return make_pose(rotation_about_axis(np.array([0.0, 1.0, 0.0]), np.radians(yaw_deg)), np.array([x, 0.0, 0.0]))


@pytest.fixture
def image(rng):
    return rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)


def test_keyframes_by_translation_rotation_and_time():
    sel = KeyframePolicy(min_translation=0.1, min_rotation_deg=10.0, max_interval_s=2.0)
    assert sel.decide(pose(), 0) == "first"
    sel.accept(pose(), 0)
    assert sel.decide(pose(0.05), S) == ""
    assert sel.decide(pose(0.12), S).startswith("moved 0.120")
    assert sel.decide(pose(0.0, 12.0), S).startswith("turned 12.0")
    assert sel.decide(pose(0.01, 1.0), 2 * S) == "time"
    assert KeyframePolicy(0.1, 10.0, 0.0).decide(pose(), 0) == "first"
    off = KeyframePolicy(0.1, 10.0, 0.0)
    off.accept(pose(), 0)
    assert off.decide(pose(0.01), 100 * S) == ""  # no time fallback when max_interval is 0
    every = KeyframePolicy(0.0, 0.0, 0.0)  # scr bag map on a dataset bag: every frame
    every.accept(pose(), 0)
    assert every.decide(pose(), 1) == "every frame"


def test_recorded_stamps_reach_the_dataset_frames(tmp_path, image):
    """Posed folders carry the mapping node's stamps (meta/), so scr bag convert keeps them."""
    rec = SessionRecorder(tmp_path / "s")
    for i in range(2):
        rec.add(image, pose(0.1 * i), CAM, 1_000 + i * S, "cam", None, "first")
    assert [f.stamp_ns for f in open_dataset(tmp_path / "s").frames("train")] == [1_000, 1_000 + S]
    (tmp_path / "s" / "meta" / "frame_000001.json").write_text('{"stamp_ns": -5}')
    with pytest.raises(DatasetError, match="frame_000001.json: stamp_ns must be a non-negative integer"):
        open_dataset(tmp_path / "s")


def test_recorder_writes_a_folder_scr_map_can_read(tmp_path, image):
    rec = SessionRecorder(tmp_path / "s")
    depth = np.full((48, 64), 1.5, np.float32)
    names = [rec.add(image, pose(0.1 * i), CAM, i * S, "cam", depth if i == 1 else None, "first") for i in range(3)]
    assert names == ["frame_000000", "frame_000001", "frame_000002"]
    ds = open_dataset(tmp_path / "s")
    frames = ds.frames("train")
    assert [f.name for f in frames] == names
    assert np.array_equal(frames[0].load_image(), image) and frames[0].camera == PinholeCamera(
        60.0, 60.0, 31.5, 23.5, 64, 48
    )
    assert np.allclose(frames[2].pose, pose(0.2))
    assert (
        frames[1].depth_path is not None and np.allclose(frames[1].load_depth(), 1.5) and frames[0].depth_path is None
    )
    meta = json.loads((tmp_path / "s" / "meta" / "frame_000001.json").read_text())
    assert meta["stamp_ns"] == S and meta["camera_frame"] == "cam" and meta["pose_frame"] == "map"


def test_recorder_resumes_and_cleans_up_after_a_crash(tmp_path, image):
    rec = SessionRecorder(tmp_path / "s")
    rec.add(image, pose(0.0), CAM, 0, "cam")
    rec.add(image, pose(0.3), CAM, 5 * S, "cam")
    # the node died while writing frame 2: its pose and a temporary image exist, the image does not
    (tmp_path / "s" / "poses" / "frame_000002.txt").write_text("garbage")
    (tmp_path / "s" / "rgb" / ".frame_000002.png.abc.tmp").write_bytes(b"half")
    again = SessionRecorder(tmp_path / "s")
    assert again.count == 2 and again.next_index == 2 and again.removed_partial == ["frame_000002"]
    assert not list((tmp_path / "s").rglob("*.tmp"))
    T, stamp = again.last_keyframe()
    assert np.allclose(T, pose(0.3)) and stamp == 5 * S
    assert again.add(image, pose(0.6), CAM, 6 * S, "cam") == "frame_000002"
    assert len(open_dataset(tmp_path / "s").frames("train")) == 3


def test_recorder_refuses_a_folder_recorded_in_another_frame(tmp_path):
    SessionRecorder(tmp_path / "s", pose_frame="map")
    with pytest.raises(ScrError, match="odom"):
        SessionRecorder(tmp_path / "s", pose_frame="odom")


def test_core_validates_frames_and_never_raises(tmp_path, image):
    core = MappingCore({"session_folder": str(tmp_path / "s"), "min_translation": 0.1})
    assert core.add_frame(image, CAM, pose(), 0, "cam").status == "skipped"  # not recording yet
    assert "recording into" in core.start_recording()
    bad_rot = pose()
    bad_rot[:3, :3] *= 1.5
    nan_pose = pose()
    nan_pose[0, 3] = np.nan
    cases = [
        (dict(T_world_cam=nan_pose), "NaN"),
        (dict(T_world_cam=bad_rot), "rotation"),
        (dict(camera=PinholeCamera(60.0, 60.0, 31.5, 23.5, 128, 96)), "camera_info is for 128x96"),
        (dict(depth=np.ones((10, 10), np.float32)), "registered"),
    ]
    for change, needle in cases:
        args = dict(image=image, camera=CAM, T_world_cam=pose(), stamp_ns=0, frame_id="cam", depth=None)
        args.update(change)
        result = core.add_frame(**args)
        assert result.status == "invalid" and needle in result.reason, (needle, result.reason)
    assert core.counters["invalid"] == 4
    assert core.add_frame(image, CAM, pose(), 0, "cam").status == "recorded"
    assert core.add_frame(image, CAM, pose(0.05), S // 10, "cam").reason == "not a keyframe"
    assert core.add_frame(image, CAM, pose(0.2), S // 5, "cam").status == "recorded"
    assert "2 keyframes" in core.stop_recording()


def test_core_resumes_keyframe_selection_from_the_folder(tmp_path, image):
    core = MappingCore({"session_folder": str(tmp_path / "s"), "min_translation": 0.1, "max_interval": 0.0})
    core.start_recording()
    core.add_frame(image, CAM, pose(0.5), 0, "cam")
    restarted = MappingCore({"session_folder": str(tmp_path / "s"), "min_translation": 0.1, "max_interval": 0.0})
    assert "resuming after 1 keyframes" in restarted.start_recording()
    assert restarted.add_frame(image, CAM, pose(0.52), S, "cam").status == "skipped"  # near the recorded one
    assert restarted.add_frame(image, CAM, pose(0.7), S, "cam").name == "frame_000001"


def test_stamp_matcher_pairs_depth_by_stamp():
    m = StampMatcher(tolerance_s=0.01)
    m.add(10 * S, "a")
    m.add(11 * S, "b")
    assert m.match(11 * S + 5_000_000) == "b"
    assert m.match(12 * S) is None


def _fake_build(delay=0.0, fail=None):
    """Stands in for cli.build_map: reports progress, honours cancel, writes the output file."""

    def build(session, out, *, preset_name, device, encoder_spec, head, progress, cancel):
        from scr_ros.progress import Progress

        for i in range(1, 11):
            if cancel.is_set():
                raise MappingCancelled("map building was cancelled")
            # As the builder does: the stage's own fraction, and the whole build's.
            progress(Progress("train", i, 10, 0.01 * i, loss=1.0 / i, overall=0.15 + 0.8 * i / 10))
            time.sleep(delay)
        if fail:
            raise fail
        out.write_bytes(b"map")

    return build


def _session(tmp_path, image, n=3):
    rec = SessionRecorder(tmp_path / "s")
    for i in range(n):
        rec.add(image, pose(0.1 * i), CAM, i * S, "cam")
    return tmp_path / "s"


def test_build_job_reports_progress_and_finishes(tmp_path, image):
    session = _session(tmp_path, image)
    job, seen, done = MapBuildJob(_fake_build()), [], threading.Event()
    msg = job.start(
        session,
        tmp_path / "m.map",
        "test",
        None,
        "cpu",
        lambda s: seen.append((s.percent, s.loss, s.eta_s)),
        lambda s: done.set(),
    )
    assert "3 keyframes" in msg
    assert done.wait(5) and job.status.state == "done" and (tmp_path / "m.map").exists()
    percents = [p for p, _, _ in seen]
    assert percents == sorted(percents) and percents[0] == pytest.approx(23.0) and percents[-1] == pytest.approx(95.0)
    assert seen[-1][1] == pytest.approx(0.1) and seen[-1][2] is not None
    assert "done" in job.status.summary() and job.status.as_values()["state"] == "done"


def test_build_job_cancel_keeps_the_old_map_and_one_build_at_a_time(tmp_path, image):
    session = _session(tmp_path, image)
    (tmp_path / "m.map").write_bytes(b"old")
    job = MapBuildJob(_fake_build(delay=0.05))
    job.start(session, tmp_path / "m.map", "test", None, "cpu")
    with pytest.raises(ScrError, match="already running"):
        job.start(session, tmp_path / "m.map", "test", None, "cpu")
    assert job.cancel() == "cancelling the build"
    assert job.wait(5).state == "cancelled"
    assert (tmp_path / "m.map").read_bytes() == b"old"
    assert job.cancel() == "no build is running"


def test_build_job_says_which_frames_it_could_not_read(tmp_path, image):
    from types import SimpleNamespace

    skipped = {f"frame_{i:06d}": "cannot decode the image" for i in range(5)}

    def build(session, out, **kwargs):
        out.write_bytes(b"map")
        return SimpleNamespace(training={"frames": 12, "unreadable_frames": skipped})

    job = MapBuildJob(build)
    job.start(_session(tmp_path, image), tmp_path / "m.map", "test", None, "cpu")
    st = job.wait(5)
    assert st.state == "done"
    assert "skipped 5 of 12 mapping frames that could not be read: frame_000000 (cannot decode the image)" in st.message
    assert "frame_000002 (cannot decode the image); and 2 more (all listed in the map header's" in st.message


def test_build_job_reports_failures_and_refuses_empty_sessions(tmp_path, image):
    with pytest.raises(ScrError, match="0 keyframe"):
        MapBuildJob(_fake_build()).start(tmp_path / "nothing", tmp_path / "m.map", "test", None, "cpu")
    job = MapBuildJob(_fake_build(fail=RuntimeError("CUDA out of memory")))
    job.start(_session(tmp_path, image), tmp_path / "m.map", "test", None, "cpu")
    st = job.wait(5)
    assert st.state == "failed" and "CUDA out of memory" in st.message


@pytest.mark.slow
def test_build_job_builds_a_real_map_from_a_recorded_session(tmp_path, tiny):
    """Record the tiny scene through the core as the node would, then build with the real builder
    (GLACE's head with a global encoding: the node's head, head_config and map_parts reach it)."""
    core = MappingCore(
        {
            "session_folder": str(tmp_path / "s"),
            "preset": "test",
            "device": "cpu",
            "min_translation": 0.05,
            "min_rotation_deg": 5.0,
            "head": "glace",
            "head_config": '{"clusters": 2}',
            "map_parts": '{"global-descriptor": {}}',
        }
    )
    core.start_recording()
    for i, f in enumerate(tiny.frames("train")[::4]):
        core.add_frame(f.load_image(), f.camera, f.pose, i * S // 10, "camera_optical")
    assert core.counters["recorded"] >= 20
    done = threading.Event()
    with pytest.raises(ScrError, match="still recording .* call ~/stop_recording first"):
        core.start_build(on_done=lambda s: done.set())
    core.stop_recording()
    seen = []
    core.start_build(on_progress=lambda s: seen.append((s.stage, s.percent)), on_done=lambda s: done.set())
    assert done.wait(300), core.build_job.status
    assert core.build_job.status.state == "done", core.build_job.status.message
    # The percent counts every stage the build runs, the global encoding's included, and never
    # goes backwards.
    percents = [p for _, p in seen]
    assert percents == sorted(percents) and {"global", "buffer", "train", "cloud"} <= {st for st, _ in seen}
    assert (
        max(p for st, p in seen if st == "global")
        < min(p for st, p in seen if st == "buffer")
        < min(p for st, p in seen if st == "train")
    )
    scene_map = load_map(core.map_path)
    assert scene_map.training["frames"] == core.counters["recorded"] and scene_map.cloud_xyz is not None
    assert (
        scene_map.head.head_type == "glace" and scene_map.head.clusters == 2 and "global-descriptor" in scene_map.parts
    )


def test_pose_buffer_interpolates_between_the_poses_around_the_image_stamp():
    from scr_ros.evaluation.metrics import pose_error
    from scr_ros.messages import MessageError

    T0 = make_pose(np.eye(3), np.array([0.0, 0.0, 0.0]))
    T1 = make_pose(rotation_about_axis(np.array([0.0, 0.0, 1.0]), np.radians(20.0)), np.array([1.0, 0.0, 0.0]))
    buf = PoseBuffer(max_gap_s=0.1)
    with pytest.raises(LookupError, match="no pose received yet"):
        buf.at(S)
    buf.add(S, T0)
    buf.add(S + S // 10, T1)  # 0.1 s later
    mid = buf.at(S + S // 40)  # a quarter of the way
    dt, dr = pose_error(
        mid, make_pose(rotation_about_axis(np.array([0.0, 0.0, 1.0]), np.radians(5.0)), np.array([0.25, 0.0, 0.0]))
    )
    assert dt < 1e-9 and dr < 1e-6
    np.testing.assert_allclose(buf.at(S + 500_000), T0)  # within 1 ms: that pose as is
    np.testing.assert_allclose(interpolate_pose(T0, T1, 1.0), T1, atol=1e-12)
    with pytest.raises(LookupError, match="older than the image"):
        buf.at(S + S // 5)  # nothing after the stamp, even after waiting
    t0 = time.monotonic()
    with pytest.raises(LookupError):
        buf.at(S + S // 5, timeout_s=0.3)
    assert time.monotonic() - t0 >= 0.25  # it waited for a later pose
    later = threading.Timer(0.1, lambda: buf.add(S + S // 4, T1))
    later.start()
    with pytest.raises(LookupError, match="0.150 s apart"):  # arrived while waiting, but too far from the one before
        buf.at(S + S // 5, timeout_s=2.0)
    with pytest.raises(MessageError, match="time order"):
        buf.add(S, T0)
    with pytest.raises(LookupError, match="older than the oldest"):
        buf.at(S - S)


def test_body_to_camera_is_checked():
    from scr_ros.messages import MessageError

    T = body_to_camera_matrix([0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(T[:3, 3], [0.1, 0.2, 0.3])
    with pytest.raises(MessageError, match="not a rotation"):
        body_to_camera_matrix([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])


def test_atomic_writes_follow_the_umask(tmp_path):
    import os

    from scr_ros.fileio import atomic_write_bytes, current_umask

    old = os.umask(0o022)
    try:
        assert current_umask() == 0o022
        assert atomic_write_bytes(tmp_path / "a", b"x").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert atomic_write_bytes(tmp_path / "b", b"x").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_float_array_parameters_are_checked():
    from scr_ros.node_logic.params import MAPPING_PARAMS, ParameterError, validate

    assert validate(MAPPING_PARAMS, {"body_to_camera": [0, 0, 1, 0, 0, 0, 1]})["body_to_camera"] == [
        0.0,
        0.0,
        1.0,
        0.0,
        0.0,
        0.0,
        1.0,
    ]
    with pytest.raises(ParameterError, match="needs 7 numbers"):
        validate(MAPPING_PARAMS, {"body_to_camera": [0.0, 1.0]})
    with pytest.raises(ParameterError, match="list of numbers"):
        validate(MAPPING_PARAMS, {"body_to_camera": "0 0 0 0 0 0 1"})
    with pytest.raises(ParameterError, match="NaN"):
        validate(MAPPING_PARAMS, {"body_to_camera": [float("nan")] * 7})


def test_extend_mode_grows_the_old_sessions_map_into_the_new_session(tmp_path, image):
    """mode extend: the build reads the old session with its poses and adds the new one as
    odometry (scr map OLD --add-odometry NEW); each keyframe says how its pose came about; the
    set-ups that cannot work are refused before any work."""
    old = _session(tmp_path, image)
    calls = []

    def build(dataset, out, **kwargs):
        calls.append((dataset, kwargs))
        out.write_bytes(b"map")

    core = MappingCore(
        {"session_folder": str(tmp_path / "new"), "mode": "extend", "extend_from": str(old), "growth": '{"rounds": 2}'}
    )
    core.build_job = MapBuildJob(build)
    core.start_recording()
    for i, how in enumerate(("fix", "odometry", "fix")):
        result = core.add_frame(image, CAM, pose(1.0 + 0.1 * i), i * S, "cam", pose_from=how)
        assert result.status == "recorded", result.reason
    core.stop_recording()
    metas = [json.loads(p.read_text()) for p in sorted((tmp_path / "new" / "meta").glob("*.json"))]
    assert [m["pose_from"] for m in metas] == ["fix", "odometry", "fix"]
    message = core.start_build()
    assert "3 keyframes" in message and "grown into 3 new ones" in message
    assert core.build_job.wait(5).state == "done", core.build_job.status.message
    [(dataset, kwargs)] = calls
    assert dataset == str(old)
    assert kwargs["add_odometry"] == [str(tmp_path / "new")] and kwargs["add_split"] == "all"
    assert kwargs["growth"] == {"rounds": 2}
    # Refused: no extend_from, the session itself as extend_from, an empty new session.
    core.update_params({"extend_from": ""})
    with pytest.raises(ScrError, match="needs extend_from"):
        core.start_build()
    core.update_params({"extend_from": str(tmp_path / "new")})
    with pytest.raises(ScrError, match="record the new keyframes into another folder"):
        core.start_build()
    empty = MappingCore({"session_folder": str(tmp_path / "empty"), "mode": "extend", "extend_from": str(old)})
    empty.build_job = MapBuildJob(build)
    with pytest.raises(ScrError, match="no keyframes to extend the map with"):
        empty.start_build()
    # Record mode keeps no pose_from and builds the session alone.
    plain = MappingCore({"session_folder": str(tmp_path / "plain")})
    plain.start_recording()
    plain.add_frame(image, CAM, pose(0.0), 0, "cam")
    assert "pose_from" not in json.loads(next((tmp_path / "plain" / "meta").glob("*.json")).read_text())

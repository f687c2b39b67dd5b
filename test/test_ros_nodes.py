"""The nodes run for real, over the wire.

Each node is started as its console script (``relocalizer_node``, ``mapping_node``) with a params
file, in a DDS domain of its own on loopback (``ROS_DOMAIN_ID`` from the process id,
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``). This process talks to them through rclpy: the ROS 2
Jazzy wheels from PyPI that ``pip install -e '.[test,ros]'`` brings (no tf2_ros, no
diagnostic_updater, no launch), so the nodes run with ``tf_mode: none`` and a pose topic.
The launch_testing tests in test/ros/ cover the TF modes on machines with a ROS 2 installation.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Int32
from std_srvs.srv import Trigger

from scr_ros.drift import drift_poses, parse_drift
from scr_ros.geometry import invert_pose, make_pose, rotation_about_axis
from scr_ros.mapfile import load_map
from scr_ros.messages import (
    decode_compressed_image,
    encode_camera_info,
    encode_compressed_image,
    encode_image,
    make_pose_stamped,
    pose_to_matrix,
    read_point_cloud,
    stamp_to_ns,
)
from scr_ros.metrics import pose_error
from scr_ros.relocalize import Relocalizer
from scr_ros.ros.common import rclpy_factory

BIN = Path(sys.executable).parent
DOMAIN_ID = str(40 + os.getpid() % 150)  # 40..189: clear of the default 0 and of other test runs
CAMERA_FRAME = "camera_optical"


@pytest.fixture(scope="module")
def ros_env():
    env = {
        "ROS_DOMAIN_ID": DOMAIN_ID,
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    rclpy.init()
    yield dict(os.environ)
    rclpy.shutdown()
    mp.undo()


class NodeProcess:
    """A node's console script running in the background, its output in a log file."""

    def __init__(
        self, executable: str, node_name: str, params: dict, folder: Path, env: dict, remap_name: bool = False
    ) -> None:
        self.name = node_name
        self.params_file = folder / f"{node_name}.yaml"
        self.params_file.write_text(yaml.safe_dump({node_name: {"ros__parameters": params}}))
        self.log_path = folder / f"{node_name}.log"
        args = [str(BIN / executable), "--ros-args", "--params-file", str(self.params_file)]
        if remap_name:
            args += ["-r", f"__node:={node_name}"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


class Wire:
    """This process's side of the wire: a node spinning on a background thread."""

    def __init__(self, name: str) -> None:
        self.node = rclpy.create_node(name)
        self.f = rclpy_factory()
        self.executor = MultiThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(5)
        self.node.destroy_node()

    def now(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def collect(self, msg_type, topic: str, qos=qos_profile_sensor_data) -> list:
        got: list = []
        self.node.create_subscription(msg_type, topic, got.append, qos)
        return got

    def call(self, srv_type, name: str, request=None, timeout: float = 60.0):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} did not appear"
        future = client.call_async(request if request is not None else srv_type.Request())
        assert wait_until(future.done, timeout), f"no answer from {name}"
        return future.result()

    def set_parameters(self, node: str, values: dict) -> list:
        """Results of ``SetParameters`` on ``node`` (what ``ros2 param set`` / ``param load`` call)."""
        request = SetParameters.Request(
            parameters=[Parameter(name=k, value=parameter_value(v)) for k, v in values.items()]
        )
        return list(self.call(SetParameters, f"/{node}/set_parameters", request).results)


def parameter_value(v) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    if isinstance(v, list):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY, double_array_value=[float(x) for x in v])
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(v))


def wait_until(predicate, timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


def latest_status(diagnostics: list, name: str) -> tuple[int, str, dict] | None:
    for array in reversed(diagnostics):
        for st in array.status:
            if st.name == name:
                return (
                    st.level[0] if isinstance(st.level, bytes) else int(st.level),
                    st.message,
                    {kv.key: kv.value for kv in st.values},
                )
    return None


# ------------------------------------------------------------------------------ relocalizer


@pytest.fixture(scope="module")
def scene(mapped, tiny):
    frames = tiny.frames("test")[::5][:6]
    return {"map": mapped["map"], "frames": frames, "train": tiny.frames("train")}


@pytest.fixture(scope="module")
def wire(ros_env):
    w = Wire("scr_ros_test_wire")
    yield w
    w.close()


RELOCALIZER_PARAMS = {"device": "cpu", "tf_mode": "none", "max_image_age": 5.0, "max_jump_translation": 0.0}


@pytest.fixture(scope="module")
def relocalizer(ros_env, scene, wire, tmp_path_factory):
    """relocalizer_node on the tiny scene's map, with the wire's publishers and subscribers."""
    params = {**RELOCALIZER_PARAMS, "map_path": str(scene["map"])}
    node = NodeProcess("relocalizer_node", "scr_relocalizer", params, tmp_path_factory.mktemp("relocalizer"), ros_env)
    ns = "/scr_relocalizer"
    io = {
        "node": node,
        "image": wire.node.create_publisher(Image, "image", 10),
        "info": wire.node.create_publisher(CameraInfo, "camera_info", 10),
        "poses": wire.collect(PoseStamped, f"{ns}/pose"),
        "poses_cov": wire.collect(PoseWithCovarianceStamped, f"{ns}/pose_with_covariance"),
        "inliers": wire.collect(Int32, f"{ns}/inliers"),
        "scene_points": wire.collect(PointCloud2, f"{ns}/scene_points"),
        "diagnostics": wire.collect(DiagnosticArray, "/diagnostics", 10),
    }
    # Up when its service answers (imports, map load and the first network call take seconds).
    wire.call(Trigger, f"{ns}/reload_map", timeout=120.0)
    assert wait_until(
        lambda: io["image"].get_subscription_count() > 0 and io["info"].get_subscription_count() > 0, 30
    ), node.output()
    yield io
    code = node.stop()
    assert code == 0, f"relocalizer_node exited with {code}:\n{node.output()}"


def send_frame(wire, io, frame, stamp_ns=None, image_msg=None, info=True) -> int:
    """Publish camera_info and one image; return the stamp."""
    stamp = wire.now() if stamp_ns is None else stamp_ns
    if info:
        io["info"].publish(encode_camera_info(wire.f, frame.camera, stamp, CAMERA_FRAME))
    io["image"].publish(
        image_msg if image_msg is not None else encode_image(wire.f, frame.load_image(), stamp, CAMERA_FRAME)
    )
    return stamp


def processed(io, before: int, timeout: float = 60.0) -> bool:
    """Whether the node processed a frame (every processed frame publishes ~/inliers)."""
    return wait_until(lambda: len(io["inliers"]) > before, timeout)


def test_relocalizer_node_poses_match_the_offline_relocalizer_and_ground_truth(wire, relocalizer, scene, figure):
    io = relocalizer
    offline = Relocalizer(load_map(scene["map"]), device="cpu")
    offline.config.min_inliers = 100  # the node's default min_inliers
    errors = []
    for frame in scene["frames"]:
        n = len(io["inliers"])
        stamp = send_frame(wire, io, frame)
        assert processed(io, n), f"frame {frame.name} was not processed:\n{io['node'].output()}"
        time.sleep(0.2)  # the pose goes out right after ~/inliers
        loc = offline.localize(frame.load_image(), frame.camera)
        figure("offline_inliers", loc.num_inliers)
        got = [m for m in io["poses"] if stamp_to_ns(m.header.stamp) == stamp]
        assert bool(got) == bool(loc.success), (
            f"frame {frame.name}: node published {len(got)} pose(s), offline success {loc.success}"
        )
        if not got:
            continue
        T = pose_to_matrix(got[0].pose)
        assert got[0].header.frame_id == "map"
        dt, dr = pose_error(T, loc.T_world_cam)
        assert dt < 0.005 and dr < 0.2, (
            f"frame {frame.name}: node and offline differ by {dt * 100:.2f} cm, {dr:.2f} deg"
        )
        errors.append(pose_error(T, frame.pose)[0])
        cov = [m for m in io["poses_cov"] if stamp_to_ns(m.header.stamp) == stamp]
        assert cov, "no pose_with_covariance for a published pose"
        np.testing.assert_allclose(pose_to_matrix(cov[0].pose.pose), T, atol=1e-9)  # tf_mode none: the camera's pose
        C = np.asarray(cov[0].pose.covariance).reshape(6, 6)
        assert np.all(np.linalg.eigvalsh(C) > 0) and np.all(np.diag(C)[:3] >= 0.01**2 - 1e-12)
    figure("localized", len(errors))
    figure("median_error_m", float(np.median(errors)))
    # Measured: all 6 localized (372-824 inliers), median 7.4 cm (2 threads).
    assert len(errors) >= 3, f"only {len(errors)} of {len(scene['frames'])} frames localized"
    assert np.median(errors) < 0.15, f"median error {np.median(errors) * 100:.1f} cm"
    xyz, rgb = read_point_cloud(io["scene_points"][-1])
    assert len(xyz) > 100 and rgb is not None and io["scene_points"][-1].header.frame_id == "map"
    # /diagnostics goes out once a second: wait for one that has seen every frame.
    assert wait_until(
        lambda: (
            (s := latest_status(io["diagnostics"], "scr_relocalizer: relocalizer")) is not None
            and s[2]["poses published"] == str(len(errors))
        ),
        10,
    )
    level, message, values = latest_status(io["diagnostics"], "scr_relocalizer: relocalizer")
    assert level == 0 and message.startswith("localizing at") and values["frames received"] == str(len(scene["frames"]))
    assert "tf2_ros" not in io["node"].output()


def test_map_cloud_reaches_a_subscriber_that_joins_late(wire, relocalizer):
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    clouds = wire.collect(PointCloud2, "/scr_relocalizer/map_cloud", latched)
    assert wait_until(lambda: len(clouds) > 0, 30), "the map cloud is not latched"
    xyz, rgb = read_point_cloud(clouds[0])
    assert clouds[0].header.frame_id == "map" and len(xyz) > 1000 and rgb is not None


def test_bad_input_is_refused_with_each_reason_logged_and_counted(wire, relocalizer, scene):
    io, frame = relocalizer, scene["frames"][0]
    rgb = frame.load_image()
    good_info = encode_camera_info(wire.f, frame.camera, wire.now(), CAMERA_FRAME)
    bad = {
        "unsupported image encoding 'bayer_rggb8'": encode_image(wire.f, rgb, wire.now(), CAMERA_FRAME),
        "image data has": encode_image(wire.f, rgb, wire.now(), CAMERA_FRAME),
        "but camera_info is for": encode_image(
            wire.f, np.ascontiguousarray(rgb[:, : rgb.shape[1] // 2]), wire.now(), CAMERA_FRAME
        ),  # other aspect ratio
    }
    bad["unsupported image encoding 'bayer_rggb8'"].encoding = "bayer_rggb8"
    bad["image data has"].data = bad["image data has"].data[:1000]
    for msg in bad.values():
        io["info"].publish(good_info)
        io["image"].publish(msg)
        time.sleep(0.5)  # one at a time: the node keeps only the newest waiting image
    zero_k = encode_camera_info(wire.f, frame.camera, wire.now(), CAMERA_FRAME)
    zero_k.k = [0.0] * 9
    io["info"].publish(zero_k)
    # Stale: older than max_image_age, set live as `ros2 param set` would.
    assert all(r.successful for r in wire.set_parameters("scr_relocalizer", {"max_image_age": 0.5}))
    send_frame(wire, io, frame, stamp_ns=wire.now() - 10 * 10**9)
    reasons = list(bad) + ["camera_info K is all zeros", "stale"]
    assert wait_until(lambda: all(r in io["node"].output() for r in reasons), 20), io["node"].output()
    assert io["node"].alive()
    assert wait_until(
        lambda: (
            len(
                [
                    k
                    for k in latest_status(io["diagnostics"], "scr_relocalizer: relocalizer")[2]
                    if k.startswith("refused:")
                ]
            )
            >= 5
        ),
        10,
    )
    level, message, values = latest_status(io["diagnostics"], "scr_relocalizer: relocalizer")
    refused = " | ".join(k for k in values if k.startswith("refused:"))
    for r in ("bayer_rggb8", "image data has", "but camera_info is for #x#", "all zeros", "stale"):
        assert r in refused, (r, refused)
    assert int(values["invalid input messages"]) >= 4 and int(values["stale frames"]) >= 1
    # Still up and localizing.
    assert all(r.successful for r in wire.set_parameters("scr_relocalizer", {"max_image_age": 5.0}))
    n = len(io["poses"])
    send_frame(wire, io, frame)
    assert wait_until(lambda: len(io["poses"]) > n, 60), io["node"].output()


def test_reload_map_keeps_the_old_map_when_the_new_one_is_bad(wire, relocalizer, scene, tmp_path):
    io = relocalizer
    answer = wire.call(Trigger, "/scr_relocalizer/reload_map")
    assert answer.success and str(scene["map"]) in answer.message
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    for path in (tmp_path / "missing.safetensors", tmp_path / "bad.safetensors"):
        [result] = wire.set_parameters("scr_relocalizer", {"map_path": str(path)})
        assert not result.successful and str(path) in result.reason
    assert wire.call(Trigger, "/scr_relocalizer/reload_map").success  # map_path kept its good value
    # The file behind map_path goes bad (a half-copied rebuild): reload_map says so, the old map stays.
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(Path(scene["map"]).read_bytes())
    assert all(r.successful for r in wire.set_parameters("scr_relocalizer", {"map_path": str(copy)}))
    copy.write_bytes(copy.read_bytes()[:4096])
    answer = wire.call(Trigger, "/scr_relocalizer/reload_map")
    assert not answer.success and str(copy) in answer.message
    assert wait_until(lambda: "map not loaded, keeping the current one" in io["node"].output(), 10)
    n = len(io["poses"])
    send_frame(wire, io, scene["frames"][1])
    assert wait_until(lambda: len(io["poses"]) > n, 60), "no pose after a refused map change"
    assert all(r.successful for r in wire.set_parameters("scr_relocalizer", {"map_path": str(scene["map"])}))


def test_loading_the_nodes_own_parameter_file_succeeds_and_start_only_changes_are_refused(wire, relocalizer):
    own = yaml.safe_load(relocalizer["node"].params_file.read_text())["scr_relocalizer"]["ros__parameters"]
    results = wire.set_parameters("scr_relocalizer", {k: v for k, v in own.items() if k != "max_image_age"})
    assert all(r.successful for r in results), [r.reason for r in results]
    [result] = wire.set_parameters("scr_relocalizer", {"device": "cuda"})
    assert not result.successful and "read at start" in result.reason
    [result] = wire.set_parameters("scr_relocalizer", {"min_inliers": 2})
    assert not result.successful and "out of range" in result.reason  # rclpy checks the declared range


def test_compressed_images_and_no_camera_info_yet(ros_env, wire, scene, tmp_path, figure):
    params = {**RELOCALIZER_PARAMS, "map_path": str(scene["map"]), "use_compressed": True}
    node = NodeProcess("relocalizer_node", "scr_relocalizer_jpeg", params, tmp_path, ros_env, remap_name=True)
    try:
        ns = "/scr_relocalizer_jpeg"
        image = wire.node.create_publisher(CompressedImage, "image/compressed", 10)
        info = wire.node.create_publisher(CameraInfo, "camera_info", 10)
        poses = wire.collect(PoseStamped, f"{ns}/pose")
        wire.call(Trigger, f"{ns}/reload_map", timeout=120.0)
        assert wait_until(lambda: image.get_subscription_count() > 0, 30)
        frame = scene["frames"][0]
        image.publish(encode_compressed_image(wire.f, frame.load_image(), wire.now(), CAMERA_FRAME))
        assert wait_until(lambda: "no camera_info received yet" in node.output(), 20), node.output()
        stamp = wire.now()
        info.publish(encode_camera_info(wire.f, frame.camera, stamp, CAMERA_FRAME))
        time.sleep(0.5)
        jpeg = encode_compressed_image(wire.f, frame.load_image(), stamp, CAMERA_FRAME)
        image.publish(jpeg)
        assert wait_until(lambda: any(stamp_to_ns(m.header.stamp) == stamp for m in poses), 60), node.output()
        [T] = [pose_to_matrix(m.pose) for m in poses if stamp_to_ns(m.header.stamp) == stamp]
        offline = Relocalizer(load_map(scene["map"]), device="cpu").localize(
            decode_compressed_image(jpeg), frame.camera
        )
        dt, dr = pose_error(T, offline.T_world_cam)
        assert dt < 0.005 and dr < 0.2, (dt, dr)  # the node decodes the JPEG as the offline relocalizer does
        figure("offline_inliers", offline.num_inliers)
        figure("error_m", pose_error(T, frame.pose)[0])
        assert pose_error(T, frame.pose)[0] < 0.20
        truncated = encode_compressed_image(wire.f, frame.load_image(), wire.now(), CAMERA_FRAME)
        truncated.data = truncated.data[:200]
        image.publish(truncated)
        assert wait_until(lambda: "cannot decode compressed image" in node.output(), 20), node.output()
        assert node.alive()
    finally:
        assert node.stop() == 0, node.output()


def test_a_tf_mode_without_tf2_ros_is_refused_at_start(ros_env, scene, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tf2_ros") is not None:
        pytest.skip("tf2_ros is installed here, so TF modes run (test/ros covers them)")
    node = NodeProcess(
        "relocalizer_node",
        "scr_relocalizer_tf",
        {"tf_mode": "map_to_odom", "device": "cpu"},
        tmp_path,
        ros_env,
        remap_name=True,
    )
    node.proc.wait(60)
    assert node.proc.returncode not in (0, None)
    out = node.output()
    assert "tf_mode map_to_odom needs tf2_ros" in out and "set tf_mode to none" in out, out


# ------------------------------------------------------------------------------ mapping node


def test_mapping_node_records_from_a_pose_topic_builds_a_map_and_the_relocalizer_uses_it(
    ros_env, wire, relocalizer, scene, tmp_path, figure
):
    session = tmp_path / "session"
    # The pose topic gives the body; the camera sits 10 cm ahead of it, turned 90 degrees.
    T_body_cam = make_pose(rotation_about_axis(np.array([0.0, 1.0, 0.0]), np.pi / 2), np.array([0.1, 0.0, 0.0]))
    from scr_ros.geometry import pose_to_position_quaternion

    t, q = pose_to_position_quaternion(T_body_cam)
    params = {
        "session_folder": str(session),
        "pose_source": "pose",
        "pose_frame": "map",
        "body_to_camera": [*map(float, t), *map(float, q)],
        "preset": "test",
        "device": "cpu",
        "min_translation": 0.0,
        "min_rotation_deg": 0.0,
        "max_interval": 0.0,
        "tf_timeout": 1.0,
        # The poses come from odometry that drifts; the node refines them while the head trains.
        "refine_poses": "free",
    }
    node = NodeProcess("mapping_node", "scr_mapping", params, tmp_path, ros_env)
    try:
        ns = "/scr_mapping"
        image = wire.node.create_publisher(Image, "image", 10)
        info = wire.node.create_publisher(CameraInfo, "camera_info", 10)
        pose = wire.node.create_publisher(PoseStamped, "pose", 100)
        progress = wire.collect(DiagnosticStatus, f"{ns}/progress", 10)
        diagnostics = wire.collect(DiagnosticArray, "/diagnostics", 10)

        answer = wire.call(Trigger, f"{ns}/build_map", timeout=120.0)
        assert not answer.success and "0 keyframe" in answer.message  # an empty session is refused
        assert wire.call(Trigger, f"{ns}/start_recording").success
        assert wait_until(lambda: image.get_subscription_count() > 0 and pose.get_subscription_count() > 0, 30)

        frames = scene["train"][::4][:24]
        drifted = drift_poses(np.stack([f.pose for f in frames]), parse_drift("vio"))
        sent = 0
        for frame, T_drifted in zip(frames, drifted):
            stamp = wire.now()
            pose.publish(make_pose_stamped(wire.f, T_drifted @ invert_pose(T_body_cam), stamp, "map"))
            send_frame(wire, {"info": info, "image": image}, frame, stamp_ns=stamp)
            sent += 1
            assert wait_until(lambda: len(list((session / "rgb").glob("*.png"))) >= sent, 30), node.output()
        bad = encode_image(wire.f, frames[0].load_image(), wire.now(), CAMERA_FRAME)
        bad.encoding = "bayer_rggb8"
        image.publish(bad)
        assert wait_until(lambda: "bayer_rggb8" in node.output(), 20), node.output()
        # Poses were composed with body_to_camera: the recorded camera poses are the published ones.
        recorded = np.loadtxt(session / "poses" / "frame_000003.txt")
        np.testing.assert_allclose(recorded, drifted[3], atol=1e-6)

        answer = wire.call(Trigger, f"{ns}/build_map")
        assert not answer.success and "stop_recording" in answer.message
        assert wire.call(Trigger, f"{ns}/stop_recording").success
        assert wait_until(
            lambda: (
                (s := latest_status(diagnostics, "scr_mapping: mapping")) is not None
                and s[2]["frames received"] == str(sent + 1)
            ),
            10,
        )
        assert wire.call(Trigger, f"{ns}/build_map").success

        def state():
            return {kv.key: kv.value for kv in progress[-1].values}.get("state") if progress else None

        assert wait_until(lambda: state() in ("done", "failed", "cancelled"), 600, poll=0.5), node.output()
        assert state() == "done", progress[-1].message
        map_path = session / "map.safetensors"
        built = load_map(map_path)
        assert built.training["frames"] == len(frames)
        # refine_poses reached the build: the map holds the recorded poses and their refinement,
        # the first keyframe held where it was recorded.
        refinement = built.parts["pose-refinement"]
        assert refinement.info["mode"] == "free" and refinement.info["frames"] == len(frames)
        np.testing.assert_allclose(refinement.module.recorded.numpy(), drifted, atol=1e-6)
        assert pose_error(built.mapping_poses[0], drifted[0])[0] < 1e-6
        assert map_path.stat().st_mode & 0o044, (
            "the map must be readable by a node running as another user (umask applies)"
        )

        # The relocalizer takes the new map live and localizes with it as the offline relocalizer
        # does with the same map. A map of 24 keyframes gets fewer inliers than the node's
        # default threshold allows for on some CPUs (66 against 100 was seen), so the threshold
        # is lowered for this frame and the pose compared with the offline one, not with a count.
        frame = scene["frames"][0]
        offline = Relocalizer(load_map(map_path), device="cpu")
        offline.config.min_inliers = 10
        loc = offline.localize(frame.load_image(), frame.camera)
        figure("new_map_offline_inliers", loc.num_inliers)
        assert loc.success, loc.reason
        assert all(
            r.successful for r in wire.set_parameters("scr_relocalizer", {"map_path": str(map_path), "min_inliers": 10})
        )
        stamp = send_frame(wire, relocalizer, frame)
        assert wait_until(lambda: any(stamp_to_ns(m.header.stamp) == stamp for m in relocalizer["poses"]), 60), (
            relocalizer["node"].output()
        )
        [T] = [pose_to_matrix(m.pose) for m in relocalizer["poses"] if stamp_to_ns(m.header.stamp) == stamp]
        dt, dr = pose_error(T, loc.T_world_cam)
        assert dt < 0.005 and dr < 0.2, f"node and offline differ by {dt * 100:.2f} cm, {dr:.2f} deg"
        figure("new_map_error_m", pose_error(T, frame.pose)[0])

        # A cancelled build keeps the map that was there.
        digest = hashlib.sha256(map_path.read_bytes()).hexdigest()
        assert wire.call(Trigger, f"{ns}/build_map").success
        answer = wire.call(Trigger, f"{ns}/cancel_build")
        assert answer.success, answer.message
        assert wait_until(lambda: state() == "cancelled", 120, poll=0.5), node.output()
        assert progress[-1].message == "cancelled, the previous map (if any) is unchanged"
        assert hashlib.sha256(map_path.read_bytes()).hexdigest() == digest
    finally:
        wire.set_parameters("scr_relocalizer", {"map_path": str(scene["map"]), "min_inliers": 100})
        assert node.stop() == 0, node.output()


def test_parameters_with_one_bound_and_float_arrays_are_declared(ros_env):
    from scr_ros.ros.common import declare_parameters
    from scr_ros.settings import Setting

    node = rclpy.create_node("scr_ros_parameter_test")
    try:
        specs = (
            Setting("lower_only", 1.5, "a float with only a lower bound", min=0.0),
            Setting("upper_only", 3, "an integer with only an upper bound", max=10),
            Setting("pair", [0.0, 1.0], "two numbers", length=2),
        )
        assert declare_parameters(node, specs) == {"lower_only": 1.5, "upper_only": 3, "pair": [0.0, 1.0]}
        lower = node.describe_parameter("lower_only").floating_point_range[0]
        upper = node.describe_parameter("upper_only").integer_range[0]
        assert lower.from_value == 0.0 and lower.to_value > 1e300 and upper.to_value == 10 and upper.from_value < -1e18
    finally:
        node.destroy_node()

"""The nodes run for real, over the wire.

Each node is started as its console script (``relocalizer_node``, ``mapping_node``) with a params
file, in a DDS domain of its own on loopback (``ROS_DOMAIN_ID`` from the process id,
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``). This process talks to them through rclpy: the ROS 2
Jazzy wheels from PyPI that ``pip install -e '.[test,ros]'`` brings (no tf2_ros, no
diagnostic_updater, no launch), so the nodes run with ``tf_mode: none`` and a pose topic.
The launch_testing tests in test/ros/ cover the TF modes on machines with a ROS 2 installation.

``SCR_ROS_NODE_BIN`` runs the nodes from another folder, e.g. a colcon install's
``install/scr_ros/lib/scr_ros`` (with its ``install/setup.bash`` sourced);
``test_colcon_install_runs_the_relocalizer`` builds the package both ways (plain and
``--symlink-install``) and starts the relocalizer from each install.
"""

from __future__ import annotations

import hashlib
import json
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
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.executors import MultiThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Int32, String
from std_srvs.srv import Trigger

from scr_ros.evaluation.drift import drift_poses, parse_drift
from scr_ros.evaluation.metrics import pose_error
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
from scr_ros.node_logic.params import RELOCALIZER_INTERFACE
from scr_ros.relocalize import Relocalizer, RelocalizerConfig
from scr_ros.ros.common import rclpy_factory

# Where the nodes' console scripts are: this interpreter's (pip install) or a colcon install's lib/scr_ros.
BIN = Path(os.environ.get("SCR_ROS_NODE_BIN") or Path(sys.executable).parent)
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
        self,
        executable: str,
        node_name: str,
        params: dict,
        folder: Path,
        env: dict,
        remap_name: bool = False,
        remaps: dict[str, str] | None = None,
        bin_dir: Path = BIN,
        namespace: str = "",
        yaml_key: str | None = None,
    ) -> None:
        self.name = node_name
        self.params_file = folder / f"{node_name}.yaml"
        self.params_file.write_text(yaml.safe_dump({yaml_key or node_name: {"ros__parameters": params}}))
        self.log_path = folder / f"{node_name}.log"
        args = [str(bin_dir / executable), "--ros-args", "--params-file", str(self.params_file)]
        if remap_name:
            args += ["-r", f"__node:={node_name}"]
        if namespace:
            args += ["-r", f"__ns:={namespace}"]
        for topic, to in (remaps or {}).items():
            args += ["-r", f"{topic}:={to}"]
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

    def first_answer(self, srv_type, name: str, timeout: float = 120.0, attempt_s: float = 5.0):
        """The answer to an idempotent call on a node that is starting. A service can be visible
        before its answers can reach us (DDS matches the two directions separately; the server
        then logs "failed to send response"), so the request is sent again until one arrives."""
        client = self.node.create_client(srv_type, name)
        deadline = time.monotonic() + timeout
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} did not appear"
        while time.monotonic() < deadline:
            future = client.call_async(srv_type.Request())
            if wait_until(future.done, min(attempt_s, max(deadline - time.monotonic(), 0.1))):
                return future.result()
            client.remove_pending_request(future)
        raise AssertionError(f"no answer from {name} in {timeout} s")

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
    return {"map": mapped["map"], "frames": frames, "train": tiny.frames("train"), "test": tiny.frames("test")}


@pytest.fixture(scope="module")
def wire(ros_env):
    w = Wire("scr_ros_test_wire")
    yield w
    w.close()


# Points in the map cloud of the large map a reload test loads (the load takes seconds).
LARGE_CLOUD_POINTS = 20_000_000
# max_position_std off: the tiny scene's test-preset map gives fixes a published position std
# around 0.2 m (frame 0: 0.24 m) though they are within centimetres, and these tests are about
# the node's plumbing; the check itself: test_fix_trust.py and benchmarks/fix_trust.py.
RELOCALIZER_PARAMS = {
    "device": "cpu",
    "tf_mode": "none",
    "max_image_age": 5.0,
    "max_jump_translation": 0.0,
    "max_position_std": 0.0,
}
# The camera on the robot: optical frame 10 cm ahead of and 50 cm above base_link, looking along
# the base's x axis (REP-103: optical z forward, x right, y down), as base_to_camera gives it.
MOUNT = [0.1, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5]


def base_pose(T_map_cam: np.ndarray) -> np.ndarray:
    from scr_ros.node_logic.frames import mount_matrix

    return T_map_cam @ invert_pose(mount_matrix(MOUNT, "MOUNT"))


@pytest.fixture(scope="module")
def relocalizer(ros_env, scene, wire, tmp_path_factory):
    """relocalizer_node on the tiny scene's map, with the wire's publishers and subscribers."""
    params = {**RELOCALIZER_PARAMS, "map_path": str(scene["map"]), "base_to_camera": MOUNT}
    node = NodeProcess("relocalizer_node", "scr_relocalizer", params, tmp_path_factory.mktemp("relocalizer"), ros_env)
    ns = "/scr_relocalizer"
    io = {
        "node": node,
        "image": wire.node.create_publisher(Image, "image", 10),
        "info": wire.node.create_publisher(CameraInfo, "camera_info", 10),
        "poses": wire.collect(PoseStamped, f"{ns}/pose"),
        "poses_cov": wire.collect(PoseWithCovarianceStamped, f"{ns}/pose_with_covariance"),
        "initialpose": wire.collect(PoseWithCovarianceStamped, "/initialpose", 10),
        "inliers": wire.collect(Int32, f"{ns}/inliers"),
        "scene_points": wire.collect(PointCloud2, f"{ns}/scene_points"),
        "diagnostics": wire.collect(DiagnosticArray, "/diagnostics", 10),
    }
    # Up when its service answers (imports, map load and the first network call take seconds).
    # ~/reset, not ~/reload_map: a reload that finishes after a frame began drops that frame.
    wire.first_answer(Trigger, f"{ns}/reset")
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
    offline.config.max_position_std = 0.0  # as RELOCALIZER_PARAMS
    errors, base_errors = [], []
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
        figure("node_from_offline_m", dt)
        assert dt < 0.005 and dr < 0.2, (
            f"frame {frame.name}: node and offline differ by {dt * 100:.2f} cm, {dr:.2f} deg"
        )
        errors.append(pose_error(T, frame.pose)[0])
        cov = [m for m in io["poses_cov"] if stamp_to_ns(m.header.stamp) == stamp]
        assert cov, "no pose_with_covariance for a published pose"
        # The base pose, from the base_to_camera parameter (no TF): the offline fix moved to the
        # base, and as close to the true base pose as the camera pose is to the true camera pose.
        assert cov[0].header.frame_id == "map"
        T_base = pose_to_matrix(cov[0].pose.pose)
        dt, dr = pose_error(T_base, base_pose(loc.T_world_cam))
        assert dt < 0.005 and dr < 0.2, (
            f"frame {frame.name}: base pose and offline differ by {dt * 100:.2f} cm, {dr:.2f} deg"
        )
        base_errors.append(pose_error(T_base, base_pose(frame.pose))[0])
        C = np.asarray(cov[0].pose.covariance).reshape(6, 6)
        assert np.all(np.linalg.eigvalsh(C) > 0) and np.all(np.diag(C)[:3] >= 0.01**2 - 1e-12)
    figure("localized", len(errors))
    figure("median_error_m", float(np.median(errors)))
    figure("median_base_error_m", float(np.median(base_errors)))
    # Measured, 2 threads: bf16 all 6 localized (372-824 inliers), median 7.4 cm (Xeon); fp32 all
    # 6 (368-840 inliers), median 9.0 cm, base 10.2 cm (EPYC AVX2). Bounds: twice the larger.
    assert np.median(base_errors) < 0.21, f"median base error {np.median(base_errors) * 100:.1f} cm"
    assert len(errors) >= 3, f"only {len(errors)} of {len(scene['frames'])} frames localized"
    assert np.median(errors) < 0.21, f"median error {np.median(errors) * 100:.1f} cm"
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
    assert wait_until(lambda: "~/reload_map refused, keeping the current map" in io["node"].output(), 10)
    # The loads asked for above run in the background; one landing while a frame is in flight
    # drops that frame (begun before the swap), so frames go out until one comes back as a pose.
    n = len(io["poses"])
    deadline = time.monotonic() + 60
    while len(io["poses"]) <= n and time.monotonic() < deadline:
        send_frame(wire, io, scene["frames"][1])
        wait_until(lambda: len(io["poses"]) > n, 5)
    assert len(io["poses"]) > n, "no pose after a refused map change"
    restore_map(wire, io["node"], scene["map"])


def restore_map(wire, node, path, **more) -> None:
    """Set the relocalizer's map_path back and wait until its loader is idle, so that a swap
    cannot drop a frame of the next test (a load starts only where the path differs from the
    map in use, which here depends on whether an earlier load won its race)."""
    since = len(node.output())
    assert all(r.successful for r in wire.set_parameters("scr_relocalizer", {"map_path": str(path), **more}))
    time.sleep(1.0)  # the loader takes a new path at once and says "loading"

    def idle() -> bool:
        out = node.output()[since:]
        done = out.count("loaded map ") + out.count("map not loaded, keeping the current one")
        return out.count("the current map serves until it is ready") <= done

    assert wait_until(idle, 60), node.output()


def test_loading_the_nodes_own_parameter_file_succeeds_and_start_only_changes_are_refused(wire, relocalizer):
    own = yaml.safe_load(relocalizer["node"].params_file.read_text())["scr_relocalizer"]["ros__parameters"]
    results = wire.set_parameters("scr_relocalizer", {k: v for k, v in own.items() if k != "max_image_age"})
    assert all(r.successful for r in results), [r.reason for r in results]
    [result] = wire.set_parameters("scr_relocalizer", {"device": "cuda"})
    assert not result.successful and "read at start" in result.reason
    [result] = wire.set_parameters("scr_relocalizer", {"min_inliers": 2})
    assert not result.successful and "out of range" in result.reason  # rclpy checks the declared range


def _diagnostic(io, name="scr_relocalizer: relocalizer") -> dict:
    status = latest_status(io["diagnostics"], name)
    return status[2] if status else {}


def _loaded_maps(node) -> int:
    return node.output().count("loaded map ")


def test_planar_base_pose_initialpose_and_the_first_fix_check(wire, relocalizer, scene, figure):
    """With base_to_camera and no TF: the planar base pose (zero roll and pitch, the fix's yaw),
    initialpose once on the first confirmed fix, again after a lost spell and on the service; a
    planted wrong first fix never reaches initialpose (nor TF: both wait for the same check)."""
    from scr_ros.node_logic.frames import yaw_pitch_roll

    io, node = relocalizer, relocalizer["node"]
    offline = Relocalizer(load_map(scene["map"]), device="cpu")
    offline.config.min_inliers = 100
    offline.config.max_position_std = 0.0  # as RELOCALIZER_PARAMS
    a = scene["frames"][0]
    loc_a = offline.localize(a.load_image(), a.camera)
    assert loc_a.success
    # The planted fix: a frame of the same map far from A, localized (so it is a fix, and wrong
    # for where the robot is).
    far = sorted(scene["test"], key=lambda f: -np.linalg.norm(f.pose[:3, 3] - a.pose[:3, 3]))
    planted = next(f for f in far[:20] if offline.localize(f.load_image(), f.camera).success)
    figure("planted_distance_m", float(np.linalg.norm(planted.pose[:3, 3] - a.pose[:3, 3])))
    assert np.linalg.norm(planted.pose[:3, 3] - a.pose[:3, 3]) > 0.5
    changes = {
        "planar": True,
        "publish_initial_pose": True,
        "confirm_fixes": 3,
        "max_jump_translation": 0.5,
        "max_speed": 0.0,  # the robot stands still: no allowance for motion between the frames
        "lost_timeout": 1.0,
    }
    assert all(r.successful for r in wire.set_parameters("scr_relocalizer", changes))
    try:
        # A fresh start (a map load forgets earlier fixes), as a node just brought up.
        loads = _loaded_maps(node)
        assert wire.call(Trigger, "/scr_relocalizer/reload_map").success
        assert wait_until(lambda: _loaded_maps(node) > loads, 60), node.output()
        initial = len(io["initialpose"])
        stamps = []
        for frame in (planted, a, a, a):
            n = len(io["inliers"])
            stamps.append(send_frame(wire, io, frame))
            assert processed(io, n), node.output()
        assert wait_until(lambda: len(io["initialpose"]) > initial, 10), "no initialpose after 3 agreeing fixes"
        time.sleep(0.5)
        got = io["initialpose"][initial:]
        assert len(got) == 1 and stamp_to_ns(got[0].header.stamp) == stamps[3], [
            stamp_to_ns(m.header.stamp) for m in got
        ]
        assert got[0].header.frame_id == "map"
        T = pose_to_matrix(got[0].pose.pose)
        yaw, pitch, roll = yaw_pitch_roll(T[:3, :3])
        want = base_pose(loc_a.T_world_cam)
        assert abs(pitch) < 1e-6 and abs(roll) < 1e-6 and abs(T[2, 3]) < 1e-9
        assert abs(np.degrees(yaw - yaw_pitch_roll(want[:3, :3])[0])) < 0.2
        np.testing.assert_allclose(T[:2, 3], want[:2, 3], atol=0.005)
        true_yaw = yaw_pitch_roll(base_pose(a.pose)[:3, :3])[0]
        yaw_error = abs((np.degrees(yaw - true_yaw) + 180) % 360 - 180)
        figure("planar_yaw_error_deg", yaw_error)
        assert yaw_error < 10.0  # fp32 0.8 deg (EPYC AVX2); bf16: no figure recorded
        # The base pose on ~/pose_with_covariance is planar too, for every fix (not held back).
        covs = {stamp_to_ns(m.header.stamp): pose_to_matrix(m.pose.pose) for m in io["poses_cov"]}
        assert all(s in covs for s in stamps)
        assert all(abs(yaw_pitch_roll(covs[s][:3, :3])[1]) < 1e-6 for s in stamps)
        assert wait_until(lambda: int(_diagnostic(io).get("fixes TF waited on (first-fix check)", 0)) >= 3, 5)
        # Fixes keep coming: no second initialpose; after a spell without fixes, one more.
        n = len(io["inliers"])
        send_frame(wire, io, a)
        assert processed(io, n)
        time.sleep(0.5)
        assert len(io["initialpose"]) == initial + 1
        time.sleep(1.5)  # longer than lost_timeout without a fix: lost, so three fixes must agree again
        for k in range(3):
            n = len(io["inliers"])
            send_frame(wire, io, a)
            assert processed(io, n)
            if k < 2:
                time.sleep(0.3)
                assert len(io["initialpose"]) == initial + 1, "initialpose before the fixes agreed again"
        assert wait_until(lambda: len(io["initialpose"]) == initial + 2, 10)
        answer = wire.call(Trigger, "/scr_relocalizer/publish_initial_pose")
        assert answer.success and "published" in answer.message, answer.message
        assert wait_until(lambda: len(io["initialpose"]) == initial + 3, 10)
    finally:
        restore = {
            "planar": False,
            "publish_initial_pose": False,
            "max_jump_translation": 0.0,
            "max_speed": 1.0,
            "lost_timeout": 3.0,
        }
        assert all(r.successful for r in wire.set_parameters("scr_relocalizer", restore))


def test_stamps_jumping_back_do_not_stop_the_relocalizer(wire, relocalizer, scene):
    io, node, frame = relocalizer, relocalizer["node"], scene["frames"][0]
    # A bag played again: stamps a minute back (never stale here, as with use_sim_time).
    assert all(r.successful for r in wire.set_parameters("scr_relocalizer", {"max_image_age": 0.0}))
    try:
        jumps = int(_diagnostic(io).get("clock jumps (stamps went back)", 0))
        now = wire.now()
        stamps = [now, now - 60 * 10**9, now - 59 * 10**9]
        for stamp in stamps:
            n = len(io["inliers"])
            send_frame(wire, io, frame, stamp_ns=stamp)
            assert processed(io, n), node.output()
        assert wait_until(lambda: all(any(stamp_to_ns(m.header.stamp) == s for m in io["poses"]) for s in stamps), 10)
        assert node.output().count("image stamps went back by 60.0 s") == 1, node.output()
        assert wait_until(lambda: int(_diagnostic(io).get("clock jumps (stamps went back)", 0)) == jumps + 1, 5)
    finally:
        assert all(r.successful for r in wire.set_parameters("scr_relocalizer", {"max_image_age": 5.0}))
    n = len(io["poses"])
    send_frame(wire, io, frame)  # and the clock going forward again is no jump
    assert wait_until(lambda: len(io["poses"]) > n, 60)


def test_intake_continues_while_a_large_map_loads(ros_env, wire, scene, tmp_path, figure):
    """A map change loads on the node's loader thread: images are localized with the old map,
    and /diagnostics keeps coming, until the new one is swapped in."""
    large = tmp_path / "large.safetensors"
    big = load_map(scene["map"])
    rng = np.random.default_rng(0)
    big.cloud_xyz = rng.normal(size=(LARGE_CLOUD_POINTS, 3)).astype(np.float32)
    big.cloud_rgb = rng.integers(0, 256, size=(LARGE_CLOUD_POINTS, 3), dtype=np.uint8)
    big.save(large)
    figure("large_map_mb", large.stat().st_size / 2**20)
    del big
    name, ns = "scr_relocalizer_reload", "/reload"
    params = {**RELOCALIZER_PARAMS, "map_path": str(scene["map"]), "base_to_camera": MOUNT}
    remaps = {"image": f"{ns}/image", "camera_info": f"{ns}/camera_info"}
    node = NodeProcess("relocalizer_node", name, params, tmp_path, ros_env, remap_name=True, remaps=remaps)
    poses: list[float] = []  # arrival times
    diagnostics: list[tuple[float, dict]] = []
    wire.node.create_subscription(
        PoseStamped, f"/{name}/pose", lambda m: poses.append(time.monotonic()), qos_profile_sensor_data
    )

    def on_diagnostics(msg):
        for st in msg.status:
            if st.name == f"{name}: relocalizer":
                diagnostics.append((time.monotonic(), {kv.key: kv.value for kv in st.values}))

    wire.node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    io = {
        "image": wire.node.create_publisher(Image, f"{ns}/image", 10),
        "info": wire.node.create_publisher(CameraInfo, f"{ns}/camera_info", 10),
    }
    stop = threading.Event()

    def stream():
        frame = scene["frames"][0]
        image = frame.load_image()
        while not stop.is_set():
            stamp = wire.now()
            io["info"].publish(encode_camera_info(wire.f, frame.camera, stamp, CAMERA_FRAME))
            io["image"].publish(encode_image(wire.f, image, stamp, CAMERA_FRAME))
            stop.wait(0.2)

    streamer = threading.Thread(target=stream, daemon=True)
    try:
        wire.first_answer(Trigger, f"/{name}/reload_map")
        streamer.start()
        assert wait_until(lambda: len(poses) >= 3, 60), node.output()
        t0 = time.monotonic()
        [result] = wire.set_parameters(name, {"map_path": str(large)})
        answered_s = time.monotonic() - t0
        assert result.successful, result.reason
        assert wait_until(lambda: any(v.get("map") == str(large) for _, v in diagnostics), 120), node.output()
        loading = [t for t, v in diagnostics if "map loading" in v]
        loaded_at = next(t for t, v in diagnostics if v.get("map") == str(large))
        during = [t for t in poses if t0 < t < loaded_at]
        figure("set_parameters_answer_s", answered_s)
        figure("load_window_s", loaded_at - t0)
        figure("poses_during_load", len(during))
        figure("diagnostics_during_load", len(loading))
        assert answered_s < 1.0, f"the parameter change waited {answered_s:.1f} s for the load"
        assert len(loading) >= 1, "no /diagnostics while the map loaded"
        assert len(during) >= 2, (
            f"{len(during)} poses in the {loaded_at - t0:.1f} s between the map change and the new map\n{node.output()}"
        )
        n = len(poses)
        assert wait_until(lambda: len(poses) > n + 2, 60), "no poses with the new map"
    finally:
        stop.set()
        streamer.join(5)
        assert node.stop() == 0, node.output()


def test_lifecycle_transitions(ros_env, wire, scene, tmp_path):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    name, ns = "scr_relocalizer_managed", "/managed"
    # The QoS override as docs/ros.md gives it for a remapped image topic: keyed by the name after
    # remapping (the launch files always remap image), not by /image.
    qos = {f"{ns}/image": {"subscription": {"reliability": "reliable"}}}
    params = {**RELOCALIZER_PARAMS, "map_path": str(scene["map"]), "autostart": False, "qos_overrides": qos}
    remaps = {"image": f"{ns}/image", "camera_info": f"{ns}/camera_info"}
    node = NodeProcess("relocalizer_node", name, params, tmp_path, ros_env, remap_name=True, remaps=remaps)
    io = {
        "image": wire.node.create_publisher(Image, f"{ns}/image", 10),
        "info": wire.node.create_publisher(CameraInfo, f"{ns}/camera_info", 10),
        "poses": wire.collect(PoseStamped, f"/{name}/pose"),
        "status": wire.collect(String, f"/{name}/status", LATCHED),
    }
    frame = scene["frames"][0]

    def state() -> str:
        return wire.first_answer(GetState, f"/{name}/get_state").current_state.label

    def change(transition: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition))
        return wire.call(ChangeState, f"/{name}/change_state", request).success

    def localizes(timeout: float) -> bool:
        n = len(io["poses"])
        send_frame(wire, io, frame)
        return wait_until(lambda: len(io["poses"]) > n, timeout)

    try:
        assert state() == "unconfigured"
        assert wait_until(lambda: io["image"].get_subscription_count() > 0, 30)
        readers = wire.node.get_subscriptions_info_by_topic(f"{ns}/image")
        assert readers and all(r.qos_profile.reliability == ReliabilityPolicy.RELIABLE for r in readers), readers
        assert not localizes(3.0)
        answer = wire.call(Trigger, f"/{name}/reload_map")
        assert not answer.success and "configure it first" in answer.message, answer.message
        assert wait_until(lambda: io["status"] and io["status"][-1].data == "no_map", 10)
        assert change(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
        assert wait_until(lambda: io["status"][-1].data == "lost", 10)  # a map, no fix yet
        assert "loaded map" in node.output()
        assert not localizes(3.0)  # configured, not active: images are ignored
        assert change(Transition.TRANSITION_ACTIVATE) and state() == "active"
        assert localizes(60.0), node.output()
        assert change(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
        assert not localizes(3.0)
        assert change(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
        assert change(Transition.TRANSITION_CONFIGURE) and change(Transition.TRANSITION_ACTIVATE)
        assert localizes(60.0), node.output()
    finally:
        assert node.stop() == 0, node.output()


def test_compressed_images_and_no_camera_info_yet(ros_env, wire, scene, tmp_path, figure):
    # One frame at a time here (the other relocalizer tests run the default, pipelined).
    params = {**RELOCALIZER_PARAMS, "map_path": str(scene["map"]), "use_compressed": True, "pipelined": False}
    node = NodeProcess("relocalizer_node", "scr_relocalizer_jpeg", params, tmp_path, ros_env, remap_name=True)
    try:
        ns = "/scr_relocalizer_jpeg"
        image = wire.node.create_publisher(CompressedImage, "image/compressed", 10)
        info = wire.node.create_publisher(CameraInfo, "camera_info", 10)
        poses = wire.collect(PoseStamped, f"{ns}/pose")
        wire.first_answer(Trigger, f"{ns}/reset")  # up; a reload could drop the frames below
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
        offline = Relocalizer(
            load_map(scene["map"]), device="cpu", config=RelocalizerConfig(max_position_std=0.0)
        ).localize(decode_compressed_image(jpeg), frame.camera)
        dt, dr = pose_error(T, offline.T_world_cam)
        assert dt < 0.005 and dr < 0.2, (dt, dr)  # the node decodes the JPEG as the offline relocalizer does
        figure("offline_inliers", offline.num_inliers)
        figure("error_m", pose_error(T, frame.pose)[0])
        assert pose_error(T, frame.pose)[0] < 0.25  # fp32 9.9 cm (EPYC AVX2); bf16: no figure recorded
        truncated = encode_compressed_image(wire.f, frame.load_image(), wire.now(), CAMERA_FRAME)
        truncated.data = truncated.data[:200]
        image.publish(truncated)
        assert wait_until(lambda: "cannot decode compressed image" in node.output(), 20), node.output()
        assert node.alive()
    finally:
        assert node.stop() == 0, node.output()


# ~/status is latched (transient local): a subscriber that joins late gets the current state.
LATCHED = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
S = 10**9


def test_a_kidnapped_robot_is_trusted_again_only_after_agreeing_fixes(ros_env, wire, scene, tmp_path, figure):
    """Over the wire, in a namespace, with its params file keyed ``/**/scr_relocalizer`` as the
    shipped YAMLs are: the robot localizes and confirms at A, is carried to B (tf_mode none: no
    odometry), sees nothing for longer than lost_timeout, then sees the map at B. No /initialpose
    and no held ~/pose_with_covariance come from fewer than confirm_fixes agreeing fixes at B, and
    B's comes within jump_reset_frames + confirm_fixes frames. ~/status says each state;
    ~/reset starts afresh; ~/publish_initial_pose obeys its parameter; with on_demand only a
    ~/localize call gets frames processed, and it answers with the fix."""
    offline = Relocalizer(load_map(scene["map"]), device="cpu", config=RelocalizerConfig(max_position_std=0.0))
    a = scene["frames"][0]
    far = sorted(scene["test"], key=lambda f: -np.linalg.norm(f.pose[:3, 3] - a.pose[:3, 3]))
    b = next(f for f in far[:20] if offline.localize(f.load_image(), f.camera).success)
    figure("kidnap_distance_m", float(np.linalg.norm(b.pose[:3, 3] - a.pose[:3, 3])))
    confirm, reset_after = 3, 3
    params = {
        **RELOCALIZER_PARAMS,
        "map_path": str(scene["map"]),
        "base_to_camera": MOUNT,
        "confirm_fixes": confirm,
        "publish_initial_pose": True,
        "lost_timeout": 1.0,
        "hold_unconfirmed_pose": True,
        "max_jump_translation": 0.5,
        "jump_reset_frames": reset_after,
    }
    node = NodeProcess(
        "relocalizer_node",
        "scr_relocalizer",
        params,
        tmp_path,
        ros_env,
        namespace="/robot1",
        yaml_key="/**/scr_relocalizer",
    )
    ns = "/robot1/scr_relocalizer"
    io = {
        "node": node,
        "image": wire.node.create_publisher(Image, "/robot1/image", 10),
        "info": wire.node.create_publisher(CameraInfo, "/robot1/camera_info", 10),
        "inliers": wire.collect(Int32, f"{ns}/inliers"),
        "poses_cov": wire.collect(PoseWithCovarianceStamped, f"{ns}/pose_with_covariance"),
        "initialpose": wire.collect(PoseWithCovarianceStamped, "/robot1/initialpose", 10),
        "status": wire.collect(String, f"{ns}/status", LATCHED),
    }
    last = [0]

    def feed(frame, black=False, stamp=None) -> int:
        stamp = last[0] + S // 10 if stamp is None else stamp
        last[0] = stamp
        image = frame.load_image()
        msg = encode_image(wire.f, np.zeros_like(image) if black else image, stamp, CAMERA_FRAME)
        n = len(io["inliers"])
        send_frame(wire, io, frame, stamp_ns=stamp, image_msg=msg)
        assert processed(io, n), node.output()
        return stamp

    def states() -> list[str]:
        out = []
        for m in io["status"]:
            if not out or out[-1] != m.data:
                out.append(m.data)
        return out

    try:
        wire.first_answer(Trigger, f"{ns}/reset")  # up (reload_map would reload the map while frames come)
        services = [f"{ns}/{n[2:]}" for n, kind, _ in RELOCALIZER_INTERFACE if kind.startswith("std_srvs")]
        assert wait_until(lambda: set(services) <= {n for n, _ in wire.node.get_service_names_and_types()}, 10)
        assert wait_until(lambda: io["image"].get_subscription_count() > 0 and io["info"].get_subscription_count(), 30)
        # The namespaced node read its file (else it would have no map and status no_map).
        assert wait_until(lambda: states()[-1:] == ["lost"], 30), (states(), node.output())
        last[0] = wire.now()  # stamps from now on (older ones would be stale: max_image_age)
        stamps_a = [feed(a) for _ in range(confirm)]
        assert wait_until(lambda: len(io["initialpose"]) == 1, 10), node.output()
        for _ in range(3):
            feed(a, black=True)
        assert states()[-1] == "localized"  # lost frames within lost_timeout
        # Five seconds later, at B.
        last[0] += 5 * S
        stamps_b = [feed(b) for _ in range(reset_after + confirm + 2)]
        time.sleep(0.5)
        initial = [stamp_to_ns(m.header.stamp) for m in io["initialpose"]]
        assert len(initial) == 2 and initial[0] == stamps_a[-1], (initial, node.output())
        trusted = stamps_b.index(initial[1])
        figure("kidnap_frames_to_trust", trusted + 1)
        assert confirm - 1 <= trusted <= reset_after + confirm - 1
        T = pose_to_matrix(io["initialpose"][1].pose.pose)
        assert np.linalg.norm(T[:3, 3] - base_pose(b.pose)[:3, 3]) < 0.3
        held = sorted(stamp_to_ns(m.header.stamp) for m in io["poses_cov"])
        assert held == [stamps_a[-1], *stamps_b[trusted:]]  # only confirmed fixes (hold_unconfirmed_pose)
        assert states()[-4:] == ["unconfirmed", "localized", "unconfirmed", "localized"], states()

        answer = wire.call(Trigger, f"{ns}/reset")
        assert answer.success and "afresh" in answer.message
        assert wait_until(lambda: states()[-1] == "lost", 5), states()
        answer = wire.call(Trigger, f"{ns}/publish_initial_pose")
        assert answer.success and "next confirmed fix" in answer.message, answer.message  # nothing confirmed now
        assert all(r.successful for r in wire.set_parameters("robot1/scr_relocalizer", {"publish_initial_pose": False}))
        answer = wire.call(Trigger, f"{ns}/publish_initial_pose")
        assert not answer.success and "publish_initial_pose is false" in answer.message, answer.message

        # On demand: frames wait for a ~/localize call.
        changes = {"on_demand": True, "localize_timeout": 60.0}
        assert all(r.successful for r in wire.set_parameters("robot1/scr_relocalizer", changes))
        n = len(io["inliers"])
        for _ in range(3):
            last[0] += S // 10
            send_frame(wire, io, b, stamp_ns=last[0])
        time.sleep(1.5)
        assert len(io["inliers"]) == n, "frames were processed while nobody asked"
        answers: list = []
        caller = threading.Thread(target=lambda: answers.append(wire.call(Trigger, f"{ns}/localize", timeout=90)))
        caller.start()
        deadline = time.monotonic() + 90
        while caller.is_alive() and time.monotonic() < deadline:
            last[0] += S // 10
            send_frame(wire, io, b, stamp_ns=last[0])
            time.sleep(0.3)
        caller.join(5)
        assert answers and answers[0].success and answers[0].message.startswith("localized"), answers
        assert len(io["inliers"]) - n >= confirm
        time.sleep(1.0)
        n = len(io["inliers"])
        last[0] += S // 10
        send_frame(wire, io, b, stamp_ns=last[0])
        time.sleep(1.5)
        assert len(io["inliers"]) == n, "frames were processed after the answer"
    finally:
        assert node.stop() == 0, node.output()


TF2_STUB = Path(__file__).resolve().parent / "tf2_stub"


def test_map_to_odom_over_a_tf2_stand_in(ros_env, wire, scene, tmp_path, figure):
    """tf_mode map_to_odom with test/tf2_stub standing in for tf2_ros (not on PyPI): the listener
    has a node of its own (``<name>_tf``) whose callbacks never run on the main executor's thread;
    the static mount is looked up once, not per frame; map -> odom reproduces the fix; and after
    the stamps jump back the buffer is cleared, so odometry at the new stamps is found again."""
    from geometry_msgs.msg import TransformStamped

    from scr_ros.messages import make_transform_stamped, transform_to_matrix
    from scr_ros.node_logic.frames import mount_matrix

    env = {**ros_env, "PYTHONPATH": os.pathsep.join(filter(None, [str(TF2_STUB), ros_env.get("PYTHONPATH")]))}
    params = {
        **RELOCALIZER_PARAMS,
        "map_path": str(scene["map"]),
        "tf_mode": "map_to_odom",
        "confirm_fixes": 2,
        "publish_initial_pose": True,  # with map_to_odom: two map -> odom sources under AMCL, warned
        "max_image_age": 0.0,  # the stamps jump a minute back below, as a bag's clock does
    }
    name = "scr_relocalizer_tf_stub"
    node = NodeProcess("relocalizer_node", name, params, tmp_path, env, remap_name=True)
    latched = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    io = {
        "image": wire.node.create_publisher(Image, "image", 10),
        "info": wire.node.create_publisher(CameraInfo, "camera_info", 10),
        "inliers": wire.collect(Int32, f"/{name}/inliers"),
        "tf_out": wire.collect(TransformStamped, "/tf_stub_out", 100),
    }
    tf_in = wire.node.create_publisher(TransformStamped, "/tf_stub", 100)
    tf_static = wire.node.create_publisher(TransformStamped, "/tf_stub_static", latched)
    T_base_cam = mount_matrix(MOUNT, "MOUNT")
    T_map_odom_true = make_pose(rotation_about_axis(np.array([0.0, 0.0, 1.0]), 0.3), np.array([1.0, -2.0, 0.0]))
    frame = scene["frames"][0]
    T_odom_base = invert_pose(T_map_odom_true) @ frame.pose @ invert_pose(T_base_cam)  # consistent with the truth

    def feed(stamp: int) -> None:
        tf_in.publish(make_transform_stamped(wire.f, T_odom_base, stamp, "odom", "base_link"))
        time.sleep(0.05)
        n = len(io["inliers"])
        send_frame(wire, io, frame, stamp_ns=stamp)
        assert processed(io, n), node.output()

    def map_odom_after(stamp: int) -> list[np.ndarray]:
        return [
            transform_to_matrix(m.transform)
            for m in list(io["tf_out"])
            if m.child_frame_id == "odom" and stamp_to_ns(m.header.stamp) > stamp
        ]

    try:
        wire.first_answer(Trigger, f"/{name}/reset")
        tf_static.publish(make_transform_stamped(wire.f, T_base_cam, 0, "base_link", CAMERA_FRAME))
        assert wait_until(lambda: io["image"].get_subscription_count() > 0 and tf_in.get_subscription_count() > 0, 30)
        time.sleep(0.5)
        t0 = wire.now()
        for k in range(3):
            feed(t0 + k * S // 10)
        assert wait_until(lambda: map_odom_after(t0), 10), node.output()
        T = map_odom_after(t0)[-1]
        # map -> odom -> base -> camera reproduces the fix, so it is as far from the true camera
        # as the fix is (map -> odom alone is further off: its rotation error acts on the lever
        # arm of odom -> base).
        error = np.linalg.norm((T @ T_odom_base @ T_base_cam)[:3, 3] - frame.pose[:3, 3])
        figure("map_odom_camera_error_m", float(error))
        assert error < 0.2, T  # the tiny map's fix error on this frame
        # The stamps go back a minute: the buffer is cleared and map -> odom comes from new fixes.
        t1 = t0 - 60 * S
        feed(t1)
        time.sleep(0.5)  # map -> odom was reset with the jump: its re-publication has stopped
        before = len(map_odom_after(t0))
        for k in range(1, 3):
            feed(t1 + k * S // 10)
        out = node.output()
        assert out.count("tf2 stub: buffer cleared") == 1, out
        assert wait_until(lambda: len(map_odom_after(t0)) > before, 10), node.output()
        out = node.output()
        assert out.count(f"tf2 stub: listener on node /{name}_tf") == 1, out
        assert "publish_initial_pose with tf_mode map_to_odom" in out, out
        assert "callback on the main thread" not in out, out
        # one lookup of the static mount before the jump and one after, not one per frame
        assert out.count(f"tf2 stub: lookup base_link->{CAMERA_FRAME}") == 2, out
    finally:
        assert node.stop() == 0, node.output()


def test_a_mount_of_the_wrong_length_is_refused_at_start_with_its_name(ros_env, tmp_path):
    params = {"tf_mode": "none", "device": "cpu", "base_to_camera": [0.0, 0.0, 1.0]}
    node = NodeProcess("relocalizer_node", "scr_relocalizer_mount", params, tmp_path, ros_env, remap_name=True)
    node.proc.wait(60)
    out = node.output()
    assert node.proc.returncode not in (0, None)
    assert "base_to_camera" in out and "Traceback" not in out, out


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

        # The node has just started: its answer may not reach us yet (first_answer sends again).
        answer = wire.first_answer(Trigger, f"{ns}/build_map")
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
        # One keyframe whose pixels were lost on disk (its header intact): the build skips it,
        # and the library's warning reaches the node's own log, as a warning.
        broken = session / "rgb" / "frame_000005.png"
        broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 3])
        assert wire.call(Trigger, f"{ns}/build_map").success

        def state():
            return {kv.key: kv.value for kv in progress[-1].values}.get("state") if progress else None

        assert wait_until(lambda: state() in ("done", "failed", "cancelled"), 600, poll=0.5), node.output()
        assert state() == "done", progress[-1].message
        warned = [line for line in node.output().splitlines() if "mapping frame frame_000005 skipped" in line]
        assert warned and "WARN" in warned[0] and "scr_mapping" in warned[0], node.output()
        assert "skipped 1 of" in progress[-1].message, progress[-1].message
        map_path = session / "map.safetensors"
        built = load_map(map_path)
        assert built.training["frames"] == len(frames)
        assert list(built.training["unreadable_frames"]) == ["frame_000005"]
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
        # is lowered for this frame and the pose compared with the offline one, not with a count
        # (bf16: 66 and 232 inliers on one and two threads; fp32, EPYC AVX2, 2 threads: 187).
        frame = scene["frames"][0]
        offline = Relocalizer(load_map(map_path), device="cpu")
        offline.config.min_inliers = 10
        offline.config.max_position_std = 0.0  # as RELOCALIZER_PARAMS
        loc = offline.localize(frame.load_image(), frame.camera)
        figure("new_map_offline_inliers", loc.num_inliers)
        assert loc.success, loc.reason
        assert all(
            r.successful for r in wire.set_parameters("scr_relocalizer", {"map_path": str(map_path), "min_inliers": 10})
        )
        # The map loads on the node's loader thread; the old one serves until it is in.
        assert wait_until(lambda: f"loaded map {map_path}" in relocalizer["node"].output(), 60)
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
        # Recording into the session a build is reading is refused while it runs.
        answer = wire.call(Trigger, f"{ns}/start_recording")
        assert not answer.success and "build is running" in answer.message, answer.message
        answer = wire.call(Trigger, f"{ns}/cancel_build")
        assert answer.success, answer.message
        assert wait_until(lambda: state() == "cancelled", 120, poll=0.5), node.output()
        assert progress[-1].message == "cancelled, the previous map (if any) is unchanged"
        assert hashlib.sha256(map_path.read_bytes()).hexdigest() == digest
    finally:
        restore_map(wire, relocalizer["node"], scene["map"], min_inliers=100)
        assert node.stop() == 0, node.output()


def test_extend_mode_records_a_new_path_grows_the_map_and_the_relocalizer_swaps_to_it(
    ros_env, wire, relocalizer, scene, tmp_path, figure
):
    """The mapping node in ``mode: extend`` beside the relocalizer: it records the query path's
    frames (every other one) with the robot's drifting odometry (``pose_source: odometry`` in
    ``odom``, whose origin is not the map's: the rounds use only the motion between keyframes),
    each keyframe marked with the relocalizer's state as it fixes the same images;
    ``~/build_map`` rebuilds the map from ``extend_from`` (the session the relocalizer's map was
    built from) grown into the new keyframes; the relocalizer takes the new map without stopping
    and localizes the path's other frames. (With tf2_ros the keyframes' poses would come from TF
    ``map -> camera``; tf2_ros is not on PyPI and test/tf2_stub chains no transforms.)"""
    from scr_ros.node_logic.frames import mount_matrix

    base = Path(scene["map"]).parent / "scene" / "train"  # scr demo --quick's mapping frames
    session, grown = tmp_path / "session", tmp_path / "grown.safetensors"
    recorded, queries = scene["test"][0::2], scene["test"][1::2]
    T_odom_map = make_pose(rotation_about_axis(np.array([0.0, 0.0, 1.0]), 0.7), np.array([3.0, -1.0, 0.0]))
    drifted = drift_poses(np.stack([T_odom_map @ f.pose for f in recorded]), parse_drift("vio"))
    T_base_cam = mount_matrix(MOUNT, "MOUNT")
    params = {
        "mode": "extend",
        "extend_from": str(base),
        "session_folder": str(session),
        "map_path": str(grown),
        "pose_source": "odometry",
        "pose_frame": "odom",
        "body_to_camera": MOUNT,
        "preset": "test",
        "device": "cpu",
        "min_translation": 0.0,
        "min_rotation_deg": 0.0,
        "max_interval": 0.0,
        # As test_growth.py's end-to-end build: the test preset's tiny maps need longer early fits.
        # Their fixes are 3-9 cm and 1-5 deg off each (measured on this path), so two of them
        # differ from the odometry's 0.24 m steps by up to 15 cm and 6 deg: the default tolerance
        # (15 % of the motion plus one posed step) refused half of these right fixes.
        "growth": json.dumps(
            {"early_share": 0.5, "min_inliers": 200, "max_position_std": 0.4, "rounds": 1, "odometry_tolerance": 0.5}
        ),
    }
    node = NodeProcess("mapping_node", "scr_extend", params, tmp_path, ros_env, remap_name=True)
    try:
        ns = "/scr_extend"
        # Confirmed from the first fix: the query path's frames are too far apart for the jump
        # gate's agreement, and each keyframe's pose_from follows the relocalizer's state.
        assert all(r.successful for r in wire.set_parameters("scr_relocalizer", {"confirm_fixes": 1}))
        progress = wire.collect(DiagnosticStatus, f"{ns}/progress", 10)
        odometry = wire.node.create_publisher(Odometry, "odometry", 10)
        answer = wire.first_answer(Trigger, f"{ns}/build_map")
        assert not answer.success and "no keyframes to extend the map with" in answer.message, answer.message
        assert wire.call(Trigger, f"{ns}/start_recording").success
        assert wait_until(
            lambda: relocalizer["image"].get_subscription_count() > 1 and odometry.get_subscription_count() > 0, 30
        ), node.output()
        for k, (frame, T_odom_cam) in enumerate(zip(recorded, drifted)):
            stamp = wire.now()
            msg = Odometry()
            pose = make_pose_stamped(wire.f, T_odom_cam @ invert_pose(T_base_cam), stamp, "odom")
            msg.header, msg.child_frame_id, msg.pose.pose = pose.header, "base_link", pose.pose
            odometry.publish(msg)
            n = len(relocalizer["inliers"])
            send_frame(wire, relocalizer, frame, stamp_ns=stamp)
            assert processed(relocalizer, n), relocalizer["node"].output()
            assert wait_until(lambda: len(list((session / "rgb").glob("*.png"))) > k, 20), node.output()
        assert wire.call(Trigger, f"{ns}/stop_recording").success
        metas = [json.loads(p.read_text()) for p in sorted((session / "meta").glob("*.json"))]
        figure("extend_keyframes", len(metas))
        assert len(metas) == len(recorded), node.output()
        # The keyframes hold the odometry's camera poses (base_link composed with the mount).
        np.testing.assert_allclose(np.loadtxt(session / "poses" / "frame_000002.txt"), drifted[2], atol=1e-5)
        assert {m["pose_from"] for m in metas} <= {"fix", "odometry"} and "fix" in {m["pose_from"] for m in metas}

        assert wire.call(Trigger, f"{ns}/build_map").success

        def state():
            return {kv.key: kv.value for kv in progress[-1].values}.get("state") if progress else None

        assert wait_until(lambda: state() in ("done", "failed", "cancelled"), 900, poll=0.5), node.output()
        assert state() == "done", progress[-1].message
        assert "new keyframes registered" in progress[-1].message, progress[-1].message
        g = load_map(grown).training["growth"]
        figure("extend_registered", g["registered"])
        assert g["added_frames"] == len(metas) and g["registered"] >= len(metas) // 2, g
        assert g["odometry_datasets"] == [str(session)]

        # The relocalizer swaps to the grown map and localizes the path's frames between the keyframes.
        since = len(relocalizer["node"].output())
        assert all(r.successful for r in wire.set_parameters("scr_relocalizer", {"map_path": str(grown)}))
        assert wait_until(lambda: f"loaded map {grown}" in relocalizer["node"].output()[since:], 60)
        errors = []
        for frame in queries:
            stamp = send_frame(wire, relocalizer, frame)
            if wait_until(lambda: any(stamp_to_ns(m.header.stamp) == stamp for m in relocalizer["poses"]), 20):
                [T] = [pose_to_matrix(m.pose) for m in relocalizer["poses"] if stamp_to_ns(m.header.stamp) == stamp]
                errors.append(pose_error(T, frame.pose))  # ~/pose is the camera's (base_link's is on TF)
        within = sum(dt < 0.1 and dr < 5.0 for dt, dr in errors)
        figure("extend_queries_within_10cm_5deg", within)
        assert within >= len(queries) // 2, errors
    finally:
        restore_map(wire, relocalizer["node"], scene["map"], confirm_fixes=3)
        assert node.stop() == 0, node.output()


def test_mapping_node_hears_best_effort_odometry_and_survives_stamps_going_back(ros_env, wire, scene, tmp_path):
    """A best-effort odometry publisher (as many robot drivers and simulators are) is heard; when
    the stamps jump back (a bag played again) the node keeps recording and says so once."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    session = tmp_path / "session"
    params = {
        "session_folder": str(session),
        "pose_source": "odometry",
        "pose_frame": "odom",
        "record_on_start": True,
        "device": "cpu",
        "min_translation": 0.0,
        "min_rotation_deg": 0.0,
        "max_interval": 0.0,
    }
    remaps = {"odometry": "/be/odom", "image": "/be/image", "camera_info": "/be/camera_info"}
    node = NodeProcess("mapping_node", "scr_mapping_be", params, tmp_path, ros_env, remap_name=True, remaps=remaps)
    try:
        odom = wire.node.create_publisher(
            Odometry, "/be/odom", QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        )
        io = {
            "image": wire.node.create_publisher(Image, "/be/image", 10),
            "info": wire.node.create_publisher(CameraInfo, "/be/camera_info", 10),
        }
        diagnostics = wire.collect(DiagnosticArray, "/diagnostics", 10)
        assert wait_until(lambda: odom.get_subscription_count() > 0 and io["image"].get_subscription_count() > 0, 60)
        frames = scene["train"][::6][:6]
        start = wire.now()
        # Three frames, then the clock goes back 30 s and three more follow.
        stamps = [start + i * 10**8 for i in range(3)] + [start - 30 * 10**9 + i * 10**8 for i in range(3)]
        for k, (frame, stamp) in enumerate(zip(frames, stamps)):
            msg = Odometry()
            msg.header.stamp = make_pose_stamped(wire.f, frame.pose, stamp, "odom").header.stamp
            msg.header.frame_id, msg.child_frame_id = "odom", CAMERA_FRAME
            msg.pose.pose = make_pose_stamped(wire.f, frame.pose, stamp, "odom").pose
            # Best effort may lose a message just after discovery (seen in CI on the first frame):
            # the pair is sent again while it is not recorded, as a stream would bring the next.
            for _ in range(6):
                odom.publish(msg)
                time.sleep(0.05)
                send_frame(wire, io, frame, stamp_ns=stamp)
                if wait_until(lambda: len(list((session / "rgb").glob("*.png"))) > k, 5):
                    break
            assert len(list((session / "rgb").glob("*.png"))) == k + 1, node.output()
        assert "stamps went back" in node.output()
        assert wait_until(
            lambda: (
                (s := latest_status(diagnostics, "scr_mapping_be: mapping")) is not None
                and int(s[2].get("clock jumps (stamps went back)", "0")) == 1
            ),
            10,
        ), latest_status(diagnostics, "scr_mapping_be: mapping")
        recorded = np.loadtxt(session / "poses" / "frame_000004.txt")
        np.testing.assert_allclose(recorded, frames[4].pose, atol=1e-5)
    finally:
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


# ------------------------------------------------------------------------------ a colcon install


def _package_sources(dest: Path) -> None:
    """The package's files (tracked, or new and not ignored: what a clone of the next commit
    holds), copied to ``dest``."""
    import shutil

    root = Path(__file__).resolve().parent.parent
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root, capture_output=True
    )
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            if name and (root / name).is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, dest / name)
    else:  # not a git checkout: everything but build outputs and environments
        shutil.copytree(
            root,
            dest,
            ignore=shutil.ignore_patterns(".venv*", "build", "install", "log", "*.egg-info", "__pycache__", ".git"),
        )


@pytest.mark.parametrize("symlink", [False, True], ids=["colcon-build", "colcon-build-symlink-install"])
def test_colcon_install_runs_the_relocalizer(symlink, ros_env, wire, scene, tmp_path):
    """``colcon build`` (colcon from PyPI), plain and ``--symlink-install``, puts the nodes where
    ``ros2 run`` looks; the relocalizer started from that install localizes over the wire."""
    ws = tmp_path / "ws"
    _package_sources(ws / "src" / "scr_ros")
    colcon = Path(sys.executable).parent / "colcon"
    cmd = [str(colcon), "build", "--base-paths", "src", "--event-handlers", "console_direct-"]
    built = subprocess.run(
        cmd + (["--symlink-install"] if symlink else []), cwd=ws, capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    prefix = ws / "install" / "scr_ros"
    lib = prefix / "lib" / "scr_ros"
    for path in (
        lib / "relocalizer_node",
        lib / "mapping_node",
        prefix / "share" / "scr_ros" / "package.xml",
        prefix / "share" / "scr_ros" / "launch" / "relocalizer.launch.py",
        prefix / "share" / "scr_ros" / "config" / "relocalizer.yaml",
        prefix / "share" / "ament_index" / "resource_index" / "packages" / "scr_ros",
    ):
        assert path.exists(), f"{path} not installed"
    # The environment `source install/setup.bash` gives (with --symlink-install it puts colcon's
    # build folder of links to the sources first on the path).
    sourced = subprocess.run(
        ["bash", "-c", f"source {ws / 'install' / 'setup.bash'} && env -0"],
        env={k: v for k, v in ros_env.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH")},
        capture_output=True,
        timeout=60,
    )
    assert sourced.returncode == 0, sourced.stderr.decode(errors="replace")
    env = dict(item.split("=", 1) for item in sourced.stdout.decode().split("\0") if "=" in item)
    where = subprocess.run(
        [sys.executable, "-c", "import scr_ros; print(scr_ros.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the checkout, which `python -c` would put first on the path
    )
    origin = Path(where.stdout.strip()).resolve()
    sources = (ws / "src" / "scr_ros").resolve()
    assert where.returncode == 0 and (
        origin.is_relative_to(sources) if symlink else origin.is_relative_to(prefix.resolve())
    ), f"scr_ros imported from {origin}"
    name = "scr_relocalizer_colcon"
    remaps = {"image": "/colcon/image", "camera_info": "/colcon/camera_info"}
    params = {**RELOCALIZER_PARAMS, "map_path": str(scene["map"])}
    node = NodeProcess("relocalizer_node", name, params, tmp_path, env, remap_name=True, remaps=remaps, bin_dir=lib)
    try:
        io = {
            "image": wire.node.create_publisher(Image, "/colcon/image", 10),
            "info": wire.node.create_publisher(CameraInfo, "/colcon/camera_info", 10),
        }
        poses = wire.collect(PoseStamped, f"/{name}/pose")
        wire.first_answer(Trigger, f"/{name}/reset")  # up; a reload could drop the frame below
        assert wait_until(lambda: io["image"].get_subscription_count() > 0, 30)
        stamp = send_frame(wire, io, scene["frames"][0])
        assert wait_until(lambda: any(stamp_to_ns(m.header.stamp) == stamp for m in poses), 60), node.output()
    finally:
        assert node.stop() == 0, node.output()

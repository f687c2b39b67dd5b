"""Launch test of the mapping node on the tiny synthetic scene. Needs a ROS 2 installation;
skipped without one.

Starts the node through the installed launch/mapping.launch.py, recording from the start into a
scratch session folder, and plays 40 of the scene's mapping frames: TF map -> camera_optical at
each image stamp (the frame's ground-truth pose), camera_info and the image. Then checks that

- keyframes land in the session folder with the poses TF gave for their stamps;
- ~/cancel_build with nothing running answers without harm;
- ~/build_map builds a map (test preset, CPU: a minute or two) whose ~/progress ends in state
  done, and the map file loads.

Run: ``colcon test --packages-select scr_ros`` or ``launch_test test/ros/test_mapping_launch.py``.
"""

import pytest

_NEEDS_ROS = "launch_testing tests need a ROS 2 installation (source /opt/ros/<distro>/setup.bash)"
pytest.importorskip("launch_testing", reason=_NEEDS_ROS)
pytest.importorskip("launch_ros", reason=_NEEDS_ROS)
pytest.importorskip("rclpy", reason=_NEEDS_ROS)

import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
from pathlib import Path  # noqa: E402

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_ros.transform_broadcaster import TransformBroadcaster  # noqa: E402

import launch  # noqa: E402
from scr_ros.datasets.base import read_pose_file  # noqa: E402
from scr_ros.evaluation.metrics import pose_error  # noqa: E402
from scr_ros.mapfile import load_map  # noqa: E402
from scr_ros.messages import encode_camera_info, encode_image, make_transform_stamped  # noqa: E402
from scr_ros.ros.common import rclpy_factory  # noqa: E402

NODE = "/scr_mapping"
# Not the launch file's defaults, so the remappings are exercised too.
IMAGE_TOPIC, INFO_TOPIC = "/test_camera/image_raw", "/test_camera/camera_info"
CAMERA_FRAME = "camera_optical"
FRAMES = 40
BUILD_TIMEOUT_S = 300.0

# One scratch folder per test process, removed when the process exits.
_SCRATCH = tempfile.TemporaryDirectory(prefix="scr_ros_mapping_launch_")


@pytest.mark.launch_test
def generate_test_description():
    root = Path(_SCRATCH.name)
    os.environ["SCR_ROS_CACHE"] = str(root / "cache")
    from scr_ros.datasets import open_dataset

    train = open_dataset("synthetic:tiny").frames("train")
    # Every third frame spans the whole mapping walk, which the map needs to cover the scene.
    frames = train[:: max(1, len(train) // FRAMES)][:FRAMES]
    session = root / "session"
    params = root / "mapping_test.yaml"
    # Test-only settings under the launch file's arguments: the seconds-long preset, on CPU.
    params.write_text("scr_mapping:\n  ros__parameters:\n    preset: test\n    device: cpu\n")
    launch_file = os.path.join(get_package_share_directory("scr_ros"), "launch", "mapping.launch.py")
    mapping = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(launch_file),
        launch_arguments={
            "session_folder": str(session),
            "record_on_start": "true",
            "pose_frame": "map",
            "params_file": str(params),
            "image_topic": IMAGE_TOPIC,
            "camera_info_topic": INFO_TOPIC,
        }.items(),
    )
    return launch.LaunchDescription([mapping, launch_testing.actions.ReadyToTest()]), {
        "frames": frames,
        "session": session,
    }


class TestMapping(unittest.TestCase):
    """Runs while the node is up; methods run in name order (test_1_..., test_2_...)."""

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node("scr_mapping_launch_test")
        cls.f = rclpy_factory()
        cls.progress = []  # the values of each ~/progress message, appended from the executor thread
        cls.node.create_subscription(
            DiagnosticStatus,
            f"{NODE}/progress",
            lambda m: cls.progress.append({kv.key: kv.value for kv in m.values}),
            50,
        )
        cls.image_pub = cls.node.create_publisher(Image, IMAGE_TOPIC, 10)
        cls.info_pub = cls.node.create_publisher(CameraInfo, INFO_TOPIC, 10)
        cls.tf_pub = TransformBroadcaster(cls.node)
        # Spinning in the background lets the test body block on plain polling loops.
        cls.executor = SingleThreadedExecutor()
        cls.executor.add_node(cls.node)
        cls.spinner = threading.Thread(target=cls.executor.spin, daemon=True)
        cls.spinner.start()

    @classmethod
    def tearDownClass(cls):
        cls.executor.shutdown()
        cls.spinner.join(timeout=5.0)
        cls.node.destroy_node()
        rclpy.shutdown()

    def wait_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return bool(predicate())

    def call(self, service: str, timeout: float = 30.0) -> Trigger.Response:
        client = self.node.create_client(Trigger, f"{NODE}/{service}")
        self.assertTrue(client.wait_for_service(timeout_sec=timeout), f"{NODE}/{service} is not offered")
        future = client.call_async(Trigger.Request())
        self.assertTrue(self.wait_until(future.done, timeout), f"{NODE}/{service} did not answer")
        return future.result()

    def test_1_keyframes_are_recorded_with_their_tf_poses(self, frames, session):
        for pub in (self.image_pub, self.info_pub):
            self.assertTrue(
                self.wait_until(lambda: pub.get_subscription_count() > 0, 60.0),
                f"nobody subscribes to {pub.topic_name}",
            )
        gt_by_stamp = {}
        for frame in frames:
            stamp = self.node.get_clock().now().nanoseconds
            gt_by_stamp[stamp] = frame.pose
            # TF first: the node looks the camera pose up at the image stamp when the image comes.
            self.tf_pub.sendTransform(make_transform_stamped(self.f, frame.pose, stamp, "map", CAMERA_FRAME))
            time.sleep(0.05)
            self.info_pub.publish(encode_camera_info(self.f, frame.camera, stamp, CAMERA_FRAME))
            self.image_pub.publish(encode_image(self.f, frame.load_image(), stamp, CAMERA_FRAME))
            time.sleep(0.2)

        # A frame counts once its image is on disk (the recorder writes the image last).
        images = lambda: sorted((session / "rgb").glob("frame_*.png"))  # noqa: E731
        # Most frames are keyframes (the walk moves more than min_translation between them); a
        # few may be lost to best-effort delivery or a slow TF lookup.
        self.assertTrue(
            self.wait_until(lambda: len(images()) >= FRAMES // 2, 30.0), f"only {len(images())} keyframes in {session}"
        )
        time.sleep(1.0)  # let the frames still in flight land
        for image in images():
            meta = json.loads((session / "meta" / f"{image.stem}.json").read_text())
            self.assertEqual(meta["camera_frame"], CAMERA_FRAME)
            self.assertIn(meta["stamp_ns"], gt_by_stamp, f"{image.stem} has a stamp that was never published")
            t_err, r_err = pose_error(
                read_pose_file(session / "poses" / f"{image.stem}.txt"), gt_by_stamp[meta["stamp_ns"]]
            )
            self.assertLess(t_err, 1e-4, f"{image.stem}: recorded pose is not TF's pose at its stamp")
            self.assertLess(r_err, 0.01)
            self.assertTrue((session / "intrinsics" / f"{image.stem}.txt").is_file())

    def test_2_cancel_without_a_build_is_harmless(self):
        response = self.call("cancel_build")
        self.assertTrue(not response.success or response.message, "cancel_build with nothing running should say so")

    def test_3_build_map_reports_progress_and_writes_a_loadable_map(self, session):
        stopped = self.call("stop_recording")
        self.assertTrue(stopped.success, stopped.message)
        keyframes = len(list((session / "rgb").glob("frame_*.png")))
        started = self.call("build_map")
        self.assertTrue(started.success, started.message)

        finished = lambda: any(p.get("state") in ("done", "failed", "cancelled") for p in self.progress)  # noqa: E731
        self.assertTrue(
            self.wait_until(finished, BUILD_TIMEOUT_S),
            f"no final progress within {BUILD_TIMEOUT_S:.0f} s; last: {self.progress[-1:]}",
        )
        final = next(p for p in self.progress if p.get("state") in ("done", "failed", "cancelled"))
        self.assertEqual(final["state"], "done", final)
        self.assertTrue(any(p.get("state") == "running" for p in self.progress), "no running progress before done")
        self.assertEqual(int(final["frames"]), keyframes)

        map_path = Path(final["map_path"])
        self.assertEqual(map_path, session / "map.safetensors")  # the default: SESSION/map.safetensors
        scene_map = load_map(map_path)
        self.assertGreater(len(scene_map.cloud_xyz), 0)


@launch_testing.post_shutdown_test()
class TestMappingShutdown(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)

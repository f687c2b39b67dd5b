"""``ros2 run scr_ros mapping_node``: record posed keyframes, then build a map on the robot.

Thin by design: decoding is :mod:`scr_ros.messages`, validation, keyframe choice, recording and
the build job are :class:`scr_ros.node_logic.mapping_core.MappingCore` (tested without ROS). This file
wires topics, TF, services and one recording thread:

    image callback --(newest only)--> LatestSlot --> recording thread: decode, camera pose at the
    image stamp (TF, or the pose / odometry topic), depth pairing --> MappingCore.add_frame
    --> SESSION/ on disk

Needs rclpy and the message packages only; ``tf2_ros`` is imported when ``pose_source`` is
``tf`` (refused at start without it).
"""

from __future__ import annotations

import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..errors import ScrError
from ..messages import (
    MessageError,
    decode_camera_info,
    decode_compressed_image,
    decode_depth,
    decode_image,
    pose_to_matrix,
    stamp_to_ns,
)
from ..node_logic.mailbox import LatestSlot
from ..node_logic.mapping_core import MappingCore, PoseBuffer, StampMatcher, body_to_camera_matrix
from ..node_logic.params import MAPPING_PARAMS
from .common import IMAGE_QOS_OVERRIDES, Diagnostics, declare_parameters, import_tf2, lookup, parameter_callback, spin

LEVELS = {"running": 0, "done": 0, "idle": 0, "cancelled": 1, "failed": 2}


class MappingNode(Node):
    def __init__(self) -> None:
        super().__init__("scr_mapping")
        self.core = MappingCore(declare_parameters(self, MAPPING_PARAMS))
        p = self.core.params
        self.camera_info = None
        self.slot: LatestSlot = LatestSlot()
        self.depths = StampMatcher(p["depth_max_age"])
        self._last_progress = 0.0

        self.poses: PoseBuffer | None = None
        if p["pose_source"] == "tf":
            tf2_ros = import_tf2(
                f"{self.get_name()}: pose_source tf",
                "publish the camera poses on a topic and set pose_source to pose or odometry",
            )
            self.tf_buffer = tf2_ros.Buffer()
            self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self)
        else:
            try:
                self.T_body_cam = body_to_camera_matrix(p["body_to_camera"])
            except MessageError as exc:
                raise SystemExit(f"{self.get_name()}: {exc}") from None
            self.poses = PoseBuffer(p["pose_max_gap"])
            # Best effort matches every publisher (a reliable subscription never hears a
            # best-effort odometry source, and says nothing about it); deep, so poses published
            # in bursts are all kept.
            poses_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
            if p["pose_source"] == "pose":
                self.create_subscription(PoseStamped, "pose", self.on_pose, poses_qos)
            else:
                self.create_subscription(Odometry, "odometry", self.on_pose, poses_qos)
        self.pub_progress = self.create_publisher(DiagnosticStatus, "~/progress", 10)

        if p["use_compressed"]:
            self.create_subscription(
                CompressedImage, "image/compressed", self.on_image, qos_profile_sensor_data, **IMAGE_QOS_OVERRIDES
            )
        else:
            self.create_subscription(Image, "image", self.on_image, qos_profile_sensor_data, **IMAGE_QOS_OVERRIDES)
        self.create_subscription(CameraInfo, "camera_info", self.on_camera_info, qos_profile_sensor_data)
        if p["use_depth"]:
            self.create_subscription(Image, "depth", self.on_depth, qos_profile_sensor_data)
        # extend mode: the relocalizer's state says how each keyframe's pose came about (a
        # confirmed fix stood, or odometry carried it since); latched, so a late start hears it.
        self.relocalizer_state = ""
        if p["mode"] == "extend":
            latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self.create_subscription(String, p["relocalizer_status"], self.on_relocalizer_status, latched)
        self.create_service(Trigger, "~/start_recording", self.on_start_recording)
        self.create_service(Trigger, "~/stop_recording", self.on_stop_recording)
        self.create_service(Trigger, "~/build_map", self.on_build_map)
        self.create_service(Trigger, "~/cancel_build", self.on_cancel_build)
        self.add_on_set_parameters_callback(
            parameter_callback(MAPPING_PARAMS, self.core.update_params, lambda: self.core.params)
        )
        self.received = 0  # image messages, counted on arrival (before any check)
        self.diagnostics = Diagnostics(self, "mapping", self.diagnostic_values)

        if p["record_on_start"]:
            self._answer(self.core.start_recording)
        self._running = True
        self.worker = threading.Thread(target=self.recording_loop, name="scr_mapping_recorder", daemon=True)
        self.worker.start()

    # ------------------------------------------------------------------ inputs

    def _note(self, what: str, reason: str, error: bool = False) -> None:
        """Count ``reason`` by kind and log it, throttled per kind (scr_ros.nodes.rejections), not per call site."""
        line = self.core.problems.add(what, reason)
        if line and error:
            self.get_logger().error(line)
        elif line:
            self.get_logger().warning(line)

    def _refuse(self, what: str, reason: str) -> None:
        self.core.counters["invalid"] += 1
        self._note(what, reason)

    def on_image(self, msg) -> None:
        self.received += 1
        self.slot.put(msg)

    def on_camera_info(self, msg) -> None:
        try:
            self.camera_info = decode_camera_info(msg, self.core.params["intrinsics_source"])
        except MessageError as exc:
            self._refuse("camera_info skipped", str(exc))

    def on_relocalizer_status(self, msg) -> None:
        self.relocalizer_state = msg.data

    def pose_from(self) -> str | None:
        """extend mode: "fix" while the relocalizer's fixes are confirmed, else "odometry"."""
        if self.core.params["mode"] != "extend":
            return None
        return "fix" if self.relocalizer_state == "localized" else "odometry"

    def on_depth(self, msg) -> None:
        try:
            self.depths.add(stamp_to_ns(msg.header.stamp), decode_depth(msg))
        except MessageError as exc:
            self._refuse("depth image skipped", str(exc))

    def on_pose(self, msg) -> None:
        p = self.core.params
        try:
            frame = msg.header.frame_id
            if frame and frame != p["pose_frame"]:
                raise MessageError(
                    f"pose in frame {frame!r}, but pose_frame is {p['pose_frame']!r} (set pose_frame to the frame "
                    "the poses are in)"
                )
            T_world_body = pose_to_matrix(
                msg.pose.pose if isinstance(msg, Odometry) else msg.pose, f"{p['pose_source']} message"
            )
            if self.poses.add(stamp_to_ns(msg.header.stamp), T_world_body @ self.T_body_cam):
                self.get_logger().warning(
                    f"{p['pose_source']} stamps went back by more than a second (a bag played again or a simulator "
                    "reset): the pose buffer starts afresh"
                )
        except MessageError as exc:
            self._refuse(f"{p['pose_source']} message skipped", str(exc))

    def camera_pose(self, frame_id: str, stamp_ns: int):
        p = self.core.params
        if self.poses is not None:
            try:
                return self.poses.at(stamp_ns, p["tf_timeout"])
            except LookupError as exc:
                raise MessageError(
                    f"no camera pose from the {p['pose_source']} topic at the image stamp: {exc}"
                ) from None
        try:
            return lookup(self.tf_buffer, p["pose_frame"], frame_id, stamp_ns, p["tf_timeout"])
        except LookupError as exc:
            raise MessageError(f"no camera pose {p['pose_frame']} -> {frame_id} at the image stamp: {exc}") from None

    def recording_loop(self) -> None:
        while self._running and rclpy.ok():
            msg = self.slot.take(timeout=0.5)
            if msg is None or not self.core.recording:
                continue
            p = self.core.params
            try:
                if self.camera_info is None:
                    raise MessageError("no camera_info received yet")
                image = decode_compressed_image(msg) if isinstance(msg, CompressedImage) else decode_image(msg)
                stamp = stamp_to_ns(msg.header.stamp)
                frame_id = msg.header.frame_id or self.camera_info.frame_id
                if not frame_id and self.poses is None:
                    raise MessageError("image has no header.frame_id (needed to look its pose up in TF)")
                T_world_cam = self.camera_pose(frame_id, stamp)
            except MessageError as exc:
                self._refuse("frame skipped", str(exc))
                continue
            depth = self.depths.match(stamp) if p["use_depth"] else None
            if p["use_depth"] and depth is None:
                self._note("frame recorded without depth", "no depth image with this image's stamp")
            try:
                result = self.core.add_frame(
                    image, self.camera_info.camera, T_world_cam, stamp, frame_id, depth, self.pose_from()
                )
            except Exception as exc:  # noqa: BLE001 - never let one frame end the recording thread
                self._note("frame failed", f"{type(exc).__name__}: {exc}", error=True)
                continue
            if result.clock_jump:
                self.get_logger().warning(result.clock_jump)
            if result.status == "recorded":
                self.get_logger().info(f"keyframe {result.name} ({result.reason})")
            elif result.status == "invalid":
                self._note("frame skipped", result.reason)

    # ------------------------------------------------------------------ services

    def _answer(self, action, response=None):
        try:
            message, success = action(), True
        except ScrError as exc:
            message, success = str(exc), False
        # One logging call per severity: rclpy raises ValueError when one call site changes severity.
        if success:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)
        if response is not None:
            response.success, response.message = success, message
        return response

    def on_start_recording(self, request, response):
        return self._answer(self.core.start_recording, response)

    def on_stop_recording(self, request, response):
        return self._answer(self.core.stop_recording, response)

    def on_build_map(self, request, response):
        return self._answer(lambda: self.core.start_build(self.on_progress, self.on_build_done), response)

    def on_cancel_build(self, request, response):
        running = self.core.build_job.running
        response = self._answer(self.core.build_job.cancel, response)
        response.success = response.success and running
        return response

    # ------------------------------------------------------------------ progress and diagnostics

    def publish_progress(self, status) -> None:
        values = [KeyValue(key=k, value=v) for k, v in status.as_values().items()]
        self.pub_progress.publish(
            DiagnosticStatus(
                level=bytes([LEVELS.get(status.state, 0)]),
                name="scr_mapping: map build",
                message=status.summary(),
                hardware_id="scr_ros",
                values=values,
            )
        )

    def on_progress(self, status) -> None:
        now = time.monotonic()
        if now - self._last_progress >= 0.5:  # the builder reports every few iterations; 2 Hz is plenty
            self._last_progress = now
            self.publish_progress(status)

    def on_build_done(self, status) -> None:
        self.publish_progress(status)
        if status.state == "done":
            self.get_logger().info(f"map build {status.summary()}")
        else:
            self.get_logger().error(f"map build {status.summary()}")

    def diagnostic_values(self):
        c, build = self.core.counters, self.core.build_job.status
        recorder = self.core.recorder
        values = {
            "session folder": str(self.core.session_folder),
            "pose source": self.core.params["pose_source"],
            "keyframes": str(recorder.count if recorder else 0),
            "frames received": str(self.received),
            "frames skipped (invalid)": str(c["invalid"]),
            "frames dropped (newer frame arrived)": str(self.slot.dropped),
            "clock jumps (stamps went back)": str(c["clock_jumps"]),
            "map path": str(self.core.map_path),
            "last problem": self.core.problems.last or "(none)",
            **self.core.problems.values(),
        }
        return (
            LEVELS.get(build.state, 0),
            ("recording" if self.core.recording else "not recording") + f"; build: {build.summary()}",
            values,
        )

    def destroy_node(self):
        self._running = False
        self.slot.close()
        self.core.build_job.cancel()
        self.worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> None:
    spin(MappingNode, args)


if __name__ == "__main__":
    main()

"""``ros2 run scr_ros mapping_node``: record posed keyframes, then build a map on the robot.

Thin by design: decoding is :mod:`scr_ros.messages`, validation, keyframe choice, recording and
the build job are :class:`scr_ros.nodes.mapping.MappingCore` (tested without ROS). This file
wires topics, TF, services and one recording thread:

    image callback --(newest only)--> LatestSlot --> recording thread: decode, TF pose at the
    image stamp, depth pairing --> MappingCore.add_frame --> SESSION/ on disk
"""

from __future__ import annotations

import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from diagnostic_updater import Updater
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger
from tf2_ros import Buffer, TransformListener

from ..errors import ScrError
from ..messages import MessageError, decode_camera_info, decode_compressed_image, decode_depth, decode_image, stamp_to_ns
from ..nodes.mapping import MappingCore, StampMatcher
from ..nodes.params import MAPPING_PARAMS
from ..nodes.relocalizer import LatestSlot
from .common import declare_parameters, lookup, parameter_callback, spin

LEVELS = {"running": DiagnosticStatus.OK, "done": DiagnosticStatus.OK, "idle": DiagnosticStatus.OK, "cancelled": DiagnosticStatus.WARN, "failed": DiagnosticStatus.ERROR}


class MappingNode(Node):
    def __init__(self) -> None:
        super().__init__("scr_mapping")
        self.core = MappingCore(declare_parameters(self, MAPPING_PARAMS))
        p = self.core.params
        self.camera_info = None
        self.slot: LatestSlot = LatestSlot()
        self.depths = StampMatcher(p["depth_max_age"])
        self._last_progress = 0.0

        self.tf_buffer = Buffer()
        self.tf_listener = TransformListener(self.tf_buffer, self)
        self.pub_progress = self.create_publisher(DiagnosticStatus, "~/progress", 10)

        if p["use_compressed"]:
            self.create_subscription(CompressedImage, "image/compressed", self.slot.put, qos_profile_sensor_data)
        else:
            self.create_subscription(Image, "image", self.slot.put, qos_profile_sensor_data)
        self.create_subscription(CameraInfo, "camera_info", self.on_camera_info, qos_profile_sensor_data)
        if p["use_depth"]:
            self.create_subscription(Image, "depth", self.on_depth, qos_profile_sensor_data)
        self.create_service(Trigger, "~/start_recording", self.on_start_recording)
        self.create_service(Trigger, "~/stop_recording", self.on_stop_recording)
        self.create_service(Trigger, "~/build_map", self.on_build_map)
        self.create_service(Trigger, "~/cancel_build", self.on_cancel_build)
        self.add_on_set_parameters_callback(parameter_callback(MAPPING_PARAMS, self.core.update_params))

        self.diagnostics = Updater(self)
        self.diagnostics.setHardwareID("scr_ros")
        self.diagnostics.add("mapping", self.fill_diagnostics)

        if p["record_on_start"]:
            self._answer(self.core.start_recording)
        self._running = True
        self.worker = threading.Thread(target=self.recording_loop, name="scr_mapping_recorder", daemon=True)
        self.worker.start()

    # ------------------------------------------------------------------ inputs

    def on_camera_info(self, msg) -> None:
        try:
            self.camera_info = decode_camera_info(msg, self.core.params["intrinsics_source"])
        except MessageError as exc:
            self.core.counters["invalid"] += 1
            self.get_logger().warning(f"camera_info skipped: {exc}", throttle_duration_sec=5.0)

    def on_depth(self, msg) -> None:
        try:
            self.depths.add(stamp_to_ns(msg.header.stamp), decode_depth(msg))
        except MessageError as exc:
            self.core.counters["invalid"] += 1
            self.get_logger().warning(f"depth image skipped: {exc}", throttle_duration_sec=5.0)

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
                if not frame_id:
                    raise MessageError("image has no header.frame_id")
                try:
                    T_world_cam = lookup(self.tf_buffer, p["pose_frame"], frame_id, stamp, p["tf_timeout"])
                except LookupError as exc:
                    raise MessageError(f"no camera pose {p['pose_frame']} -> {frame_id} at the image stamp: {exc}") from None
            except MessageError as exc:
                self.core.counters["invalid"] += 1
                self.get_logger().warning(f"frame skipped: {exc}", throttle_duration_sec=5.0)
                continue
            depth = self.depths.match(stamp) if p["use_depth"] else None
            if p["use_depth"] and depth is None:
                self.get_logger().warning("no depth image with this image's stamp: frame recorded without depth", throttle_duration_sec=5.0)
            try:
                result = self.core.add_frame(image, self.camera_info.camera, T_world_cam, stamp, frame_id, depth)
            except Exception as exc:  # noqa: BLE001 - never let one frame end the recording thread
                self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
                continue
            if result.status == "recorded":
                self.get_logger().info(f"keyframe {result.name} ({result.reason})")
            elif result.status == "invalid":
                self.get_logger().warning(f"frame skipped: {result.reason}", throttle_duration_sec=5.0)

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
        response = self._answer(self.core.build_job.cancel, response)
        response.success = response.success and self.core.build_job.running
        return response

    # ------------------------------------------------------------------ progress and diagnostics

    def publish_progress(self, status) -> None:
        values = [KeyValue(key=k, value=v) for k, v in status.as_values().items()]
        self.pub_progress.publish(DiagnosticStatus(level=LEVELS.get(status.state, DiagnosticStatus.OK), name="scr_mapping: map build", message=status.summary(), hardware_id="scr_ros", values=values))

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

    def fill_diagnostics(self, stat):
        c, build = self.core.counters, self.core.build_job.status
        recorder = self.core.recorder
        stat.summary(LEVELS.get(build.state, DiagnosticStatus.OK), ("recording" if self.core.recording else "not recording") + f"; build: {build.summary()}")
        stat.add("session folder", str(self.core.session_folder))
        stat.add("keyframes", str(recorder.count if recorder else 0))
        stat.add("frames received", str(c["received"]))
        stat.add("frames skipped (invalid)", str(c["invalid"]))
        stat.add("frames dropped (newer frame arrived)", str(self.slot.dropped))
        stat.add("map path", str(self.core.map_path))
        return stat

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

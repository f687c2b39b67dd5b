"""``ros2 run scr_ros relocalizer_node``: camera image -> pose in the map, TF and clouds.

Thin by design: decoding is :mod:`scr_ros.messages`, every decision is
:class:`scr_ros.node_logic.relocalizer_core.RelocalizerCore` (tested without ROS). This file wires topics,
parameters, TF and one inference thread:

    image callback --(newest only)--> LatestSlot --> inference thread --> publishers / TF

Needs rclpy and the message packages only; ``tf2_ros`` is imported when ``tf_mode`` is not
``none`` (a TF mode without it is refused at start).
"""

from __future__ import annotations

import threading

import rclpy
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Int32
from std_srvs.srv import Trigger

from ..errors import MessageError, ScrError
from ..geometry import camera_for_image
from ..messages import (
    decode_camera_info,
    decode_compressed_image,
    decode_image,
    make_point_cloud,
    make_pose_stamped,
    make_pose_with_covariance_stamped,
    make_transform_stamped,
    stamp_to_ns,
)
from ..node_logic.mailbox import LatestSlot
from ..node_logic.params import RELOCALIZER_PARAMS
from ..node_logic.relocalizer_core import CameraFrame, RelocalizerCore
from .common import Diagnostics, declare_parameters, import_tf2, lookup, parameter_callback, rclpy_factory, spin


class _TfSource:
    """The core's view of TF: odometry at the image stamp and the static base -> camera."""

    def __init__(self, node: "RelocalizerNode") -> None:
        self.node = node

    def odom_base(self, stamp_ns: int):
        p = self.node.core.params
        return lookup(self.node.tf_buffer, p["odom_frame"], p["base_frame"], stamp_ns, p["tf_timeout"])

    def base_camera(self, camera_frame: str):
        p = self.node.core.params
        # Only map_to_odom needs base -> camera; elsewhere it only re-expresses pose_with_covariance,
        # so do not make every frame wait for a transform that may not exist.
        timeout = p["tf_timeout"] if p["tf_mode"] == "map_to_odom" else 0.0
        return lookup(self.node.tf_buffer, p["base_frame"], camera_frame, None, timeout)


class RelocalizerNode(Node):
    def __init__(self) -> None:
        super().__init__("scr_relocalizer")
        self.core = RelocalizerCore(declare_parameters(self, RELOCALIZER_PARAMS))
        p = self.core.params
        self.f = rclpy_factory()
        self.slot: LatestSlot = LatestSlot()
        self.camera_info = None
        self._warned_distortion = False

        # TF only where a mode uses it: with tf_mode none there is no listener, no per-frame
        # base -> camera lookup, and no tf2_ros to install.
        self.tf_source = None
        if p["tf_mode"] != "none":
            tf2_ros = import_tf2(
                f"{self.get_name()}: tf_mode {p['tf_mode']}",
                "set tf_mode to none (poses and pose_with_covariance of the camera, no TF)",
            )
            self.tf_buffer = tf2_ros.Buffer()
            self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self)
            self.tf_broadcaster = tf2_ros.TransformBroadcaster(self)
            self.tf_source = _TfSource(self)

        self.pub_pose = self.create_publisher(PoseStamped, "~/pose", 10)
        self.pub_pose_cov = self.create_publisher(PoseWithCovarianceStamped, "~/pose_with_covariance", 10)
        self.pub_inliers = self.create_publisher(Int32, "~/inliers", 10)
        self.pub_scene_points = self.create_publisher(PointCloud2, "~/scene_points", 5)
        latched = QoSProfile(
            depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
        )
        self.pub_map_cloud = self.create_publisher(PointCloud2, "~/map_cloud", latched)

        if p["use_compressed"]:
            self.create_subscription(CompressedImage, "image/compressed", self.on_image, qos_profile_sensor_data)
        else:
            self.create_subscription(Image, "image", self.on_image, qos_profile_sensor_data)
        self.create_subscription(CameraInfo, "camera_info", self.on_camera_info, qos_profile_sensor_data)
        self.create_service(Trigger, "~/reload_map", self.on_reload_map)
        self.add_on_set_parameters_callback(
            parameter_callback(RELOCALIZER_PARAMS, self.apply_parameters, lambda: self.core.params)
        )
        if p["tf_mode"] == "map_to_odom" and p["tf_publish_rate"] > 0:
            self.create_timer(1.0 / p["tf_publish_rate"], self.republish_map_to_odom)

        self.diagnostics = Diagnostics(self, "relocalizer", lambda: self.core.diagnostics(dropped=self.slot.dropped))

        if p["map_path"]:
            self.load_map(p["map_path"])
        else:
            self.get_logger().warning(
                "no map_path set: waiting for one (ros2 param set /scr_relocalizer map_path FILE)"
            )
        self._running = True
        self.worker = threading.Thread(target=self.inference_loop, name="scr_relocalizer_inference", daemon=True)
        self.worker.start()

    # ------------------------------------------------------------------ inputs

    def on_camera_info(self, msg) -> None:
        try:
            info = decode_camera_info(msg, self.core.params["intrinsics_source"])
        except MessageError as exc:
            self._warn(self.core.refuse_input("camera_info skipped", str(exc)))
            return
        if info.distorted and self.core.params["intrinsics_source"] == "K" and not self._warned_distortion:
            self._warned_distortion = True
            self.get_logger().warning(
                "camera_info has non-zero distortion: subscribe to a rectified image (image_rect) and set "
                "intrinsics_source P"
            )
        self.camera_info = info

    def on_image(self, msg) -> None:
        # Decoding happens on the inference thread, so frames that get dropped are never decoded.
        self.core.counters.received += 1
        self.core.input_rate.tick()
        self.slot.put(msg)

    def decode(self, msg) -> CameraFrame:
        if self.camera_info is None:
            raise MessageError("no camera_info received yet")
        image = decode_compressed_image(msg) if isinstance(msg, CompressedImage) else decode_image(msg)
        h, w = image.shape[:2]
        camera = camera_for_image(self.camera_info.camera, w, h, self.core.params["scale_intrinsics_to_image"])
        frame_id = msg.header.frame_id or self.camera_info.frame_id
        if not frame_id and not self.core.params["camera_frame"]:
            raise MessageError("image has no header.frame_id and camera_frame is not set")
        return CameraFrame(image, camera, stamp_to_ns(msg.header.stamp), frame_id)

    # ------------------------------------------------------------------ inference thread

    def inference_loop(self) -> None:
        while self._running and rclpy.ok():
            msg = self.slot.take(timeout=0.5)
            if msg is None:
                continue
            try:
                frame = self.decode(msg)
            except MessageError as exc:
                self._warn(self.core.refuse_input("image skipped", str(exc)))
                continue
            try:
                self.publish(self.core.process(frame, self.get_clock().now().nanoseconds, self.tf_source))
            except Exception as exc:  # noqa: BLE001 - one bad frame (or CUDA hiccup) must not end the inference thread
                self.core.counters.errors += 1
                line = self.core.problems.add("frame failed", f"{type(exc).__name__}: {exc}")
                if line:
                    self.get_logger().error(line)

    def _warn(self, line: str | None) -> None:
        # Throttled per kind of reason by the core (scr_ros.node_logic.rejections), not per call site.
        if line:
            self.get_logger().warning(line)

    def publish(self, out) -> None:
        p, f = self.core.params, self.f
        if out.localization is not None:
            self.pub_inliers.publish(Int32(data=int(out.localization.num_inliers)))
            points = out.scene_points() if p["publish_scene_points"] else None
            if points is not None:
                self.pub_scene_points.publish(
                    make_point_cloud(f, points[0], points[1], out.stamp_ns, p["map_frame"], labels=points[2])
                )
        if not out.published:
            self._warn(self.core.not_localized(out))
            return
        if out.tf_warning:
            self.get_logger().warning(out.tf_warning, throttle_duration_sec=5.0)
        self.pub_pose.publish(make_pose_stamped(f, out.T_map_cam, out.stamp_ns, p["map_frame"]))
        self.pub_pose_cov.publish(
            make_pose_with_covariance_stamped(f, out.T_map_pose, out.covariance, out.stamp_ns, p["map_frame"])
        )
        if p["tf_mode"] == "map_to_odom" and out.T_map_odom is not None:
            self.republish_map_to_odom()
        elif p["tf_mode"] == "map_to_camera":
            self.tf_broadcaster.sendTransform(
                make_transform_stamped(f, out.T_map_cam, out.stamp_ns, p["map_frame"], out.camera_frame)
            )

    def republish_map_to_odom(self) -> None:
        nxt = self.core.broadcast.next(self.get_clock().now().nanoseconds)
        if nxt is not None:
            p = self.core.params
            self.tf_broadcaster.sendTransform(
                make_transform_stamped(self.f, nxt[0], nxt[1], p["map_frame"], p["odom_frame"])
            )

    # ------------------------------------------------------------------ map, parameters, diagnostics

    def load_map(self, path: str, strict: bool = False) -> bool:
        """Load a map and publish its cloud. A failure keeps the current map; ``strict`` re-raises it
        (so a ``ros2 param set map_path`` is refused with the reason)."""
        try:
            summary = self.core.load_map(path)
        except ScrError as exc:
            self.get_logger().error(f"map not loaded, keeping the current one: {exc}")
            if strict:
                raise
            return False
        self.get_logger().info(summary)
        m = self.core.map
        if m.cloud_xyz is not None:
            stamp = self.get_clock().now().nanoseconds
            self.pub_map_cloud.publish(
                make_point_cloud(self.f, m.cloud_xyz, m.cloud_rgb, stamp, self.core.params["map_frame"])
            )
        else:
            self.get_logger().info("this map has no stored point cloud (made before format 2): ~/map_cloud stays empty")
        return True

    def on_reload_map(self, request, response):
        path = self.core.params["map_path"]
        response.success = self.load_map(path)
        response.message = f"loaded {path}" if response.success else f"could not load {path!r}; see the node log"
        return response

    def apply_parameters(self, changes: dict) -> None:
        new_path = changes.get("map_path")
        if new_path is not None and new_path != self.core.map_path:
            self.load_map(new_path, strict=True)  # raises: the change is refused and the old map kept
        self.core.update_params(changes)

    def destroy_node(self):
        self._running = False
        self.slot.close()
        self.worker.join(timeout=5.0)
        return super().destroy_node()


def main(args=None) -> None:
    spin(RelocalizerNode, args)


if __name__ == "__main__":
    main()

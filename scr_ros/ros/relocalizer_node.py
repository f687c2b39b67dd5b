"""``ros2 run scr_ros relocalizer_node``: camera image -> pose in the map, TF and clouds.

Thin by design: decoding is :mod:`scr_ros.messages`, every decision is
:class:`scr_ros.node_logic.relocalizer_core.RelocalizerCore` (tested without ROS). This file wires
topics, parameters, TF, the lifecycle and four threads besides the executor's:

    image callback --(newest only)--> LatestSlot --> inference thread (encoder, head)
        --> Handoff --> RANSAC thread (RANSAC, decisions) --> publishers / TF
    map_path / ~/reload_map --(header checked at once)--> map loader thread --> atomic swap
    TF listener on its own node (scr_relocalizer_tf) and thread (tf2_ros spin_thread)
    ~/localize, which waits for a fix, on its own node (scr_relocalizer_services) and thread

(with ``pipelined: false`` the inference thread runs RANSAC and the decisions itself), so
nothing the executor runs waits for a map load or inference: images, parameters and
``/diagnostics`` keep flowing while a new map loads, and the old map serves until it is ready.

A lifecycle node (REP-2001's managed nodes, ``rclpy.lifecycle``): *configure* loads the map,
*activate* starts processing and publishing, *deactivate* stops both, *cleanup* drops the map.
With ``autostart`` (the default) it configures and activates itself, so ``ros2 run`` and the
launch files behave as a plain node; with ``autostart: false`` a lifecycle manager (Nav2's)
drives it.

Outputs, each always in the same frame (docs/ros.md has the table):

- ``~/pose`` (PoseStamped, ``map``): the camera optical frame;
- ``~/pose_with_covariance`` (PoseWithCovarianceStamped, ``map``): the base frame, with the mount
  from TF or ``base_to_camera``; not published when neither gives it (counted in diagnostics);
- ``initialpose`` (PoseWithCovarianceStamped, ``map``, with ``publish_initial_pose``): the base,
  once per confirmed fix after start or after being lost, and on ``~/publish_initial_pose``;
- TF ``map -> odom`` (``tf_mode map_to_odom``) or ``map -> camera`` (``map_to_camera``), after the
  first-fix check; ``~/inliers``, ``~/scene_points`` and ``~/map_cloud``;
- ``~/status`` (std_msgs/String, latched): localized, unconfirmed, lost or no_map.

Services: ``~/reload_map``, ``~/publish_initial_pose``, ``~/reset`` (std_srvs/Trigger) and
``~/localize`` (Trigger: waits up to ``localize_timeout`` for a confirmed fix; with ``on_demand``
the node localizes only while such a call waits).

Needs rclpy, lifecycle_msgs and the message packages; ``tf2_ros`` is imported when ``tf_mode`` is
not ``none`` (a TF mode without it is refused at start).
"""

from __future__ import annotations

import threading
import time

import rclpy
import torch
from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Int32, String
from std_srvs.srv import Trigger

from ..errors import MessageError, ScrError
from ..geometry import camera_for_image
from ..mapfile import read_header
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
from ..node_logic.mailbox import Handoff, LatestSlot
from ..node_logic.params import RELOCALIZER_PARAMS, ParameterError
from ..node_logic.relocalizer_core import CameraFrame, LocalizeRequests, RelocalizerCore
from ..relocalize import threads_beside_ransac
from .common import (
    IMAGE_QOS_OVERRIDES,
    Diagnostics,
    SideSpinner,
    declare_parameters,
    import_tf2,
    lookup,
    parameter_callback,
    rclpy_factory,
    side_node,
    spin,
)


class _TfSource:
    """The core's view of TF (:class:`~scr_ros.node_logic.relocalizer_core.TfSource`)."""

    def __init__(self, node: "RelocalizerNode") -> None:
        self.node = node

    def odom_base(self, stamp_ns: int):
        p = self.node.core.params
        return lookup(self.node.tf_buffer, p["odom_frame"], p["base_frame"], stamp_ns, p["tf_timeout"])

    def base_camera(self, camera_frame: str, stamp_ns: int | None, timeout_s: float):
        p = self.node.core.params
        return lookup(self.node.tf_buffer, p["base_frame"], camera_frame, stamp_ns, timeout_s)

    def clear(self) -> None:
        self.node.tf_buffer.clear()


class RelocalizerNode(LifecycleNode):
    TWO_MAP_ODOM_SOURCES = (
        "publish_initial_pose with tf_mode map_to_odom: if AMCL (or another localizer) runs, it and this node both "
        "move map -> odom; under AMCL set tf_mode none and let initialpose seed it"
    )

    def __init__(self) -> None:
        super().__init__("scr_relocalizer")
        try:
            self.core = RelocalizerCore(declare_parameters(self, RELOCALIZER_PARAMS))
        except ParameterError as exc:  # a combination no single range catches (base_to_camera's length)
            raise SystemExit(f"{self.get_name()}: {exc}") from None
        p = self.core.params
        self.requests = LocalizeRequests()
        self.f = rclpy_factory()
        self.slot: LatestSlot = LatestSlot()
        self.camera_info = None
        self._warned_distortion = False
        self._active = False
        self.loader_slot: LatestSlot = LatestSlot()  # map paths to load, the newest wins
        self.last_load_error = ""
        self.loading: tuple[str, float] | None = None  # (path, monotonic start) while the loader works

        # TF only where a mode uses it: with tf_mode none there is no listener, no per-frame
        # base -> camera lookup, and no tf2_ros to install. The listener has a node of its own,
        # spun on tf2's thread: on this node, common.spin's executor would take it over (rclpy
        # moves a node to the last executor it is added to) and TF would wait behind images.
        self.tf_source = self.tf_node = None
        if p["tf_mode"] != "none":
            tf2_ros = import_tf2(
                f"{self.get_name()}: tf_mode {p['tf_mode']}",
                "set tf_mode to none (~/pose and ~/pose_with_covariance with the base_to_camera parameter, no TF)",
            )
            self.tf_buffer = tf2_ros.Buffer()
            self.tf_node = side_node(self, "tf")
            self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self.tf_node, spin_thread=True)
            self.tf_broadcaster = tf2_ros.TransformBroadcaster(self)
            self.tf_source = _TfSource(self)
        if p["publish_initial_pose"] and p["tf_mode"] == "map_to_odom":
            self.get_logger().warning(self.TWO_MAP_ODOM_SOURCES)

        # Publishers are lifecycle publishers: they publish only while the node is active.
        self.pub_pose = self.create_lifecycle_publisher(PoseStamped, "~/pose", 10)
        self.pub_pose_cov = self.create_lifecycle_publisher(PoseWithCovarianceStamped, "~/pose_with_covariance", 10)
        self.pub_initial = self.create_lifecycle_publisher(PoseWithCovarianceStamped, "initialpose", 10)
        self.pub_inliers = self.create_lifecycle_publisher(Int32, "~/inliers", 10)
        self.pub_scene_points = self.create_lifecycle_publisher(PointCloud2, "~/scene_points", 5)
        latched = QoSProfile(
            depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE
        )
        self.pub_map_cloud = self.create_lifecycle_publisher(PointCloud2, "~/map_cloud", latched)
        # ~/status is a plain publisher: a behaviour tree should read no_map before activation too.
        self.pub_status = self.create_publisher(String, "~/status", latched)
        self._status_sent = ""
        self.publish_status()

        # Callbacks only hand data over (the executor is single-threaded, common.spin), so none
        # of them may wait: inference and map loads run on this node's own threads.
        if p["use_compressed"]:
            self.create_subscription(
                CompressedImage, "image/compressed", self.on_image, qos_profile_sensor_data, **IMAGE_QOS_OVERRIDES
            )
        else:
            self.create_subscription(Image, "image", self.on_image, qos_profile_sensor_data, **IMAGE_QOS_OVERRIDES)
        self.create_subscription(CameraInfo, "camera_info", self.on_camera_info, qos_profile_sensor_data)
        self.create_service(Trigger, "~/reload_map", self.on_reload_map)
        self.create_service(Trigger, "~/publish_initial_pose", self.on_publish_initial_pose)
        self.create_service(Trigger, "~/reset", self.on_reset)
        # ~/localize waits for frames, so it answers from a node and thread of its own; its name
        # is this node's (~/localize), not the side node's.
        self.services_node = side_node(self, "services")
        self.services_node.create_service(Trigger, f"{self.get_fully_qualified_name()}/localize", self.on_localize)
        self.services_spinner = SideSpinner(self.services_node)
        self.add_on_set_parameters_callback(
            parameter_callback(RELOCALIZER_PARAMS, self.apply_parameters, lambda: self.core.params)
        )
        if p["tf_mode"] == "map_to_odom" and p["tf_publish_rate"] > 0:
            self.create_timer(1.0 / p["tf_publish_rate"], self.republish_map_to_odom)

        self.diagnostics = Diagnostics(self, "relocalizer", self.diagnostic_values)

        self._running = True
        self.worker = threading.Thread(target=self.inference_loop, name="scr_relocalizer_inference", daemon=True)
        self.worker.start()
        self.handoff: Handoff = Handoff()  # begun frames, from the inference thread to the RANSAC thread
        self.ransac_worker = None
        if p["pipelined"]:
            torch.set_num_threads(threads_beside_ransac())
            self.ransac_worker = threading.Thread(target=self.ransac_loop, name="scr_relocalizer_ransac", daemon=True)
            self.ransac_worker.start()
        self.loader = threading.Thread(target=self.loader_loop, name="scr_relocalizer_map_loader", daemon=True)
        self.loader.start()
        if p["autostart"]:
            self.trigger_configure()
            if self._state_machine.current_state[1] == "inactive":
                self.trigger_activate()
        else:
            self.get_logger().info("autostart is false: waiting for configure / activate (ros2 lifecycle set)")

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        path = self.core.params["map_path"]
        if not path:
            self.get_logger().warning(
                "no map_path set: waiting for one (ros2 param set /scr_relocalizer map_path FILE)"
            )
            return TransitionCallbackReturn.SUCCESS
        return TransitionCallbackReturn.SUCCESS if self.load_map(path) else TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # activates the lifecycle publishers
        self._active = True
        self.publish_map_cloud()
        self.get_logger().info("active: localizing incoming images")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self.get_logger().info("inactive: images are ignored until activated again")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self.core.unload()
        self.publish_status()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        return TransitionCallbackReturn.SUCCESS

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
        if self._active:
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
        # With pipelined set, this thread runs the network on the newest frame and hands it to
        # the RANSAC thread; while that one is busy it holds the frame, so what waits is at most
        # one frame and newer images keep replacing older ones in the slot, never queueing.
        pipelined = self.core.params["pipelined"]
        while self._running and rclpy.ok():
            msg = self.slot.take(timeout=0.5)
            if msg is None or not self._active:
                continue
            if not self.requests.wanted(self.core.params["on_demand"]):
                self.core.counters.idle += 1  # on_demand: nobody waits on ~/localize
                continue
            try:
                frame = self.decode(msg)
            except MessageError as exc:
                self._warn(self.core.refuse_input("image skipped", str(exc)))
                continue
            try:
                started = self.core.begin(frame, self.get_clock().now().nanoseconds, split=pipelined)
            except Exception as exc:  # noqa: BLE001 - one bad frame (or CUDA hiccup) must not end the inference thread
                self._frame_failed(exc)
                continue
            if pipelined:
                self.handoff.put(started)
            else:
                self.finish(started)

    def ransac_loop(self) -> None:
        while self._running and rclpy.ok():
            started = self.handoff.take(timeout=0.5)
            if started is not None:
                self.finish(started)

    def finish(self, started) -> None:
        try:
            self.publish(self.core.finish(started, self.tf_source))
        except Exception as exc:  # noqa: BLE001 - one bad frame must not end the thread
            self._frame_failed(exc)

    def _frame_failed(self, exc: Exception) -> None:
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
        self.requests.offer(out)
        self.publish_status()
        if out.clock_jump:
            self.get_logger().warning(out.clock_jump)
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
        if out.T_map_base is not None:
            base = make_pose_with_covariance_stamped(f, out.T_map_base, out.covariance, out.stamp_ns, p["map_frame"])
            if out.confirmed or not p["hold_unconfirmed_pose"]:
                self.pub_pose_cov.publish(base)
            if out.initial_pose:
                self.pub_initial.publish(base)
                self.get_logger().info("published the base pose on initialpose")
        else:
            self.get_logger().warning(out.base_missing, throttle_duration_sec=10.0)
        if not out.confirmed:
            return  # TF waits for the first-fix check
        if p["tf_mode"] == "map_to_odom" and out.T_map_odom is not None:
            self.republish_map_to_odom()
        elif p["tf_mode"] == "map_to_camera":
            self.tf_broadcaster.sendTransform(
                make_transform_stamped(f, out.T_map_cam, out.stamp_ns, p["map_frame"], out.camera_frame)
            )

    def republish_map_to_odom(self) -> None:
        if not self._active:
            return
        nxt = self.core.broadcast.next(self.get_clock().now().nanoseconds)
        if nxt is not None:
            p = self.core.params
            self.tf_broadcaster.sendTransform(
                make_transform_stamped(self.f, nxt[0], nxt[1], p["map_frame"], p["odom_frame"])
            )

    # ------------------------------------------------------------------ map, parameters, diagnostics

    def load_map(self, path: str) -> bool:
        """Load a map now (configure) and publish its cloud; a failure keeps the current map."""
        try:
            summary = self.core.load_map(path)
        except ScrError as exc:
            self.last_load_error = f"{path}: {exc}"
            self.get_logger().error(f"map not loaded, keeping the current one: {exc}")
            return False
        self.last_load_error = ""
        self.get_logger().info(summary)
        self.publish_status()
        self.publish_map_cloud()
        return True

    def request_map(self, path: str) -> None:
        """Check ``path``'s header now (a missing or broken file is refused with the reason, raising
        ScrError), then load it on the loader thread; the current map serves until it is ready."""
        read_header(path)
        self.loader_slot.put(path)

    def loader_loop(self) -> None:
        while self._running and rclpy.ok():
            path = self.loader_slot.take(timeout=0.5)
            if path is None:
                continue
            self.loading = (path, time.monotonic())
            self.get_logger().info(f"loading {path}; the current map serves until it is ready")
            try:
                prepared = self.core.prepare_map(path)
            except ScrError as exc:
                self.last_load_error = f"{path}: {exc}"
                self.get_logger().error(f"map not loaded, keeping the current one: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - a failed load must not end the loader thread
                self.last_load_error = f"{path}: {type(exc).__name__}: {exc}"
                self.get_logger().error(f"map not loaded, keeping the current one: {self.last_load_error}")
                continue
            finally:
                self.loading = None
            self.last_load_error = ""
            self.get_logger().info(self.core.install(prepared))
            self.publish_status()
            self.publish_map_cloud()

    def publish_map_cloud(self) -> None:
        if self.core.map is None or not self._active:
            return
        cloud = self.core.map_cloud()
        if cloud is None:
            self.get_logger().info("this map has no stored point cloud (made before format 2): ~/map_cloud stays empty")
            return
        xyz, rgb, total = cloud
        if len(xyz) < total:
            self.get_logger().info(f"~/map_cloud: {len(xyz)} of the map's {total} points (map_cloud_max_points)")
        stamp = self.get_clock().now().nanoseconds
        self.pub_map_cloud.publish(make_point_cloud(self.f, xyz, rgb, stamp, self.core.params["map_frame"]))

    def publish_status(self) -> None:
        """``~/status`` when it changed (latched: a late subscriber gets the current one)."""
        state = self.core.state
        if state != self._status_sent:
            self._status_sent = state
            self.pub_status.publish(String(data=state))

    def on_reload_map(self, request, response):
        path = self.core.params["map_path"]
        state = self._state_machine.current_state[1]
        if state not in ("inactive", "active"):
            response.success = False
            response.message = (
                f"the node is {state}: configure it first (ros2 lifecycle set {self.get_name()} configure)"
            )
            return response
        try:
            self.request_map(path)
        except ScrError as exc:
            self.get_logger().error(f"~/reload_map refused, keeping the current map: {exc}")
            response.success, response.message = False, f"could not load {path!r}: {exc}"
            return response
        response.success = True
        response.message = f"loading {path} (the current map serves until it is ready)"
        return response

    def on_publish_initial_pose(self, request, response):
        when, fix = self.core.request_initial_pose()
        if when == "refused":
            response.success = False
            response.message = "publish_initial_pose is false: this node does not seed initialpose (set it true)"
        elif when == "now" and self._active:
            p = self.core.params
            self.pub_initial.publish(
                make_pose_with_covariance_stamped(self.f, fix.T_map_base, fix.covariance, fix.stamp_ns, p["map_frame"])
            )
            self.core.counters.initial_poses += 1
            response.success, response.message = True, "published the latest confirmed fix's base pose on initialpose"
        else:
            response.success = True
            response.message = "no recent confirmed fix with a base pose: the next confirmed fix goes to initialpose"
        return response

    def on_reset(self, request, response):
        response.success, response.message = True, self.core.reset()
        self.publish_status()
        self.get_logger().info(f"~/reset: {response.message}")
        return response

    def on_localize(self, request, response):
        # Runs on the services node's thread: waiting here holds up neither images nor TF.
        if not self._active:
            response.success = False
            response.message = f"the node is {self._state_machine.current_state[1]}, not active"
            return response
        timeout = self.core.params["localize_timeout"]
        fix = self.requests.wait(timeout)
        if fix is None:
            response.success = False
            response.message = f"no confirmed fix within {timeout:g} s; last: {self.requests.last_reason or 'no frame'}"
            return response
        x, y, z = fix.T_map_cam[:3, 3]
        response.success = True
        response.message = (
            f"localized: camera at ({x:.3f}, {y:.3f}, {z:.3f}) in {self.core.params['map_frame']}, "
            f"{fix.localization.num_inliers} inliers, stamp {fix.stamp_ns} ns"
        )
        return response

    def apply_parameters(self, changes: dict) -> None:
        new_path = changes.get("map_path")
        load = new_path is not None and new_path != self.core.map_path and bool(new_path)
        if load:
            read_header(new_path)  # raises for a missing or broken file: the whole change is refused
        self.core.update_params(changes)  # raises (the change refused) for a bad base_to_camera
        if changes.get("publish_initial_pose") and self.core.params["tf_mode"] == "map_to_odom":
            self.get_logger().warning(self.TWO_MAP_ODOM_SOURCES)
        if load and self._state_machine.current_state[1] in ("inactive", "active"):
            self.loader_slot.put(new_path)

    def diagnostic_values(self):
        level, message, values = self.core.diagnostics(dropped=self.slot.dropped)
        values["lifecycle state"] = self._state_machine.current_state[1]
        loading = self.loading
        if loading is not None:
            values["map loading"] = f"{loading[0]} (for {time.monotonic() - loading[1]:.1f} s)"
        if self.last_load_error:
            values["last map load failed"] = self.last_load_error
        if not self._active and level == 0:
            level, message = 1, f"not active ({values['lifecycle state']}): images are ignored"
        return level, message, values

    def destroy_node(self):
        self._running = False
        self.slot.close()
        self.handoff.close()
        self.loader_slot.close()
        self.worker.join(timeout=5.0)
        if self.ransac_worker is not None:
            self.ransac_worker.join(timeout=5.0)
        self.loader.join(timeout=5.0)
        self.services_spinner.stop()
        if self.tf_node is not None:
            self.tf_node.destroy_node()
        return super().destroy_node()


def main(args=None) -> None:
    spin(RelocalizerNode, args)


if __name__ == "__main__":
    main()

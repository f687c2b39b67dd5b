"""Everything the relocalizer node decides, without ROS.

The node (``scr_ros/ros/relocalizer_node.py``) only moves data: it decodes messages with
:mod:`scr_ros.messages`, puts frames into a :class:`LatestSlot`, calls
:meth:`RelocalizerCore.process` on a worker thread with a TF source, and publishes what the
returned :class:`FrameOutcome` holds. This module decides:

- which frames are processed (newest only; stale ones dropped),
- whether a pose is published (enough inliers; no jump that odometry contradicts),
- the pose covariance (from the inlier geometry),
- the map -> odom transform (REP-105) and its future-dated re-publication,
- what the diagnostics say.

Frames (REP-105): ``map`` -> ``odom`` -> ``base_link`` -> camera optical frame. Poses are 4x4
``T_parent_child`` matrices (the pose of child in parent).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from ..encoders import load_encoder_for_map
from ..errors import ScrError
from ..geometry import PinholeCamera, invert_pose, rotation_angle_deg
from ..mapfile import SceneMap, load_map
from ..ransac import RansacConfig
from ..relocalize import Localization, Relocalizer, RelocalizerConfig
from .covariance import covariance_of_child, pose_covariance, published_covariance
from .map_odom import MapOdomBroadcast, map_to_odom
from .params import RELOCALIZER_PARAMS, selector_settings, validate
from .rejections import Rejections

INLIER_RGB = (40, 220, 40)
OUTLIER_RGB = (230, 40, 40)


class RateMeter:
    """Events per second over a sliding window (default 5 s) of a monotonic clock."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._times.append(self.clock())
            self._trim()

    def _trim(self) -> None:
        cutoff = self.clock() - self.window_s
        while self._times and self._times[0] < cutoff:
            self._times.popleft()

    def rate(self) -> float:
        with self._lock:
            self._trim()
            return len(self._times) / self.window_s


class JumpGate:
    """Rejects fixes that disagree with odometry: lost frames rather than teleporting the robot.

    The last accepted fix is carried to the new image stamp by the odometry motion in between
    (``T_map_cam_prev . T_odom_cam_prev^-1 . T_odom_cam_now``); a new fix further than the
    thresholds from that prediction is rejected. After ``reset_after`` consecutive rejections the
    next fix is accepted anyway (and becomes the new reference), so a wrong earlier fix (or a
    kidnapped robot) cannot lock the node out. Without odometry there is nothing to compare with and every fix passes.
    """

    def __init__(self) -> None:
        self._ref: tuple[np.ndarray, np.ndarray] | None = None
        self.consecutive = 0

    def check(
        self,
        T_map_cam: np.ndarray,
        T_odom_cam: np.ndarray | None,
        max_translation: float,
        max_rotation_deg: float,
        reset_after: int,
    ) -> str:
        """``""`` to accept, otherwise why the fix is rejected. Accepting updates the reference."""
        if T_odom_cam is None or max_translation <= 0:
            return ""
        if self._ref is not None:
            prev_map_cam, prev_odom_cam = self._ref
            predicted = prev_map_cam @ invert_pose(prev_odom_cam) @ T_odom_cam
            delta = invert_pose(predicted) @ T_map_cam
            dt, dr = float(np.linalg.norm(delta[:3, 3])), rotation_angle_deg(delta[:3, :3])
            if (dt > max_translation or dr > max_rotation_deg) and self.consecutive < reset_after:
                self.consecutive += 1
                return (
                    f"pose jump: {dt:.2f} m / {dr:.1f} deg from where odometry puts the camera "
                    f"(limits {max_translation:.2f} m / {max_rotation_deg:.1f} deg; {self.consecutive} in a row)"
                )
        self._ref = (np.array(T_map_cam), np.array(T_odom_cam))
        self.consecutive = 0
        return ""

    def reset(self) -> None:
        self._ref, self.consecutive = None, 0


# --------------------------------------------------------------------------------------------
# The node's decisions


@dataclass
class CameraFrame:
    """A decoded image ready for inference."""

    image: np.ndarray  # uint8 RGB (H, W, 3) or grey (H, W)
    camera: PinholeCamera  # intrinsics of this image
    stamp_ns: int
    frame_id: str  # the camera optical frame


class TfSource(Protocol):
    """What the core needs from TF; each method raises ``LookupError`` with a reason."""

    def odom_base(self, stamp_ns: int) -> np.ndarray:  # T_odom_base at the stamp
        ...

    def base_camera(self, camera_frame: str) -> np.ndarray:  # T_base_cam (static)
        ...


@dataclass
class FrameOutcome:
    """What to publish for one processed frame.

    ``status``: ``ok`` (publish the pose), ``lost`` (too few inliers / no RANSAC model),
    ``jump`` (rejected by odometry), ``stale`` (too old; not processed), ``no_map``, ``error``.
    """

    status: str
    reason: str
    stamp_ns: int
    camera_frame: str
    localization: Localization | None = None
    T_map_cam: np.ndarray | None = None
    T_map_pose: np.ndarray | None = None  # pose_with_covariance: base when known, else camera
    pose_frame: str = ""  # which frame T_map_pose is the pose of
    covariance: np.ndarray | None = None  # (6, 6) for T_map_pose
    T_map_odom: np.ndarray | None = None  # tf_mode map_to_odom: the new correction
    tf_warning: str = ""  # why TF / base pose could not be produced for this frame
    latency_ms: float = 0.0

    @property
    def published(self) -> bool:
        return self.status == "ok"

    def scene_points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """(xyz (N, 3), rgb (N, 3) uint8, labels (N,) or None) of this frame's scene coordinates:
        inliers green, outliers red; labels are the predicted region / partition of each point
        for maps that classify (HSCNet heads, SS-DVR partitions)."""
        loc = self.localization
        if loc is None or len(loc.scene_coords) == 0:
            return None
        rgb = np.where(
            loc.inlier_mask[:, None], np.array(INLIER_RGB, np.uint8), np.array(OUTLIER_RGB, np.uint8)
        ).astype(np.uint8)
        return loc.scene_coords, rgb, loc.labels


@dataclass
class Counters:
    received: int = 0
    processed: int = 0
    published: int = 0
    lost: int = 0
    jumps: int = 0
    stale: int = 0
    rejected_input: int = 0  # messages that failed validation
    errors: int = 0
    last_inliers: int = 0
    latencies_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))


class RelocalizerCore:
    """The relocalizer node without ROS.

    Args:
        params: node parameters (see :data:`RELOCALIZER_PARAMS`); missing ones take defaults.
        load: map loader (path -> :class:`SceneMap`), replaceable in tests.
    """

    def __init__(
        self,
        params: dict | None = None,
        load: Callable[[str], SceneMap] = load_map,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.params = validate(RELOCALIZER_PARAMS, params or {})
        self._load = load
        self._lock = threading.Lock()
        self._relocalizer: Relocalizer | None = None
        self.map: SceneMap | None = None
        self.map_path = ""
        self.gate = JumpGate()
        self.broadcast = MapOdomBroadcast(self.params["transform_tolerance"])
        self.counters = Counters()
        self.input_rate = RateMeter(clock=clock)
        self.processed_rate = RateMeter(clock=clock)
        self.published_rate = RateMeter(clock=clock)
        # Every reason a frame gave no pose (bad message, stale, lost, jump, error), by kind.
        self.problems = Rejections(clock=clock)

    def refuse_input(self, what: str, reason: str) -> str | None:
        """Count a message that failed validation; the line to log now, or None (throttled per kind)."""
        self.counters.rejected_input += 1
        return self.problems.add(what, reason)

    def not_localized(self, out: "FrameOutcome") -> str | None:
        """Count why ``out`` publishes no pose; the line to log now, or None (throttled per kind)."""
        return self.problems.add(f"frame not localized ({out.status})", out.reason)

    # ---------------------------------------------------------------- map and parameters

    def load_map(self, path: str) -> str:
        """Load ``path`` and swap it in; on any error the current map stays and ScrError is raised."""
        if not path:
            raise ScrError("no map path given (set the map_path parameter)")
        scene_map = self._load(path)
        encoder = load_encoder_for_map(scene_map.encoder, override=self.params["encoder"] or None)
        relocalizer = Relocalizer(scene_map, encoder, device=self.params["device"])
        with self._lock:
            self._relocalizer, self.map, self.map_path = relocalizer, scene_map, str(path)
            self.gate.reset()
        tr = scene_map.training
        return (
            f"loaded map {path}: encoder {scene_map.encoder.get('name')}, head {scene_map.head.head_type}, "
            f"{tr.get('frames', '?')} mapping frames, "
            f"{0 if scene_map.cloud_xyz is None else len(scene_map.cloud_xyz)} cloud points, "
            f"on {relocalizer.device}"
            + (
                f"; scene points carry each point's predicted {relocalizer.labels_name} as 'label'"
                if relocalizer.labels_name
                else ""
            )
        )

    @property
    def device(self) -> str:
        """Where the loaded map's network runs ("" without a map)."""
        return str(self._relocalizer.device) if self._relocalizer is not None else ""

    def update_params(self, changes: dict) -> None:
        """Apply changed parameters (already validated names); raises ParameterError when invalid."""
        checked = validate(RELOCALIZER_PARAMS, changes, partial=True)
        with self._lock:
            self.params.update(checked)

    def relocalizer_config(self) -> RelocalizerConfig:
        p = self.params
        return RelocalizerConfig(
            ransac=RansacConfig(max_reproj_error=p["ransac_threshold_px"], max_iterations=p["ransac_max_iterations"]),
            min_inliers=p["min_inliers"],
            selector=p["selector"],
            selector_settings=selector_settings(p),
            hypotheses=p["hypotheses"],
        )

    # ---------------------------------------------------------------- one frame

    def process(self, frame: CameraFrame, now_ns: int, tf: TfSource | None = None) -> FrameOutcome:
        """Localize ``frame`` and decide what to publish. Never raises for bad data: the outcome says."""
        t0 = time.perf_counter()
        p = dict(self.params)
        camera_frame = p["camera_frame"] or frame.frame_id
        with self._lock:
            relocalizer = self._relocalizer
        if relocalizer is None:
            return FrameOutcome("no_map", "no map loaded (set map_path)", frame.stamp_ns, camera_frame)
        age_s = (now_ns - frame.stamp_ns) * 1e-9
        if p["max_image_age"] > 0 and age_s > p["max_image_age"]:
            self.counters.stale += 1
            return FrameOutcome(
                "stale",
                f"image is {age_s:.2f} s old (max_image_age {p['max_image_age']} s; clocks in sync?)",
                frame.stamp_ns,
                camera_frame,
            )
        relocalizer.config = self.relocalizer_config()
        try:
            loc = relocalizer.localize(frame.image, frame.camera)
        except (ScrError, ValueError) as exc:
            self.counters.errors += 1
            return FrameOutcome("error", f"relocalization failed: {exc}", frame.stamp_ns, camera_frame)
        out = FrameOutcome("ok", "", frame.stamp_ns, camera_frame, localization=loc)
        self.counters.processed += 1
        self.counters.last_inliers = loc.num_inliers
        self.processed_rate.tick()
        if not loc.success:
            out.status, out.reason = "lost", loc.reason
            self.counters.lost += 1
            return self._finish(out, t0)
        out.T_map_cam = loc.T_world_cam

        # Odometry at the image stamp, for the jump check and map -> odom.
        T_odom_base = T_base_cam = None
        if tf is not None:
            try:
                T_base_cam = tf.base_camera(camera_frame)
            except LookupError as exc:
                out.tf_warning = f"no TF {p['base_frame']} -> {camera_frame}: {exc}"
            if T_base_cam is not None and p["tf_mode"] == "map_to_odom":
                try:
                    T_odom_base = tf.odom_base(frame.stamp_ns)
                except LookupError as exc:
                    out.tf_warning = f"no odometry ({p['odom_frame']} -> {p['base_frame']}) at the image stamp: {exc}"
        T_odom_cam = T_odom_base @ T_base_cam if T_odom_base is not None else None
        jump = self.gate.check(
            loc.T_world_cam, T_odom_cam, p["max_jump_translation"], p["max_jump_rotation_deg"], p["jump_reset_frames"]
        )
        if jump:
            out.status, out.reason = "jump", jump
            self.counters.jumps += 1
            return self._finish(out, t0)

        inl = loc.inlier_mask
        cov_cam = pose_covariance(loc.T_world_cam, loc.pixels[inl], loc.scene_coords[inl], frame.camera)
        cov_cam = published_covariance(
            cov_cam,
            p["covariance_inflation"],
            p["covariance_min_std_translation"],
            math.radians(p["covariance_min_std_rotation_deg"]),
        )
        if T_base_cam is not None:
            T_cam_base = invert_pose(T_base_cam)
            out.T_map_pose, out.pose_frame = loc.T_world_cam @ T_cam_base, p["base_frame"]
            out.covariance = covariance_of_child(cov_cam, loc.T_world_cam, T_cam_base)
        else:
            out.T_map_pose, out.pose_frame, out.covariance = loc.T_world_cam, camera_frame, cov_cam
        if p["tf_mode"] == "map_to_odom" and T_odom_base is not None:
            out.T_map_odom = map_to_odom(loc.T_world_cam, T_odom_base, T_base_cam)
            self.broadcast.update(out.T_map_odom)
        self.counters.published += 1
        self.published_rate.tick()
        return self._finish(out, t0)

    def _finish(self, out: FrameOutcome, t0: float) -> FrameOutcome:
        out.latency_ms = (time.perf_counter() - t0) * 1e3
        self.counters.latencies_ms.append(out.latency_ms)
        return out

    # ---------------------------------------------------------------- diagnostics

    def diagnostics(self, dropped: int = 0) -> tuple[int, str, dict[str, str]]:
        """(level 0 OK / 1 WARN / 2 ERROR, summary, key-values) for /diagnostics.

        OK only while poses are being published; otherwise the summary says what is missing and
        the last reason a frame gave no pose."""
        c = self.counters
        lat = np.median(c.latencies_ms) if c.latencies_ms else float("nan")
        values = {
            "map": self.map_path or "(none)",
            "input rate (Hz)": f"{self.input_rate.rate():.1f}",
            "processed rate (Hz)": f"{self.processed_rate.rate():.1f}",
            "published rate (Hz)": f"{self.published_rate.rate():.1f}",
            "latency median (ms)": f"{lat:.1f}",
            "last inliers": str(c.last_inliers),
            "frames received": str(c.received),
            "frames processed": str(c.processed),
            "poses published": str(c.published),
            "lost frames": str(c.lost),
            "rejected jumps": str(c.jumps),
            "stale frames": str(c.stale),
            "dropped (newer frame arrived)": str(dropped),
            "invalid input messages": str(c.rejected_input),
            "errors": str(c.errors),
            "last problem": self.problems.last or "(none)",
            **self.problems.values(),
        }
        if self._relocalizer is None:
            return 2, "no map loaded", values
        if c.received == 0:
            return 1, "no images received", values
        rate_in = self.input_rate.rate()
        if rate_in == 0:
            return 1, "no images in the last 5 s", values
        if self.published_rate.rate() == 0:
            why = f": {self.problems.last}" if self.problems.last else ""
            return 1, f"images arrive at {rate_in:.1f} Hz but no pose was published in the last 5 s{why}", values
        return 0, f"localizing at {self.published_rate.rate():.1f} Hz", values

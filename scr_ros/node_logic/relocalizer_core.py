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
from ..errors import MessageError, ScrError
from ..geometry import PinholeCamera, invert_pose
from ..mapfile import SceneMap, load_map
from ..ransac import RansacConfig
from ..relocalize import Front, Localization, Relocalizer, RelocalizerConfig
from .covariance import covariance_of_child, pose_covariance, published_covariance
from .frames import map_to_odom, mount_matrix, planar_base_pose
from .gates import FixConfirmation, InitialPoseTrigger, JumpGate, Limits, RateMeter
from .map_odom import CLOCK_JUMP_NS, MapOdomBroadcast
from .params import RELOCALIZER_PARAMS, ParameterError, selector_settings, validate
from .rejections import Rejections

# What ~/status says (std_msgs/String), for a behaviour tree that needs no /diagnostics parsing:
# localized: the latest fix is confirmed and within lost_timeout; unconfirmed: fixes come but the
# first-fix check has not passed (TF and initialpose wait); lost: no fix for lost_timeout of image
# time (or none yet); no_map: nothing loaded.
STATES = ("localized", "unconfirmed", "lost", "no_map")

INLIER_RGB = (40, 220, 40)
OUTLIER_RGB = (230, 40, 40)


class LocalizeRequests:
    """``~/localize``: callers wait (on their own thread) until a frame gives a confirmed fix, or
    their timeout passes; with ``on_demand`` frames are processed only while someone waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.pending = 0
        self._answer: FrameOutcome | None = None
        self._serial = 0  # answers given: a waiter takes the first one after it started waiting
        self.last_reason = ""

    def offer(self, out: "FrameOutcome") -> None:
        """Every finished frame: a confirmed fix answers everyone waiting."""
        with self._cond:
            if out.published and out.confirmed:
                self._answer, self._serial = out, self._serial + 1
                self._cond.notify_all()
            elif not out.published:
                self.last_reason = f"{out.status}: {out.reason}"
            else:
                self.last_reason = f"fix not yet confirmed ({out.state})"

    def wait(self, timeout_s: float) -> FrameOutcome | None:
        """The first confirmed fix from now on, or None after ``timeout_s`` (see :attr:`last_reason`)."""
        with self._cond:
            self.pending += 1
            start = self._serial
            try:
                self._cond.wait_for(lambda: self._serial > start, timeout=timeout_s)
                return self._answer if self._serial > start else None
            finally:
                self.pending -= 1

    def wanted(self, on_demand: bool) -> bool:
        """Whether the next frame should be processed."""
        return not on_demand or self.pending > 0


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
    """What the core needs from TF; the lookups raise ``LookupError`` with a reason."""

    def odom_base(self, stamp_ns: int) -> np.ndarray:  # T_odom_base at the stamp
        ...

    def base_camera(self, camera_frame: str, stamp_ns: int | None, timeout_s: float) -> np.ndarray:
        """T_base_cam at ``stamp_ns`` (None: the latest, for a static mount), waiting at most ``timeout_s``."""
        ...

    def clear(self) -> None:  # forget every transform (the clock jumped back)
        ...


@dataclass
class FrameOutcome:
    """What to publish for one processed frame.

    ``status``: ``ok`` (publish the pose), ``lost`` (too few inliers, no RANSAC model, or a
    position the inliers do not constrain), ``jump`` (rejected by odometry or the last fix),
    ``stale`` (too old, or begun before a reset: not used), ``no_map``, ``error``.
    ``state`` is what ``~/status`` says after this frame (:data:`STATES`).
    """

    status: str
    reason: str
    stamp_ns: int
    camera_frame: str
    localization: Localization | None = None
    T_map_cam: np.ndarray | None = None  # ~/pose: the camera optical frame in map
    T_map_base: np.ndarray | None = None  # ~/pose_with_covariance, initialpose: the base in map
    covariance: np.ndarray | None = None  # (6, 6) of T_map_base
    base_missing: str = ""  # why there is no base pose for this fix (then only ~/pose goes out)
    T_map_odom: np.ndarray | None = None  # tf_mode map_to_odom: the new correction
    confirmed: bool = False  # the fix is part of a confirmed run (TF and initialpose may use it)
    initial_pose: bool = False  # publish T_map_base on initialpose now
    tf_warning: str = ""  # why TF could not be produced for this frame
    clock_jump: str = ""  # the stamps went back (bag loop, simulator reset): what was reset
    latency_ms: float = 0.0
    state: str = ""  # ~/status after this frame: one of STATES

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
class Started:
    """A frame between :meth:`RelocalizerCore.begin` and :meth:`RelocalizerCore.finish`: the
    parameters and map it was begun with, and either what the network gave (``front``, RANSAC
    still to run), the whole localization, or the outcome already decided (no map, stale, error)."""

    frame: CameraFrame
    params: dict
    camera_frame: str
    clock_jump: str
    t0: float  # perf_counter at begin: the outcome's latency counts from here
    relocalizer: Relocalizer | None
    T_base_cam_param: np.ndarray | None
    generation: int  # the core's generation at begin: a reset in between makes the frame stale
    front: Front | None = None
    localization: Localization | None = None
    outcome: FrameOutcome | None = None


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
    base_missing: int = 0  # fixes published without a base pose (no base -> camera known)
    unconfirmed: int = 0  # fixes TF and initialpose waited on (the first-fix check)
    initial_poses: int = 0  # initialpose messages
    clock_jumps: int = 0
    unconstrained: int = 0  # fixes refused because the inliers do not pin the position (max_position_std)
    stale_after_reset: int = 0  # frames begun before a reset (map swap, clock jump, ~/reset) and dropped
    idle: int = 0  # on_demand: frames dropped because no ~/localize call waited
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
        self.confirmation = FixConfirmation()
        self.initial = InitialPoseTrigger()
        self.broadcast = MapOdomBroadcast(self.params["transform_tolerance"])
        self._last_stamp_ns: int | None = None
        self.T_base_cam_param = self._mount(self.params)
        self._check_config(self.params)
        # The latest *confirmed* fix with a base pose: what ~/publish_initial_pose may send.
        self.last_fix: FrameOutcome | None = None
        # Bumped by every reset (map swap, clock jump, ~/reset): a frame begun under an older
        # generation finishes as stale and touches nothing (the gate, last_fix, map -> odom).
        self.generation = 0
        self.state = "no_map"
        self._mounts: dict[str, np.ndarray] = {}  # static base -> camera transforms from TF, by frame
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

    @staticmethod
    def _mount(p: dict) -> np.ndarray | None:
        """The ``base_to_camera`` parameter as T_base_cam, None when it is empty (unknown)."""
        values = p["base_to_camera"]
        if not values:
            return None
        try:
            return mount_matrix(values, "base_to_camera")
        except MessageError as exc:
            raise ParameterError(str(exc)) from None

    def request_initial_pose(self) -> tuple[str, FrameOutcome | None]:
        """``~/publish_initial_pose``: ("now", fix) when the latest confirmed fix is recent (within
        lost_timeout of the newest image) and its base pose should go to initialpose at once;
        ("next", None) when the next confirmed fix will; ("refused", None) with
        publish_initial_pose false (the parameter decides whether this node seeds initialpose)."""
        if not self.params["publish_initial_pose"]:
            return "refused", None
        fix = self.last_fix
        newest = self._last_stamp_ns
        if fix is not None and newest is not None and (newest - fix.stamp_ns) * 1e-9 <= self.params["lost_timeout"]:
            return "now", fix
        self.initial.requested = True
        return "next", None

    def reset(self) -> str:
        """``~/reset``: forget the jump gate's reference, the first-fix check, initialpose's
        history and map -> odom; the next fixes must confirm again."""
        with self._lock:
            self._forget_fixes()
        return "the jump gate, the first-fix check, initialpose and map -> odom start afresh"

    def _clock(self, stamp_ns: int) -> str:
        """Stamps that go back by more than a second (a bag played again, a simulator reset) reset
        what depends on time; returns what was reset, once per jump ("" otherwise)."""
        last, self._last_stamp_ns = self._last_stamp_ns, stamp_ns
        if last is None or stamp_ns >= last - CLOCK_JUMP_NS:
            return ""
        self._forget_fixes()
        self.counters.clock_jumps += 1
        return (
            f"image stamps went back by {(last - stamp_ns) * 1e-9:.1f} s (a bag played again or a simulator reset): "
            "map -> odom, the jump gate, the first-fix check and initialpose start afresh"
        )

    # ---------------------------------------------------------------- map and parameters

    def load_map(self, path: str) -> str:
        """Load ``path`` and swap it in; on any error the current map stays and ScrError is raised."""
        return self.install(self.prepare_map(path))

    def prepare_map(self, path: str) -> tuple[str, SceneMap, Relocalizer]:
        """The slow half of loading a map (read, check, build the networks), which touches nothing
        the running node uses: a node does it on a worker thread while the old map serves."""
        if not path:
            raise ScrError("no map path given (set the map_path parameter)")
        scene_map = self._load(path)
        encoder = load_encoder_for_map(scene_map.encoder, override=self.params["encoder"] or None)
        return str(path), scene_map, Relocalizer(scene_map, encoder, device=self.params["device"])

    def install(self, prepared: tuple[str, SceneMap, Relocalizer]) -> str:
        """Swap a prepared map in, at once (the next frame uses it); returns the log line."""
        path, scene_map, relocalizer = prepared
        with self._lock:
            self._relocalizer, self.map, self.map_path = relocalizer, scene_map, path
            self._forget_fixes()
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

    def unload(self) -> None:
        """Drop the map (lifecycle cleanup): frames get ``no_map`` until one is loaded again."""
        with self._lock:
            self._relocalizer, self.map, self.map_path = None, None, ""
            self._forget_fixes()

    def _forget_fixes(self) -> None:
        # Fixes in another map (or none, or before a clock jump) say nothing about the next one:
        # the jump gate, the first-fix check, initialpose and map -> odom start afresh, and frames
        # already begun are dropped when they finish (the generation).
        self.gate.reset()
        self.confirmation.reset()
        self.initial.reset()
        self.broadcast.reset()
        self.last_fix = None
        self._mounts.clear()
        self.generation += 1
        self.state = "lost" if self._relocalizer is not None else "no_map"

    def map_cloud(self) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(xyz, rgb, points in the map) for ``~/map_cloud``: the loaded map's cloud, every k-th
        point when it holds more than ``map_cloud_max_points``; None without a map or cloud."""
        m = self.map
        if m is None or m.cloud_xyz is None:
            return None
        total = len(m.cloud_xyz)
        step = -(-total // self.params["map_cloud_max_points"])  # ceil
        return m.cloud_xyz[::step], m.cloud_rgb[::step], total

    @property
    def device(self) -> str:
        """Where the loaded map's network runs ("" without a map)."""
        return str(self._relocalizer.device) if self._relocalizer is not None else ""

    def update_params(self, changes: dict) -> None:
        """Apply changed parameters (already validated names); raises ParameterError when invalid."""
        checked = validate(RELOCALIZER_PARAMS, changes, partial=True)
        mount = self._mount({**self.params, **checked})
        self._check_config({**self.params, **checked})
        with self._lock:
            self.params.update(checked)
            self.T_base_cam_param = mount

    def _check_config(self, p: dict) -> None:
        """Refuse now what the relocalizer would refuse at the first frame (a query_height below 64)."""
        try:
            self.relocalizer_config(p)
        except ScrError as exc:
            raise ParameterError(str(exc)) from None

    def relocalizer_config(self, p: dict | None = None) -> RelocalizerConfig:
        """The relocalizer's settings from the parameters ``p`` (default: the current ones);
        raises :class:`~scr_ros.errors.ScrError` for a combination it refuses."""
        p = self.params if p is None else p
        return RelocalizerConfig(
            ransac=RansacConfig(max_reproj_error=p["ransac_threshold_px"], max_iterations=p["ransac_max_iterations"]),
            min_inliers=p["min_inliers"],
            selector=p["selector"],
            selector_settings=selector_settings(p),
            hypotheses=p["hypotheses"],
            query_height=p["query_height"],
            max_position_std=p["max_position_std"],
            covariance_inflation=p["covariance_inflation"],
            covariance_min_std_translation=p["covariance_min_std_translation"],
            covariance_min_std_rotation_deg=p["covariance_min_std_rotation_deg"],
        )

    # ---------------------------------------------------------------- one frame

    def process(self, frame: CameraFrame, now_ns: int, tf: TfSource | None = None) -> FrameOutcome:
        """Localize ``frame`` and decide what to publish. Never raises for bad data: the outcome says.

        The same as :meth:`finish` of :meth:`begin`; a pipelined caller runs the two on different
        threads, so one frame's RANSAC overlaps the next frame's network (``pipelined``).

        Outputs and their frames (never switched): ``T_map_cam`` (``~/pose``) is the camera optical
        frame in map; ``T_map_base`` (``~/pose_with_covariance``, initialpose) the base frame in
        map, formed with T_base_cam from TF where a TF mode has it, else from the
        ``base_to_camera`` parameter, else not at all (``base_missing`` says why). ``planar``
        keeps the base pose's x, y and yaw and takes z, roll and pitch from odometry (or 0)."""
        return self.finish(self.begin(frame, now_ns, split=False), tf)

    def begin(self, frame: CameraFrame, now_ns: int, split: bool = True) -> Started:
        """The first half of :meth:`process`: the checks that need no pose, then the encoder and
        head (``split`` and a map that :attr:`~scr_ros.relocalize.Relocalizer.splits_in_two`),
        else the whole localization. Call :meth:`finish` on the result, in frame order."""
        t0 = time.perf_counter()
        p = dict(self.params)
        camera_frame = p["camera_frame"] or frame.frame_id
        with self._lock:
            clock_jump = self._clock(frame.stamp_ns)
            relocalizer = self._relocalizer
            T_base_cam_param = self.T_base_cam_param
            generation = self.generation
        started = Started(frame, p, camera_frame, clock_jump, t0, relocalizer, T_base_cam_param, generation)
        if relocalizer is None:
            started.outcome = FrameOutcome(
                "no_map",
                "no map loaded (set map_path)",
                frame.stamp_ns,
                camera_frame,
                clock_jump=clock_jump,
                state="no_map",
            )
            return started
        age_s = (now_ns - frame.stamp_ns) * 1e-9
        if p["max_image_age"] > 0 and age_s > p["max_image_age"]:
            self.counters.stale += 1
            started.outcome = FrameOutcome(
                "stale",
                f"image is {age_s:.2f} s old (max_image_age {p['max_image_age']} s; clocks in sync?)",
                frame.stamp_ns,
                camera_frame,
                clock_jump=clock_jump,
                state=self.state,
            )
            return started
        relocalizer.config = self.relocalizer_config()
        try:
            if split and relocalizer.splits_in_two:
                started.front = relocalizer.front(frame.image, frame.camera)
            else:
                started.localization = relocalizer.localize(frame.image, frame.camera)
        except (ScrError, ValueError) as exc:
            started.outcome = self._failed(exc, started)
        return started

    def _failed(self, exc: Exception, started: Started) -> FrameOutcome:
        self.counters.errors += 1
        return FrameOutcome(
            "error",
            f"relocalization failed: {exc}",
            started.frame.stamp_ns,
            started.camera_frame,
            clock_jump=started.clock_jump,
            state=self._lost_or(started.frame.stamp_ns),
        )

    def finish(self, started: Started, tf: TfSource | None = None) -> FrameOutcome:
        """The second half of :meth:`process`: RANSAC where :meth:`begin` left it, then the
        decisions (jump gate, first-fix check, covariance, map -> odom). Frames must be finished
        in the order they were begun: the gate and the first-fix check follow the sequence.

        A frame begun before a reset (a map swap, a clock jump, ``~/reset``) comes out ``stale``
        and changes nothing: its fix belongs to the time before the reset."""
        if started.clock_jump and tf is not None:
            tf.clear()  # transforms stamped before the jump would make every lookup fail (TF_OLD_DATA)
        if started.outcome is not None:
            return started.outcome
        frame, camera_frame, clock_jump, t0 = started.frame, started.camera_frame, started.clock_jump, started.t0
        loc = started.localization
        if loc is None:
            try:
                loc = started.relocalizer.back(started.front)
            except (ScrError, ValueError) as exc:
                return self._failed(exc, started)
        with self._lock:
            if started.generation != self.generation:
                self.counters.stale_after_reset += 1
                return self._done(
                    FrameOutcome(
                        "stale",
                        "begun before a reset (new map, clock jump or ~/reset): dropped",
                        frame.stamp_ns,
                        camera_frame,
                        localization=loc,
                        clock_jump=clock_jump,
                        state=self.state,
                    ),
                    t0,
                )
            return self._decide(started, loc, tf)

    def _decide(self, started: Started, loc: Localization, tf: TfSource | None) -> FrameOutcome:
        frame, p, camera_frame, t0 = started.frame, started.params, started.camera_frame, started.t0
        out = FrameOutcome("ok", "", frame.stamp_ns, camera_frame, localization=loc, clock_jump=started.clock_jump)
        self.counters.processed += 1
        self.counters.last_inliers = loc.num_inliers
        self.processed_rate.tick()
        # Lost for lost_timeout of image time: the robot may have been carried anywhere, so the
        # confirmed run ends and the next fixes must agree again (the kidnapped robot).
        since = self.confirmation.last_stamp_ns
        if since is not None and (frame.stamp_ns - since) * 1e-9 > p["lost_timeout"]:
            self.confirmation.reset()
        if not loc.success:
            out.status, out.reason = "lost", loc.reason
            self.counters.lost += 1
            if loc.reason.startswith("position not constrained"):
                self.counters.unconstrained += 1
            out.state = self.state = self._lost_or(frame.stamp_ns)
            return self._done(out, t0)
        out.T_map_cam = loc.T_world_cam

        # The mount (the parameter, else TF) and odometry at the image stamp.
        T_odom_base = None
        T_base_cam = self._base_camera(started, tf, out)
        if tf is not None and T_base_cam is not None and p["tf_mode"] == "map_to_odom":
            try:
                T_odom_base = tf.odom_base(frame.stamp_ns)
            except LookupError as exc:
                out.tf_warning = f"no odometry ({p['odom_frame']} -> {p['base_frame']}) at the image stamp: {exc}"
        T_odom_cam = T_odom_base @ T_base_cam if T_odom_base is not None else None
        limits = Limits.from_params(p)
        jump = self.gate.check(loc.T_world_cam, T_odom_cam, frame.stamp_ns, limits, p["jump_reset_frames"])
        if jump:
            out.status, out.reason = "jump", jump
            self.counters.jumps += 1
            self.confirmation.reset()
            out.state = self.state = self._lost_or(frame.stamp_ns)
            return self._done(out, t0)

        cov_cam = loc.covariance  # the relocalizer's, with this node's inflation and floors
        if cov_cam is None:
            inl = loc.inlier_mask
            cov_cam = published_covariance(
                pose_covariance(loc.T_world_cam, loc.pixels[inl], loc.scene_coords[inl], frame.camera),
                p["covariance_inflation"],
                p["covariance_min_std_translation"],
                math.radians(p["covariance_min_std_rotation_deg"]),
            )
        if T_base_cam is not None:
            T_cam_base = invert_pose(T_base_cam)
            out.T_map_base = loc.T_world_cam @ T_cam_base
            out.covariance = covariance_of_child(cov_cam, loc.T_world_cam, T_cam_base)
            if p["planar"]:
                out.T_map_base = planar_base_pose(out.T_map_base, T_odom_base)
        else:
            out.base_missing = (
                f"no pose of {p['base_frame']}: TF has no {p['base_frame']} -> {camera_frame} and base_to_camera is "
                "empty; only ~/pose (the camera) is published"
            )
            self.counters.base_missing += 1
        out.confirmed = self.confirmation.add(loc.T_world_cam, T_odom_cam, frame.stamp_ns, p["confirm_fixes"], limits)
        out.state = self.state = "localized" if out.confirmed else "unconfirmed"
        if out.confirmed:
            self.gate.trust(loc.T_world_cam, T_odom_cam, frame.stamp_ns)
        if not out.confirmed:
            self.counters.unconfirmed += 1
        if out.confirmed and p["tf_mode"] == "map_to_odom" and T_odom_base is not None and out.T_map_base is not None:
            out.T_map_odom = map_to_odom(out.T_map_base, T_odom_base)
            self.broadcast.update(out.T_map_odom)
        if out.T_map_base is not None and out.confirmed:
            self.last_fix = out
            if p["publish_initial_pose"] and self.initial.due(frame.stamp_ns, p["lost_timeout"]):
                out.initial_pose = True
                self.counters.initial_poses += 1
        self.counters.published += 1
        self.published_rate.tick()
        return self._done(out, t0)

    def _lost_or(self, stamp_ns: int) -> str:
        """The state after a frame without a fix: still localized (or unconfirmed) while the last
        fix is within lost_timeout of image time, else lost."""
        if self._relocalizer is None:
            return "no_map"
        since = self.confirmation.last_stamp_ns
        if since is None or (stamp_ns - since) * 1e-9 > self.params["lost_timeout"]:
            return "lost"
        return self.state if self.state in ("localized", "unconfirmed") else "lost"

    def _base_camera(self, started: Started, tf: TfSource | None, out: FrameOutcome) -> np.ndarray | None:
        """T_base_cam for this frame: the ``base_to_camera`` parameter without any TF wait, else TF
        -- a static mount looked up once without waiting and kept, a moving one (``static_mount``
        false) at the image stamp within tf_timeout; None when neither has it."""
        if started.T_base_cam_param is not None:
            return started.T_base_cam_param
        if tf is None:
            return None
        p, camera_frame = started.params, started.camera_frame
        try:
            if not p["static_mount"]:
                return tf.base_camera(camera_frame, started.frame.stamp_ns, p["tf_timeout"])
            T = self._mounts.get(camera_frame)
            if T is None:
                T = self._mounts[camera_frame] = tf.base_camera(camera_frame, None, 0.0)
            return T
        except LookupError as exc:
            out.tf_warning = f"no TF {p['base_frame']} -> {camera_frame} and no base_to_camera parameter: {exc}"
            return None

    def _done(self, out: FrameOutcome, t0: float) -> FrameOutcome:
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
            "first-fix check": (
                "confirmed"
                if self.confirmation.count >= self.params["confirm_fixes"]
                else f"{self.confirmation.count} of {self.params['confirm_fixes']} agreeing fixes"
            ),
            "fixes TF waited on (first-fix check)": str(c.unconfirmed),
            "fixes without a base pose": str(c.base_missing),
            "initialpose messages": str(c.initial_poses),
            "clock jumps (stamps went back)": str(c.clock_jumps),
            "fixes refused: position not constrained": str(c.unconstrained),
            "frames dropped: begun before a reset": str(c.stale_after_reset),
            "frames skipped: on_demand, nobody asked": str(c.idle),
            "status": self.state,
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

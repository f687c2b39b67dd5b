"""``scr bag replay``: the relocalizer node's logic over every image of a bag, offline.

Each image goes through :class:`~scr_ros.node_logic.relocalizer_core.RelocalizerCore` exactly as in the
node (inlier threshold, jump gate with the bag's odometry, covariance), with TF from the bag and
the clock set to the image stamp (nothing is stale offline). Its outcome is scored against
``/ground_truth/pose`` at the same stamp and written as ``scr localize`` writes it, plus a
per-frame CSV, plots, and optionally a bag of the estimates for rviz.
"""

from __future__ import annotations

import collections
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .. import __version__
from ..evaluation.localization import FrameResult, summarize
from ..evaluation.metrics import pose_error
from ..messages import make_point_cloud, make_pose_stamped, make_pose_with_covariance_stamped, make_transform_stamped
from ..node_logic.relocalizer_core import CameraFrame, FrameOutcome, RelocalizerCore
from ..relocalize import ransac_thread
from .layout import TF_TYPE, BagError, Frames, Topics
from .reader import BagSource, SideData
from .tf import TfBuffer

GROUND_TRUTH_TOPIC = Topics().ground_truth
# The estimate gets its own TF child so rviz shows it beside the ground truth.
ESTIMATE_FRAME = "camera_estimate"
OUTPUT_TOPICS = {
    "pose": "/relocalizer/pose",
    "pose_with_covariance": "/relocalizer/pose_with_covariance",
    "inliers": "/relocalizer/inliers",
    "scene_points": "/relocalizer/scene_points",
}


class BagTf:
    """The node's TF source (:class:`~scr_ros.node_logic.relocalizer_core.TfSource`) over a bag's TF."""

    def __init__(self, tf: TfBuffer, odom_frame: str, base_frame: str, stamp_ns: int = 0) -> None:
        self.tf, self.odom_frame, self.base_frame = tf, odom_frame, base_frame
        self.stamp_ns = stamp_ns  # the image's: the bag's static transforms are looked up there

    def odom_base(self, stamp_ns: int) -> np.ndarray:
        return self.tf.lookup(self.odom_frame, self.base_frame, stamp_ns)

    def base_camera(self, camera_frame: str, stamp_ns: int | None, timeout_s: float) -> np.ndarray:
        # The bag's static transforms are looked up at the image's stamp (nothing waits offline).
        return self.tf.lookup(self.base_frame, camera_frame, self.stamp_ns if stamp_ns is None else stamp_ns)

    def clear(self) -> None:
        """Nothing to forget: the bag's TF is read whole, and a bag has no clock jumps."""


@dataclass
class ReplayResult:
    results: list[FrameResult]
    outcomes: list[FrameOutcome]
    report: dict
    skipped: collections.Counter = field(default_factory=collections.Counter)


def replay(
    bag: str | Path,
    core: RelocalizerCore,
    split: str | None = None,
    topics: Topics = Topics(),
    ground_truth_max_gap_s: float = 0.1,
    on_frame: Callable[[int, int, FrameResult, FrameOutcome], None] | None = None,
    on_outcome: Callable[[FrameOutcome, object], None] | None = None,
) -> ReplayResult:
    """Relocalize every image of ``bag`` (of one split, when the bag records splits).

    ``on_outcome(outcome, T_gt or None)`` sees every processed frame (the estimate bag writer).
    Frames without a ground-truth pose within ``ground_truth_max_gap_s`` are localized but not
    scored; undecodable messages are counted and skipped.
    """
    if core.map is None:
        raise BagError("no map loaded")
    results, outcomes = [], []
    skipped: collections.Counter = collections.Counter()
    t_start = time.perf_counter()
    decode_s = process_s = 0.0
    with BagSource(bag, topics) as src:
        side: SideData = src.load_side()
        if len(side.ground_truth) == 0:
            raise BagError(
                f"{bag}: no ground-truth poses on {topics.ground_truth}; replay needs them to score (scr bag info "
                "shows what the bag has)"
            )
        total = src.count_images(split, side)
        if total == 0:
            raise BagError(f"{bag}: no images in split {split or 'all'}")
        max_gap = int(ground_truth_max_gap_s * 1e9)

        def finished(outcome: FrameOutcome) -> None:
            outcomes.append(outcome)
            try:
                T_gt = side.ground_truth.at(outcome.stamp_ns, max_gap)
            except LookupError as exc:
                T_gt = None
                skipped[f"no ground truth: {exc}"] += 1
            if on_outcome:
                on_outcome(outcome, T_gt)
            if T_gt is None:
                return
            results.append(_score(outcome, T_gt))
            if on_frame:
                on_frame(len(outcomes), total, results[-1], outcome)

        # Pipelined (the node's default): frame t's RANSAC and decisions run on the second thread
        # while this one reads and decodes frame t+1 and runs its network; finished in order.
        pipelined = core.params["pipelined"]
        with ransac_thread() if pipelined else contextlib.nullcontext() as back:
            pending = None
            for item in src.images(side, split, allow_scaling=core.params["scale_intrinsics_to_image"]):
                if isinstance(item, tuple):
                    skipped[item[1]] += 1
                    core.counters.rejected_input += 1
                    continue
                decode_s += item.decode_s
                t0 = time.perf_counter()
                core.counters.received += 1
                frame = CameraFrame(item.image, item.camera, item.stamp_ns, item.frame_id)
                tf = BagTf(side.tf, core.params["odom_frame"], core.params["base_frame"], item.stamp_ns)
                started = core.begin(frame, now_ns=item.stamp_ns, split=pipelined)
                if not pipelined:
                    outcome = core.finish(started, tf)
                    process_s += time.perf_counter() - t0
                    finished(outcome)
                    continue
                outcome = pending.result() if pending is not None else None
                process_s += time.perf_counter() - t0  # the network, and any wait for the RANSAC before
                pending = back.submit(core.finish, started, tf)
                if outcome is not None:
                    finished(outcome)
            if pending is not None:
                t0 = time.perf_counter()
                outcome = pending.result()
                process_s += time.perf_counter() - t0
                finished(outcome)
    if not results:
        raise BagError(f"{bag}: no frame could be scored ({'; '.join(skipped) or 'no images'})")
    wall = time.perf_counter() - t_start
    n = len(outcomes)
    statuses = collections.Counter(o.status for o in outcomes)
    report = summarize(
        results,
        map=core.map_path,
        dataset=str(bag),
        split=split or "all",
        encoder=core.map.encoder["name"],
        head=core.map.head.head_type,
        device=core.device,
        scr_ros_version=__version__,
    )
    report["replay"] = {
        "images": n,
        "scored": len(results),
        "skipped": dict(skipped),
        "status": dict(statuses),
        "wall_seconds": round(wall, 3),
        "frames_per_second": round(n / wall, 3) if wall > 0 else None,
        # reading + decoding only: how fast replay would go with an infinitely fast network
        "decode_frames_per_second": round(n / decode_s, 1) if decode_s > 0 else None,
        # the relocalizer's share of the wall time (pipelined: what the reading thread waited on it)
        "relocalizer_frames_per_second": round(n / process_s, 3) if process_s > 0 else None,
        "pipelined": core.params["pipelined"],
        "params": {k: v for k, v in core.params.items() if k != "map_path"},
    }
    return ReplayResult(results, outcomes, report, skipped)


def _score(outcome: FrameOutcome, T_gt: np.ndarray) -> FrameResult:
    loc = outcome.localization
    T_est = outcome.T_map_cam if outcome.published else None
    t_err, r_err = pose_error(T_est, T_gt)
    name = f"{outcome.stamp_ns // 1_000_000_000}.{outcome.stamp_ns % 1_000_000_000:09d}"
    reason = outcome.reason if outcome.status != "ok" else ""
    if outcome.status not in ("ok", "lost"):
        reason = f"{outcome.status}: {reason}"
    return FrameResult(
        name,
        outcome.published,
        reason,
        T_est,
        T_gt,
        t_err,
        r_err,
        loc.num_inliers if loc else 0,
        loc.inlier_ratio if loc else 0.0,
        dict(loc.timings_ms) if loc else {},
        loc.ransac_iterations if loc else 0,
        loc.num_correspondences if loc else 0,
    )


class EstimateBag:
    """Writes what the node would publish to a bag: ``/relocalizer/pose`` (+ covariance, inliers,
    scene points), TF ``map -> camera_estimate``, and the ground truth copied for comparison."""

    def __init__(self, writer, frames: Frames = Frames(), scene_points: bool = True) -> None:
        self.w, self.frames, self.with_points = writer, frames, scene_points
        self.w.topic(OUTPUT_TOPICS["pose"], "geometry_msgs/msg/PoseStamped")
        self.w.topic(OUTPUT_TOPICS["pose_with_covariance"], "geometry_msgs/msg/PoseWithCovarianceStamped")
        self.w.topic(OUTPUT_TOPICS["inliers"], "std_msgs/msg/Int32")
        if scene_points:
            self.w.topic(OUTPUT_TOPICS["scene_points"], "sensor_msgs/msg/PointCloud2")
        self.w.topic("/tf", TF_TYPE)
        self.w.topic(GROUND_TRUTH_TOPIC, "geometry_msgs/msg/PoseStamped")

    def __call__(self, outcome: FrameOutcome, T_gt: np.ndarray | None) -> None:
        f, s, fr = self.w.factory, outcome.stamp_ns, self.frames
        if outcome.localization is not None:
            self.w.write(
                OUTPUT_TOPICS["inliers"], f("std_msgs/msg/Int32", data=int(outcome.localization.num_inliers)), s
            )
            points = outcome.scene_points() if self.with_points else None
            if points is not None:
                self.w.write(
                    OUTPUT_TOPICS["scene_points"],
                    make_point_cloud(f, points[0], points[1], s, fr.map, labels=points[2]),
                    s,
                )
        if outcome.published:
            self.w.write(OUTPUT_TOPICS["pose"], make_pose_stamped(f, outcome.T_map_cam, s, fr.map), s)
            if outcome.T_map_base is not None:  # the base pose, as the node: never the camera's instead
                self.w.write(
                    OUTPUT_TOPICS["pose_with_covariance"],
                    make_pose_with_covariance_stamped(f, outcome.T_map_base, outcome.covariance, s, fr.map),
                    s,
                )
            tf = make_transform_stamped(f, outcome.T_map_cam, s, fr.map, ESTIMATE_FRAME)
            self.w.write("/tf", f("tf2_msgs/msg/TFMessage", transforms=[tf]), s)
        if T_gt is not None:
            self.w.write(GROUND_TRUTH_TOPIC, make_pose_stamped(f, T_gt, s, fr.map), s)
            tf = make_transform_stamped(f, T_gt, s, fr.map, fr.ground_truth)
            self.w.write("/tf", f("tf2_msgs/msg/TFMessage", transforms=[tf]), s)

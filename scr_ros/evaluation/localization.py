"""Relocalize a list of frames against a map and summarize the papers' metrics.

Used by ``scr localize``, ``scr demo``, ``scr bag replay`` and the benchmarks, so every figure
comes from one code path. :mod:`scr_ros.evaluation.reports` writes what it finds (JSON report, per-frame
CSV, poses file, plots).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..datasets.base import Frame
from ..errors import DatasetError
from ..map_parts import ordered
from ..relocalize import Relocalizer, ransac_thread
from .metrics import THRESHOLDS, accuracy, median, pose_error
from .trajectory import trajectory_errors

STAGES = ("preprocess", "encoder", "head", "select", "ransac", "refine", "total")


@dataclass
class FrameResult:
    name: str
    success: bool
    reason: str
    T_est: np.ndarray | None
    T_gt: np.ndarray
    translation_error_m: float
    rotation_error_deg: float
    num_inliers: int
    inlier_ratio: float
    timings_ms: dict
    ransac_iterations: int = 0
    num_correspondences: int = 0  # what RANSAC saw (after the selector)
    # Metres from the true camera centre to the nearest mapping camera looking the same way
    # (:func:`nearest_view_distances`); NaN where the map holds no mapping poses.
    nearest_view_m: float = float("nan")


def localize_frames(
    relocalizer: Relocalizer,
    frames: Sequence[Frame],
    progress: Callable[[int, int, FrameResult | None], None] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
    pipelined: bool = False,
) -> list[FrameResult]:
    """Localize every frame and compare with its ground-truth pose.

    A frame whose image cannot be read (undecodable, missing, not the size of its intrinsics) is
    handed to ``on_skip(name, reason)`` and left out; without ``on_skip`` its DatasetError
    propagates. ``pipelined``: the selector and RANSAC of each frame run in a second thread
    while the next frame is read, encoded and predicted (torch, poselib and OpenCV release the
    GIL; ``benchmarks/gil_release.py``). The poses are the sequential path's, bit for bit; maps
    that weigh several global-encoding hypotheses are always localized one frame at a time."""
    results: list[FrameResult] = []

    def readable():
        for i, frame in enumerate(frames):
            try:
                image = frame.load_image()
            except DatasetError as exc:
                if on_skip is None:
                    raise
                on_skip(frame.name, str(exc))
                image = None
            yield i, frame, image

    def skipped(i: int) -> None:
        if progress:
            progress(i + 1, len(frames), None)

    def record(i: int, frame: Frame, loc) -> None:
        t_err, r_err = pose_error(loc.T_world_cam, frame.pose)
        res = FrameResult(
            frame.name,
            loc.success,
            loc.reason,
            loc.T_world_cam,
            frame.pose,
            t_err,
            r_err,
            loc.num_inliers,
            loc.inlier_ratio,
            loc.timings_ms,
            loc.ransac_iterations,
            loc.num_correspondences,
        )
        results.append(res)
        if progress:
            progress(i + 1, len(frames), res)

    if not (pipelined and relocalizer.splits_in_two):
        for i, frame, image in readable():
            if image is None:
                skipped(i)
            else:
                record(i, frame, relocalizer.localize(image, frame.camera))
        return results
    with ransac_thread() as back:
        pending = None
        for i, frame, image in readable():
            front = None if image is None else relocalizer.front(image, frame.camera)
            if pending is not None:
                record(*pending[:2], pending[2].result())
                pending = None
            if front is None:
                skipped(i)  # in frame order, after the frame before it
            else:
                pending = (i, frame, back.submit(relocalizer.back, front))
        if pending is not None:
            record(*pending[:2], pending[2].result())
    return results


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


# A fix a robot should not have been given: accepted, and this far off (the issue-39 criterion).
WRONG_FIX = (0.5, 10.0)  # metres (map units), degrees


def refusal_kind(reason: str) -> str:
    """A lost frame's reason without its numbers: what the report counts refusals by."""
    if reason.startswith("only ") and "inliers" in reason:
        return "too few inliers"
    return reason.split(":")[0] if reason else "unknown"


def summarize(results: Sequence[FrameResult], **extra) -> dict:
    """The REPORT.json content. Medians include lost frames as infinite errors (JSON ``null``
    when more than half the frames are lost). What a robot sees: ``accepted_fixes``, the
    ``wrong_fixes`` among them (further off than :data:`WRONG_FIX`), and ``refused`` by reason."""
    t = [r.translation_error_m for r in results]
    rot = [r.rotation_error_deg for r in results]
    timing = {s: median([r.timings_ms[s] for r in results if s in r.timings_ms]) for s in STAGES}
    report = {
        "frames": len(results),
        "lost": sum(not r.success for r in results),
        "accepted_fixes": sum(r.success for r in results),
        "wrong_fixes": sum(
            r.success and (r.translation_error_m > WRONG_FIX[0] or r.rotation_error_deg > WRONG_FIX[1]) for r in results
        ),
        "wrong_fix_threshold": {"translation_m": WRONG_FIX[0], "rotation_deg": WRONG_FIX[1]},
        "refused": dict(collections.Counter(refusal_kind(r.reason) for r in results if not r.success)),
        "accuracy": accuracy(t, rot),
        "median_translation_cm": _finite_or_none(median(t) * 100.0),
        "median_rotation_deg": _finite_or_none(median(rot)),
        "median_inliers": median([r.num_inliers for r in results]),
        "median_inlier_ratio": median([r.inlier_ratio for r in results]),
        "median_correspondences": median([r.num_correspondences for r in results]),
        "median_ransac_iterations": median([r.ransac_iterations for r in results]),
        "timing_ms": {k: round(v, 3) for k, v in timing.items() if math.isfinite(v)},
        "thresholds": {k: {"translation_m": m, "rotation_deg": d} for k, (m, d) in THRESHOLDS.items()},
    }
    report.update(extra)
    return report


def mapping_truth_report(
    results: Sequence[FrameResult],
    mapping_poses: np.ndarray,
    recorded_poses: np.ndarray | None,
    mapping_truth: np.ndarray,
) -> dict:
    """Scoring that stays honest when the map was built from poses that drifted.

    ``mapping_poses`` (F, 4, 4): the mapping frames' poses as the map used them (refined, when the
    build refined them); ``recorded_poses``: as they were recorded, when that differs;
    ``mapping_truth``: their true poses. Returns the mapping poses' errors before and after
    refinement (ATE RMSE and medians, after a rigid alignment each) and the queries' accuracy
    after the one rigid alignment that maps the mapping poses onto their truth: fitted on the
    mapping frames only, never on the queries, it removes the map frame's offset from the true
    world without hiding how well the map fits its own views."""
    final = trajectory_errors(mapping_poses, mapping_truth)
    A = np.asarray(final["alignment"])
    report = {"mapping_poses": {"frames": len(mapping_poses), "as_mapped": final}}
    if recorded_poses is not None:
        report["mapping_poses"]["recorded"] = trajectory_errors(recorded_poses, mapping_truth)
    errors = [pose_error(None if r.T_est is None else A @ r.T_est, r.T_gt) for r in results]
    t = [e[0] for e in errors]
    rot = [e[1] for e in errors]
    report["aligned"] = {
        "accuracy": accuracy(t, rot),
        "median_translation_cm": _finite_or_none(median(t) * 100.0),
        "median_rotation_deg": _finite_or_none(median(rot)),
        "note": "queries after the rigid alignment of the mapping poses onto their truth",
    }
    return report


# A mapping camera "looks the same way" as a query when their optical axes are within this angle.
SIMILAR_VIEW_DEG = 30.0
# Bands of the distance to the nearest similar mapping view (metres): where a map interpolates
# between the views it saw, and where it has to extrapolate.
VIEW_DISTANCE_BANDS = (0.0, 0.2, 0.4, 0.7, 1.0, math.inf)


def nearest_view_distances(
    query_poses: np.ndarray, mapping_poses: np.ndarray, max_angle_deg: float = SIMILAR_VIEW_DEG
) -> np.ndarray:
    """Distance (Q,) in metres from each query camera centre to the nearest mapping camera whose
    optical axis is within ``max_angle_deg`` of the query's; ``inf`` where none is.

    Args:
        query_poses: (Q, 4, 4) camera-to-world poses (the queries' truth).
        mapping_poses: (F, 4, 4) camera-to-world poses of the mapping frames, in the same world.
    """
    q = np.asarray(query_poses, np.float64)
    m = np.asarray(mapping_poses, np.float64)
    if len(q) == 0 or len(m) == 0:
        return np.full(len(q), np.inf)
    cos = q[:, :3, 2] @ m[:, :3, 2].T  # (Q, F) cosines between the optical axes
    dist = np.linalg.norm(q[:, None, :3, 3] - m[None, :, :3, 3], axis=2)
    dist[cos < np.cos(np.radians(max_angle_deg))] = np.inf
    return dist.min(axis=1)


def view_distance_report(results: Sequence[FrameResult]) -> list[dict]:
    """Accuracy by distance to the nearest similar mapping view (:data:`VIEW_DISTANCE_BANDS`, and
    queries with no mapping view within :data:`SIMILAR_VIEW_DEG` last); bands without queries
    are left out."""
    d = np.array([r.nearest_view_m for r in results], np.float64)
    bands = []
    edges = VIEW_DISTANCE_BANDS
    for lo, hi in [*zip(edges[:-1], edges[1:]), (math.inf, math.inf)]:
        inside = (d == math.inf) if lo == math.inf else (d >= lo) & (d < hi)
        chosen = [r for r, keep in zip(results, inside) if keep]
        if not chosen:
            continue
        t = [r.translation_error_m for r in chosen]
        rot = [r.rotation_error_deg for r in chosen]
        label = (
            f"no view within {SIMILAR_VIEW_DEG:.0f} deg"
            if lo == math.inf
            else (f">= {lo:g} m" if hi == math.inf else f"{lo:g}-{hi:g} m")
        )
        bands.append(
            {
                "band": label,
                "from_m": None if lo == math.inf else lo,
                "to_m": None if hi == math.inf else hi,
                "queries": len(chosen),
                "accuracy": accuracy(t, rot),
                "median_translation_cm": _finite_or_none(median(t) * 100.0),
                "median_rotation_deg": _finite_or_none(median(rot)),
            }
        )
    return bands


def mapping_truth(scene_map, ds) -> np.ndarray | None:
    """The true poses (F, 4, 4) of the map's posed mapping frames (:func:`posed_frames`), when
    ``ds`` is the dataset the map was built from (its mapping split holds every one of them by
    name); else None."""
    if scene_map.mapping_poses is None:
        return None
    try:
        frames = {f.name: f.pose for f in ds.frames(scene_map.training.get("split", "train"))}
    except DatasetError:
        return None
    names = scene_map.mapping_frames[: posed_frames(scene_map)]
    if not names or not all(name in frames for name in names):
        return None
    return np.stack([frames[name] for name in names])


def posed_frames(scene_map) -> int:
    """How many of the map's mapping frames came with poses: all, except in a grown map
    (:mod:`scr_ros.growth`), whose added frames follow them and are not of its mapping split."""
    growth = scene_map.training.get("growth")
    return int(growth["posed_frames"]) if growth else len(scene_map.mapping_frames or ())


def recorded_poses(scene_map) -> np.ndarray | None:
    """The mapping poses as recorded, when the build corrected them (the pose graph) or refined
    them (pose refinement; else None: as mapped): the recorded poses of the first part that
    changed them."""
    for cls in ordered():
        part = scene_map.parts.get(cls.key)
        if part is not None and (cls.corrects_poses or cls.adjusts_cameras):
            return part.module.recorded.double().numpy()
    return None

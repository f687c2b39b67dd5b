"""Relocalize a list of frames against a map and summarize the papers' metrics.

Used by ``scr localize``, ``scr demo``, ``scr bag replay`` and the benchmarks, so every figure
comes from one code path. :mod:`scr_ros.reports` writes what it finds (JSON report, per-frame
CSV, poses file, plots).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .datasets.base import Frame
from .errors import DatasetError
from .metrics import THRESHOLDS, accuracy, median, pose_error
from .relocalize import Relocalizer
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


def localize_frames(
    relocalizer: Relocalizer,
    frames: Sequence[Frame],
    progress: Callable[[int, int, FrameResult | None], None] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> list[FrameResult]:
    """Localize every frame and compare with its ground-truth pose.

    A frame whose image cannot be read (undecodable, missing, not the size of its intrinsics) is
    handed to ``on_skip(name, reason)`` and left out; without ``on_skip`` its DatasetError
    propagates."""
    results = []
    for i, frame in enumerate(frames):
        try:
            image = frame.load_image()
        except DatasetError as exc:
            if on_skip is None:
                raise
            on_skip(frame.name, str(exc))
            if progress:
                progress(i + 1, len(frames), None)
            continue
        loc = relocalizer.localize(image, frame.camera)
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
    return results


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def summarize(results: Sequence[FrameResult], **extra) -> dict:
    """The REPORT.json content. Medians include lost frames as infinite errors (JSON ``null``
    when more than half the frames are lost)."""
    t = [r.translation_error_m for r in results]
    rot = [r.rotation_error_deg for r in results]
    timing = {s: median([r.timings_ms[s] for r in results if s in r.timings_ms]) for s in STAGES}
    report = {
        "frames": len(results),
        "lost": sum(not r.success for r in results),
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


def mapping_truth(scene_map, ds) -> np.ndarray | None:
    """The true poses (F, 4, 4) of the map's mapping frames, when ``ds`` is the dataset the map was
    built from (its mapping split holds every one of them by name); else None."""
    if scene_map.mapping_poses is None:
        return None
    try:
        frames = {f.name: f.pose for f in ds.frames(scene_map.training.get("split", "train"))}
    except DatasetError:
        return None
    if not scene_map.mapping_frames or not all(name in frames for name in scene_map.mapping_frames):
        return None
    return np.stack([frames[name] for name in scene_map.mapping_frames])


def recorded_poses(scene_map) -> np.ndarray | None:
    """The mapping poses as recorded, when the build refined them (else None: as mapped)."""
    part = scene_map.parts.get("pose-refinement")
    return None if part is None else part.module.recorded.double().numpy()

"""Writing what an evaluation found: the JSON report, per-frame CSV, a poses file, the console
table and plots (trajectory, error CDF). All files are written atomically."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..geometry import pose_to_position_quaternion
from .localization import STAGES, FrameResult


def write_report(report: dict, path: str | Path) -> Path:
    return atomic_write_json(path, report)


def write_csv(results: Sequence[FrameResult], path: str | Path) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "name",
            "status",
            "reason",
            "translation_error_cm",
            "rotation_error_deg",
            "inliers",
            "inlier_ratio",
            "nearest_view_m",
        ]
        + [f"{s}_ms" for s in STAGES]
        + [
            "est_x",
            "est_y",
            "est_z",
            "est_qx",
            "est_qy",
            "est_qz",
            "est_qw",
            "gt_x",
            "gt_y",
            "gt_z",
            "gt_qx",
            "gt_qy",
            "gt_qz",
            "gt_qw",
        ]
    )
    for r in results:
        est = np.r_[pose_to_position_quaternion(r.T_est)] if r.T_est is not None else [float("nan")] * 7
        gt = np.r_[pose_to_position_quaternion(r.T_gt)]
        w.writerow(
            [
                r.name,
                "ok" if r.success else "lost",
                r.reason,
                f"{r.translation_error_m * 100:.3f}",
                f"{r.rotation_error_deg:.4f}",
                r.num_inliers,
                f"{r.inlier_ratio:.4f}",
                f"{r.nearest_view_m:.3f}",
            ]
            + [f"{r.timings_ms.get(s, float('nan')):.2f}" for s in STAGES]
            + [f"{v:.6f}" for v in est]
            + [f"{v:.6f}" for v in gt]
        )
    return atomic_write_text(path, buf.getvalue())


def write_poses(results: Sequence[FrameResult], path: str | Path) -> Path:
    """TUM-like text: ``name tx ty tz qx qy qz qw inliers`` per localized frame (camera-to-world,
    quaternion x, y, z, w); lost frames are listed in comments."""
    lines = ["# name tx ty tz qx qy qz qw inliers  (T_world_cam: camera-to-world, quaternion x y z w)"]
    for r in results:
        if r.T_est is None:
            lines.append(f"# {r.name} lost: {r.reason}")
            continue
        p, q = pose_to_position_quaternion(r.T_est)
        lines.append(f"{r.name} " + " ".join(f"{v:.6f}" for v in (*p, *q)) + f" {r.num_inliers}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def plot_results(
    results: Sequence[FrameResult], path: str | Path, mapping_poses: Sequence[np.ndarray] = (), title: str = ""
) -> Path:
    """Top-down trajectory (ground truth, estimates, mapping cameras) and per-frame errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_traj, ax_err) = plt.subplots(1, 2, figsize=(12, 5))
    if len(mapping_poses):
        m = np.array([T[:3, 3] for T in mapping_poses])
        ax_traj.plot(m[:, 0], m[:, 1], ".", color="0.8", ms=3, label="mapping cameras")
    gt = np.array([r.T_gt[:3, 3] for r in results])
    ax_traj.plot(gt[:, 0], gt[:, 1], "-", color="tab:green", lw=1.5, label="ground truth")
    est = np.array([r.T_est[:3, 3] for r in results if r.T_est is not None])
    if len(est):
        ax_traj.plot(est[:, 0], est[:, 1], "x", color="tab:blue", ms=4, label="estimate")
    lost = np.array([r.T_gt[:3, 3] for r in results if r.T_est is None])
    if len(lost):
        ax_traj.plot(lost[:, 0], lost[:, 1], "o", mfc="none", color="tab:red", label="lost")
    ax_traj.set_aspect("equal")
    ax_traj.set_xlabel("x [m]")
    ax_traj.set_ylabel("y [m]")
    ax_traj.set_title("trajectory (top view)")
    ax_traj.legend(loc="best", fontsize=8)
    idx = np.arange(len(results))
    t_cm = np.array([min(r.translation_error_m * 100, 1e3) for r in results])
    r_deg = np.array([min(r.rotation_error_deg, 180.0) for r in results])
    ax_err.semilogy(idx, np.maximum(t_cm, 1e-3), ".-", color="tab:blue", label="translation [cm]")
    ax_err.semilogy(idx, np.maximum(r_deg, 1e-3), ".-", color="tab:orange", label="rotation [deg]")
    ax_err.axhline(5.0, color="0.5", ls="--", lw=1, label="5 cm / 5 deg")
    ax_err.set_xlabel("query frame")
    ax_err.set_title("error per frame (lost frames at the top)")
    ax_err.legend(loc="best", fontsize=8)
    return _save_png(fig, path, title)


def _save_png(fig, path: str | Path, title: str = "") -> Path:
    """Title, lay out, and write ``fig`` atomically as a PNG; the figure is closed."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def format_table(report: dict) -> str:
    """A short human-readable summary of a report."""
    acc = report["accuracy"]
    tcm, rdeg = report.get("median_translation_cm"), report.get("median_rotation_deg")
    rows = [
        (
            "frames",
            f"{report['frames']}  (lost {report['lost']})"
            + (f", {report['frames_skipped']} skipped (unreadable)" if report.get("frames_skipped") else ""),
        ),
        (
            "accepted fixes",
            f"{report['accepted_fixes']}, wrong {report['wrong_fixes']} (> "
            f"{report['wrong_fix_threshold']['translation_m'] * 100:.0f} cm or "
            f"{report['wrong_fix_threshold']['rotation_deg']:.0f} deg)",
        )
        if "accepted_fixes" in report
        else None,
        (
            "refused",
            ", ".join(f"{n} {kind}" for kind, n in report["refused"].items()),
        )
        if report.get("refused")
        else None,
        ("25cm/2deg", f"{acc['25cm_2deg']:.1f} %"),
        ("10cm/5deg", f"{acc['10cm_5deg']:.1f} %"),
        ("5cm/5deg", f"{acc['5cm_5deg']:.1f} %"),
        ("2cm/2deg", f"{acc['2cm_2deg']:.1f} %"),
        ("1cm/1deg", f"{acc['1cm_1deg']:.1f} %"),
        (
            "median error",
            f"{tcm:.2f} cm, {rdeg:.2f} deg" if tcm is not None and rdeg is not None else "n/a (most frames lost)",
        ),
        ("median inliers", f"{report['median_inliers']:.0f} ({100 * report['median_inlier_ratio']:.1f} %)"),
        ("latency (median)", ", ".join(f"{k} {v:.0f} ms" for k, v in report["timing_ms"].items())),
    ]
    rows = [row for row in rows if row is not None]  # reports written before accepted / refused were counted
    if "mapping_seconds" in report:
        rows.insert(0, ("mapping time", f"{report['mapping_seconds']:.1f} s"))
    for band in report.get("by_view_distance", ()):
        # Where the map has to extrapolate: by the distance to the nearest similar mapping view.
        rows.append(
            (
                f"views {band['band']}",
                f"{band['queries']} queries, 5cm/5deg {band['accuracy']['5cm_5deg']:.1f} %, 2cm/2deg "
                f"{band['accuracy']['2cm_2deg']:.1f} %, median "
                + (
                    f"{band['median_translation_cm']:.1f} cm"
                    if band["median_translation_cm"] is not None
                    else "n/a (most lost)"
                ),
            )
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def plot_error_cdf(results: Sequence[FrameResult], path: str | Path, title: str = "") -> Path:
    """Cumulative distribution of translation and rotation errors; lost frames never reach it,
    so each curve ends at the share of localized frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(results), 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, values, unit, marks in (
        (axes[0], [r.translation_error_m * 100 for r in results], "translation error [cm]", (2, 5, 10)),
        (axes[1], [r.rotation_error_deg for r in results], "rotation error [deg]", (2, 5)),
    ):
        v = np.sort(np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64))
        if len(v):
            ax.step(np.r_[0.0, v], np.r_[0.0, np.arange(1, len(v) + 1) / n] * 100, where="post", color="tab:blue")
            ax.set_xscale("symlog", linthresh=1.0)
        for m in marks:
            ax.axvline(m, color="0.6", ls="--", lw=1)
        ax.set_ylim(0, 100)
        ax.set_xlabel(unit)
        ax.set_ylabel("frames within [%]")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{len(results)} frames, {sum(not r.success for r in results)} lost")
    return _save_png(fig, path, title)


def skipped_frames_line(training: dict, shown: int = 3) -> str | None:
    """One line on the mapping frames a build skipped because their image (or depth) could not
    be read, naming the first ``shown`` with the reason; None when none was skipped."""
    skipped = training.get("unreadable_frames") or {}
    if not skipped:
        return None
    items = list(skipped.items())
    named = "; ".join(f"{name} ({reason})" for name, reason in items[:shown])
    more = f"; and {len(items) - shown} more" if len(items) > shown else ""
    return (
        f"skipped {len(items)} of {training.get('frames', '?')} mapping frames that could not be read: {named}{more} "
        "(all listed in the map header's training.unreadable_frames)"
    )


def mapping_poses_line(training: dict) -> str | None:
    """One line on the mapping poses: how far a simulated drift moved them and how much the
    build's pose graph or refinement corrected them; None when none applies."""
    out = []
    drift = training.get("simulated_drift")
    if drift:
        e = drift["pose_error"]
        out.append(
            f"simulated drift: the mapping poses are off by {100 * e['median_translation_m']:.1f} cm, "
            f"{e['median_rotation_deg']:.2f} deg (median; max {100 * e['max_translation_m']:.1f} cm, "
            f"{e['max_rotation_deg']:.2f} deg)"
        )
    graph = training.get("pose_graph")
    if graph:
        out.append(
            f"pose graph: {graph['edges_kept']} of {graph['pairs']} frame pairs measured and kept "
            f"({graph['loop_closures']} loop closures, {graph['edges_rejected']} rejected) "
            f"in {graph['seconds']:.0f} s, "
            f"moved the mapping poses by {100 * graph['median_correction_m']:.1f} cm "
            f"(median; max {100 * graph['max_correction_m']:.1f} cm)"
        )
    refined = training.get("pose_refinement")
    if refined:
        focal = f", focal length x {refined['focal_scale']:.4f}" if refined.get("focal") else ""
        out.append(
            f"pose refinement ({refined['mode']}): moved the mapping poses by "
            f"{100 * refined['median_correction_m']:.1f} cm "
            f"(median; max {100 * refined['max_correction_m']:.1f} cm){focal}"
        )
    return "; ".join(out) or None


def growth_line(growth: dict) -> str:
    """What growing the map did (``training["growth"]``, :mod:`scr_ros.growth`): frames
    registered per round and how, the time, and the registered poses' errors when scored."""
    rounds = "; ".join(
        f"round {r['round']}: +{r['registered_new']}"
        + (f" ({r['odometry']} by odometry)" if r.get("odometry") else "")
        + (f", {r['refused']} refused" if r.get("refused") else "")
        + f" in {r['seconds']:.0f} s"
        for r in growth["rounds"][1:]
    )
    line = (
        f"map growth: {growth['registered']} of {growth['added_frames']} added frames registered beside "
        f"{growth['posed_frames']} posed ones ({rounds}); {growth['seconds']:.0f} s in all"
    )
    errors = growth.get("registered_pose_errors")
    if errors:
        line += (
            f"; registered poses off by {errors['median_cm']:.1f} cm, {errors['median_deg']:.2f} deg (median; max "
            f"{errors['max_cm']:.1f} cm, {errors['max_deg']:.2f} deg) from the added datasets' own poses"
        )
    return line

#!/usr/bin/env python3
"""Mapping from poses that drift, with and without pose refinement (issue 27).

    python benchmarks/drift.py [--scenes demo,robot,sun3d] [--drifts none,vio,wheel]
                               [--refine none,free,mlp,graph,mlp-prior] [--preset cpu] [--out docs/methods.md]
                               [--json benchmarks/results/drift.json] [--resume]

For each scene, drift level and refinement mode: map the mapping frames from their poses as the
drift model (scr_ros.evaluation.drift, seed 0) replays them, relocalize the query frames, and score
(scr localize's report): the queries against the truth raw and after the one rigid alignment
fitted on the mapping frames' poses (as mapped) against their truth, and the mapping poses'
error before and after refinement. ``--refine`` takes the modes of ``--refine-poses`` and the
recipes in ``RECIPES`` (the pose-refinement part's settings). The mapping poses' ATE is computed by evo (APE, SE(3)
alignment) as well as by scr_ros, as a check. Rows are appended to the JSON as they finish
(--resume skips those already there) and the table is written into the page named by --out
between its markers. Scenes: demo = synthetic:default (hand-held), robot = synthetic:robot (a
wheeled base), sun3d = the real SUN3D sample frames (../shared/data/sun3d).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ablation import git_commit  # benchmarks/ is the script's folder, first on the path
from pages import measure_missing, write_table

from scr_ros.device import hardware_description
from scr_ros.pipeline import build_map, localize, method_overrides

HERE = Path(__file__).resolve().parent.parent
SCENES = {
    "demo": "synthetic:default",
    "robot": "synthetic:robot",
    "sun3d": str(HERE.parent / "shared" / "data" / "sun3d"),
}
# --refine names: a refine_poses mode, or a recipe (the pose-refinement part's settings).
RECIPES = {
    # ACE0's MLP with the odometry prior (docs/methods.md, "The odometry prior").
    "mlp-prior": {"mode": "mlp", "lr": 1e-4, "start": 0.1, "odometry_weight": 0.1},
}
BEGIN = "<!-- drift benchmark: written by benchmarks/drift.py -->"
END = "<!-- end drift benchmark -->"


def evo_ate(estimated: np.ndarray, truth: np.ndarray) -> float:
    """ATE RMSE (m) of the positions after evo's SE(3) alignment."""
    from evo.core import metrics
    from evo.core.trajectory import PoseTrajectory3D

    stamps = np.arange(len(truth), dtype=float)
    ref = PoseTrajectory3D(poses_se3=list(truth), timestamps=stamps)
    est = PoseTrajectory3D(poses_se3=list(estimated), timestamps=stamps)
    est.align(ref, correct_scale=False)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    return float(ape.get_statistic(metrics.StatisticsType.rmse))


def run(scene: str, drift: str, refine: str, preset: str, tmp: Path) -> dict:
    from scr_ros.evaluation.localization import mapping_truth, recorded_poses

    dataset = SCENES[scene]
    out = tmp / f"{scene}-{drift}-{refine}.safetensors"
    t0 = time.perf_counter()
    scene_map = build_map(
        dataset,
        out,
        preset_name=preset,
        drift=None if drift == "none" else drift,
        **(
            method_overrides(parts={"pose-refinement": RECIPES[refine]})
            if refine in RECIPES
            else method_overrides(refine_poses=refine)
        ),
    )
    results, report, ds, scene_map = localize(out, dataset, "test")
    truth = mapping_truth(scene_map, ds)
    recorded = recorded_poses(scene_map)
    recorded = scene_map.mapping_poses if recorded is None else recorded
    mp = report["mapping_poses"]
    return {
        "scene": scene,
        "drift": drift,
        "refine": refine,
        "raw": report["accuracy"],
        "raw_median_cm": report["median_translation_cm"],
        "aligned": report["aligned"]["accuracy"],
        "aligned_median_cm": report["aligned"]["median_translation_cm"],
        "aligned_median_deg": report["aligned"]["median_rotation_deg"],
        "lost": report["lost"],
        "frames": report["frames"],
        "mapping_recorded": mp.get("recorded", mp["as_mapped"]),
        "mapping_as_mapped": mp["as_mapped"],
        "evo_ate_recorded_m": evo_ate(recorded, truth),
        "evo_ate_as_mapped_m": evo_ate(scene_map.mapping_poses, truth),
        "mapping_s": scene_map.training["seconds"],
        **({"pose_graph": scene_map.training["pose_graph"]} if "pose_graph" in scene_map.training else {}),
        "seconds": round(time.perf_counter() - t0, 1),
        "preset": preset,
        "machine": hardware_description(torch.device(scene_map.training.get("device", "cpu"))),
        "commit": git_commit(),
    }


def pct(acc: dict, key: str) -> str:
    return f"{acc[key]:.0f} %"


def table(rows: list[dict]) -> str:
    out = [
        "| scene | drift | refinement | 5cm/5° raw | 5cm/5° aligned | 2cm/2° aligned | 10cm/5° aligned | median "
        "aligned "
        "| mapping poses recorded → as mapped (median, ATE RMSE) | evo ATE | mapping |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rec, fin = r["mapping_recorded"], r["mapping_as_mapped"]
        median = (
            "n/a"
            if r["aligned_median_cm"] is None
            else f"{r['aligned_median_cm']:.1f} cm, {r['aligned_median_deg']:.2f}°"
        )
        poses = (
            f"{100 * rec['median_translation_m']:.1f} cm, {rec['median_rotation_deg']:.2f}°, "
            f"{100 * rec['ate_rmse_m']:.1f} cm"
            f" → {100 * fin['median_translation_m']:.1f} cm, {fin['median_rotation_deg']:.2f}°, "
            f"{100 * fin['ate_rmse_m']:.1f} cm"
        )
        out.append(
            f"| {r['scene']} | {r['drift']} | {r['refine']} | {pct(r['raw'], '5cm_5deg')} | "
            f"{pct(r['aligned'], '5cm_5deg')} "
            f"| {pct(r['aligned'], '2cm_2deg')} | {pct(r['aligned'], '10cm_5deg')} | {median} | {poses} "
            f"| {100 * r['evo_ate_recorded_m']:.1f} → {100 * r['evo_ate_as_mapped_m']:.1f} cm | "
            f"{r['mapping_s']:.0f} s |"
        )
    return "\n".join(out) + "\n"


def write_page(page: Path, rows: list[dict], command: str) -> None:
    machines = sorted({r["machine"] for r in rows})
    commits = sorted({r["commit"] for r in rows})
    body = (
        f"Measured by `{command}` (commit {', '.join(commits)}; {'; '.join(machines)}; nothing else running). "
        f"Preset `{rows[0]['preset']}`, default encoder; drift seed 0.\n\n" + table(rows)
    )
    write_table(page, BEGIN, END, body)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", default="demo,robot,sun3d")
    p.add_argument("--drifts", default="none,vio,wheel")
    p.add_argument("--refine", default="none,mlp")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--out", type=Path, default=HERE / "docs" / "methods.md")
    p.add_argument("--json", type=Path, default=HERE / "benchmarks" / "results" / "drift.json")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --json and measure the missing ones")
    args = p.parse_args()
    rows = json.loads(args.json.read_text()) if args.resume and args.json.is_file() else []
    with tempfile.TemporaryDirectory() as tmp:
        measure_missing(
            args.json,
            rows,
            [
                (scene, drift, refine)
                for scene in args.scenes.split(",")
                for drift in args.drifts.split(",")
                for refine in args.refine.split(",")
            ],
            lambda r: (r["scene"], r["drift"], r["refine"]),
            lambda scene, drift, refine: run(scene, drift, refine, args.preset, Path(tmp)),
            lambda row: (
                f"aligned 5cm/5deg {row['aligned']['5cm_5deg']:.0f} %, 2cm/2deg "
                f"{row['aligned']['2cm_2deg']:.0f} %, mapping {row['mapping_s']:.0f} s"
            ),
        )
    order = {name: k for k, name in enumerate(SCENES)}
    rows.sort(
        key=lambda r: (
            order.get(r["scene"], 99),
            ["none", "vio", "wheel"].index(r["drift"]) if r["drift"] in ("none", "vio", "wheel") else 9,
            r["refine"],
        )
    )
    write_page(args.out, rows, "python benchmarks/drift.py " + " ".join(sys.argv[1:]))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

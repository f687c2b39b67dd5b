#!/usr/bin/env python3
"""How optimistic is the inlier-geometry covariance? Calibrates the relocalizer node's
``covariance_inflation``.

The least-squares covariance s^2 (J^T J)^-1 assumes independent pixel errors; scene coordinates
from one network are correlated, so real pose errors are larger. For every localized query frame
this computes the 6-dof error e (world-frame position and rotation, the covariance's own
parametrization) and its squared Mahalanobis distance d^2 = e^T C^-1 e under the raw covariance C.
For a calibrated covariance d^2 follows chi^2 with 6 degrees of freedom (median 5.35), so the
inflation that calibrates the median is median(d^2) / 5.35. Also reported: the share of frames
inside the 95 % ellipsoid (chi^2_6 = 12.59) with a given inflation and the node's floors.

    python benchmarks/covariance_calibration.py --map MAP --dataset synthetic:default
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from scr_ros.datasets import open_dataset
from scr_ros.mapfile import load_map
from scr_ros.node_logic.covariance import pose_covariance, published_covariance
from scr_ros.node_logic.params import RELOCALIZER_PARAMS, specs_by_name
from scr_ros.relocalize import Relocalizer

CHI2_6_MEDIAN, CHI2_6_95 = 5.348, 12.592


def error_vector(T_est: np.ndarray, T_gt: np.ndarray) -> np.ndarray:
    """World-frame (dp, phi) with R_est = exp([phi]x) R_gt."""
    dR = T_est[:3, :3] @ T_gt[:3, :3].T
    angle = math.acos(max(-1.0, min(1.0, (np.trace(dR) - 1) / 2)))
    axis = np.array([dR[2, 1] - dR[1, 2], dR[0, 2] - dR[2, 0], dR[1, 0] - dR[0, 1]])
    phi = axis / (2 * math.sin(angle)) * angle if angle > 1e-9 else 0.5 * axis
    return np.concatenate([T_est[:3, 3] - T_gt[:3, 3], phi])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--map", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-frames", type=int, default=200)
    args = ap.parse_args()

    spec = specs_by_name(RELOCALIZER_PARAMS)
    inflation = spec["covariance_inflation"].default
    floor_t, floor_r = (
        spec["covariance_min_std_translation"].default,
        math.radians(spec["covariance_min_std_rotation_deg"].default),
    )

    reloc = Relocalizer(load_map(args.map), device=args.device)
    frames = open_dataset(args.dataset).frames(args.split)[: args.max_frames]
    d2_raw, d2_pub, errs, stds = [], [], [], []
    for f in frames:
        loc = reloc.localize(f.load_image(), f.camera)
        if not loc.success:
            continue
        inl = loc.inlier_mask
        C = pose_covariance(loc.T_world_cam, loc.pixels[inl], loc.scene_coords[inl], f.camera)
        e = error_vector(loc.T_world_cam, f.pose)
        d2_raw.append(float(e @ np.linalg.solve(C, e)))
        P = published_covariance(C, inflation, floor_t, floor_r)
        d2_pub.append(float(e @ np.linalg.solve(P, e)))
        errs.append(np.abs(e))
        stds.append(np.sqrt(np.diag(C)))
    if not d2_raw:
        raise SystemExit("no frame localized")
    d2_raw, d2_pub = np.array(d2_raw), np.array(d2_pub)
    errs, stds = np.array(errs), np.array(stds)
    k = float(np.median(d2_raw) / CHI2_6_MEDIAN)
    print(f"{args.dataset} ({args.split}): {len(d2_raw)} of {len(frames)} frames localized")
    print(
        f"median |error|  position {np.median(np.linalg.norm(errs[:, :3], axis=1)) * 100:.2f} cm, rotation "
        f"{np.degrees(np.median(np.linalg.norm(errs[:, 3:], axis=1))):.2f} deg"
    )
    print(
        f"median raw std  position {np.median(np.linalg.norm(stds[:, :3], axis=1)) * 100:.3f} cm, rotation "
        f"{np.degrees(np.median(np.linalg.norm(stds[:, 3:], axis=1))):.3f} deg"
    )
    print(f"median d^2 under the raw covariance: {np.median(d2_raw):.1f} (calibrated: {CHI2_6_MEDIAN})")
    print(f"inflation that calibrates the median: {k:.0f}")
    print(
        f"with the node defaults (inflation {inflation:g}, floors {floor_t * 100:g} cm / {math.degrees(floor_r):g} "
        "deg): "
        f"median d^2 {np.median(d2_pub):.2f}, inside the 95 % ellipsoid {100 * np.mean(d2_pub < CHI2_6_95):.0f} % "
        "of frames"
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Relocalization throughput one frame at a time against pipelined (issue 30).

    python benchmarks/pipelined.py MAP DATASET [--split test]

Localizes the split's frames (images read from disk, as `scr localize` does) sequentially with
torch on every core, then pipelined (`scr_ros.evaluation.localization.localize_frames(pipelined=True)`: each
frame's selector and RANSAC in a second thread beside the next frame's encoder and head, torch
on one core fewer), checks that the poses are identical, and prints frames per second and the
accuracy of each.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from scr_ros.datasets import open_dataset
from scr_ros.device import hardware_description
from scr_ros.evaluation.localization import localize_frames
from scr_ros.mapfile import load_map
from scr_ros.relocalize import Relocalizer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("map")
    p.add_argument("dataset")
    p.add_argument("--split", default="test")
    args = p.parse_args()
    frames = open_dataset(args.dataset).frames(args.split)
    reloc = Relocalizer(load_map(args.map), device="cpu")
    localize_frames(reloc, frames[:3])  # warm-up
    print(f"{hardware_description(torch.device('cpu'))}; {len(frames)} frames of {args.dataset}")
    runs = {}
    for pipelined in (False, True):
        t0 = time.perf_counter()
        results = localize_frames(reloc, frames, pipelined=pipelined)
        seconds = time.perf_counter() - t0
        good = sum(r.translation_error_m < 0.05 and r.rotation_error_deg < 5.0 for r in results)
        runs[pipelined] = results
        print(
            f"{'pipelined' if pipelined else 'sequential':10s} {len(frames) / seconds:5.1f} frames/s, "
            f"5cm/5deg {100 * good / len(results):.0f} %"
        )
    same = all(
        (a.T_est is None and b.T_est is None) or np.array_equal(a.T_est, b.T_est) for a, b in zip(*runs.values())
    )
    print(f"poses identical: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

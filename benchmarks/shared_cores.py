#!/usr/bin/env python3
"""What a busy neighbour costs the relocalizer (issue 30: the node's 75 ms against `scr
localize`'s 51 ms).

    python benchmarks/shared_cores.py MAP DATASET [--loads 0,8,16] [--threads 2,1] [--doc docs/soak.md]

The node never has the machine to itself: the camera driver (in the soak, the feeder process)
and the node's own DDS threads copy and deserialize a 900 KB image 30 times a second. This
script stands in for them with a helper process that, every 1/30 s, spends LOAD milliseconds
copying an image-sized buffer and then sleeps, and localizes the same frames (decoded once, held
in memory, one at a time) beside it with each torch thread count. A parallel torch operation
waits for its slowest thread, so a core taken away now and then slows every operation that
needed both. Run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from pages import HeldFrame, publish  # benchmarks/ is the script's folder, first on the path

from scr_ros.datasets import open_dataset
from scr_ros.device import hardware_description
from scr_ros.mapfile import load_map
from scr_ros.relocalize import Relocalizer

BEGIN = "<!-- shared cores benchmark: written by benchmarks/shared_cores.py -->"
END = "<!-- end of shared cores benchmark -->"
PERIOD_S = 1 / 30
STAGES = ("encoder", "head", "ransac", "total")


def neighbour(busy_ms: float, seconds: float) -> None:
    """The helper process's loop: ``busy_ms`` of copying an image-sized buffer per 1/30 s."""
    image = np.zeros(640 * 480 * 3, np.uint8)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < busy_ms / 1e3:
            copy = image.copy()
            copy[::7] += 1
        time.sleep(max(0.0, PERIOD_S - (time.perf_counter() - t0)))


def stage_medians(reloc: Relocalizer, frames: list[HeldFrame]) -> dict[str, float]:
    for f in frames[:3]:  # warm-up
        reloc.localize(f.image, f.camera)
    times: dict[str, list[float]] = {}
    for f in frames:
        result = reloc.localize(f.image, f.camera)
        for stage in STAGES:
            times.setdefault(stage, []).append(result.timings_ms.get(stage, 0.0))
    return {stage: float(np.median(v)) for stage, v in times.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("map")
    p.add_argument("dataset", help="the dataset whose test split is localized")
    p.add_argument("--loads", default="0,8,16", help="the neighbour's milliseconds of work per 1/30 s")
    p.add_argument("--threads", default="2,1", help="torch thread counts to try")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--doc", type=Path, default=None, help="write the table into this page between its markers")
    p.add_argument("--neighbour", type=float, default=None, help=argparse.SUPPRESS)  # the helper process
    args = p.parse_args()
    if args.neighbour is not None:
        neighbour(args.neighbour, 3600)
        return 0
    loads = [float(x) for x in args.loads.split(",")]
    threads = [int(x) for x in args.threads.split(",")]
    frames = [HeldFrame(f) for f in open_dataset(args.dataset).frames("test")][: args.frames]
    reloc = Relocalizer(load_map(args.map), device="cpu")
    machine = hardware_description(torch.device("cpu"))  # before the loop changes the thread count
    rows = []
    for load in loads:
        helper = None
        if load > 0:
            helper = subprocess.Popen(
                [sys.executable, __file__, args.map, args.dataset, "--neighbour", str(load)],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        try:
            for n in threads:
                torch.set_num_threads(n)
                medians = stage_medians(reloc, frames)
                rows.append((load, n, medians))
                print(f"neighbour {load:g} ms / 33 ms, {n} torch threads: {medians}", file=sys.stderr, flush=True)
        finally:
            if helper is not None:
                helper.kill()
                helper.wait()
    lines = [
        f"Measured by `python benchmarks/shared_cores.py {' '.join(sys.argv[1:])}` on "
        f"{machine}, {time.strftime('%Y-%m-%d')}, nothing else running; "
        f"medians over {len(frames)} frames held in memory, one at a time.",
        "",
        "| neighbour's work per 1/30 s | torch threads | encoder | head | RANSAC | total |",
        "|---|---|---|---|---|---|",
    ]
    for load, n, m in rows:
        stages = " | ".join(f"{m[stage]:.1f} ms" for stage in STAGES)
        lines.append(f"| {load:g} ms | {n} | {stages} |")
    text = "\n".join(lines)
    publish(text, args.doc, BEGIN, END, "shared cores benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())

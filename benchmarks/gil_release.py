#!/usr/bin/env python3
"""Which of the relocalizer's stages release Python's GIL (issue 30: can stages of consecutive
frames overlap in threads?).

    python benchmarks/gil_release.py

A second thread counts in a pure-Python loop while the main thread runs one stage; the count
rate against the rate while the main thread sleeps says how much of the time the stage left
the GIL free (1.0: all of it). Stages: poselib's absolute-pose RANSAC (4,800 correspondences,
80 % outliers, at least 1,000 iterations), OpenCV's PNG decode of a 640x480 image, and a torch
matrix product of the size of the head's layers. Needs two cores to mean anything.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import poselib
import torch


def python_rate_during(work) -> tuple[float, float]:
    """(increments per second of a spinning Python thread while ``work()`` runs, seconds of work)."""
    done, count = threading.Event(), [0]

    def spin() -> None:
        while not done.is_set():
            count[0] += 1

    thread = threading.Thread(target=spin)
    thread.start()
    t0 = time.perf_counter()
    work()
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    return count[0] / seconds, seconds


def main() -> int:
    rng = np.random.default_rng(0)
    n = 4800
    X = rng.uniform(-1.0, 1.0, (n, 3)) + [0.0, 0.0, 4.0]
    x = X[:, :2] / X[:, 2:] * 500.0 + [320.0, 240.0]
    x[: int(0.8 * n)] += rng.uniform(-200.0, 200.0, (int(0.8 * n), 2))
    camera = {"model": "PINHOLE", "width": 640, "height": 480, "params": [500.0, 500.0, 320.0, 240.0]}
    options = {"max_reproj_error": 10.0, "max_iterations": 10_000, "min_iterations": 1000}
    png = cv2.imencode(".png", rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))[1]
    a, b = torch.randn(4800, 256), torch.randn(256, 256)
    torch.set_num_threads(1)  # one core for the stage, one for the counting thread
    stages = {
        "poselib RANSAC": lambda: [poselib.estimate_absolute_pose(x, X, camera, options, {}) for _ in range(10)],
        "cv2.imdecode (PNG 640x480)": lambda: [cv2.imdecode(png, cv2.IMREAD_COLOR) for _ in range(30)],
        "torch matmul (4800x256 @ 256x256)": lambda: [a @ b for _ in range(300)],
    }
    idle, _ = python_rate_during(lambda: time.sleep(1.0))
    print(f"{'stage':36s} {'GIL free':>8s} {'seconds':>8s}")
    for name, work in stages.items():
        rate, seconds = python_rate_during(work)
        print(f"{name:36s} {rate / idle:8.2f} {seconds:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

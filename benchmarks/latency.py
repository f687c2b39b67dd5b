#!/usr/bin/env python3
"""Mapping time and per-frame relocalization latency by stage, at 480p, with peak memory.

    python benchmarks/latency.py [--scene default] [--preset cpu] [--devices cpu,cuda] [--frames 50]
                                 [--json out.json] [--doc docs/development.md]

For each device (CUDA only when present) it maps the synthetic scene's mapping trajectory with
the preset, then relocalizes ``--frames`` query frames and reports the median time of each stage
(preprocess, encoder, head, RANSAC, total), frames per second, RANSAC inlier ratio, mapping time
split into buffer filling and training, and peak memory (process RSS; CUDA: peak allocated).
Every figure is measured in this run; nothing is typed in. ``--doc`` writes the table into that
page between its markers. Frames are localized one at a time (the stage times do not overlap).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import torch

from scr_ros.datasets import open_dataset
from scr_ros.device import autocast_dtype, hardware_description, resolve_device
from scr_ros.encoders import load_encoder
from scr_ros.evaluation.localization import STAGES, localize_frames, summarize
from scr_ros.fileio import replace_between_markers
from scr_ros.mapping import MapBuilder
from scr_ros.mapping_config import preset
from scr_ros.relocalize import Relocalizer

BEGIN = "<!-- latency benchmark: written by benchmarks/latency.py -->"
END = "<!-- end of latency benchmark -->"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def run(device_name: str, args) -> dict:
    device = resolve_device(device_name)
    ds = open_dataset(f"synthetic:{args.scene}")
    train, test = ds.frames("train"), ds.frames("test")[: args.frames]
    encoder = load_encoder(args.encoder)
    cfg = preset(args.preset)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    scene_map = MapBuilder(encoder, cfg, device=device).build(train, preset_name=args.preset)
    mapping_s = time.perf_counter() - t0
    reloc = Relocalizer(scene_map, encoder, device=device)
    reloc.localize(test[0].load_image(), test[0].camera)  # warm-up (allocations, kernel selection)
    results = localize_frames(reloc, test)
    report = summarize(results)
    timing = report["timing_ms"]
    out = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "precision": str(autocast_dtype(device, cfg.precision)).replace("torch.", ""),
        "scene": args.scene,
        "image_size": f"{test[0].camera.width}x{test[0].camera.height}",
        "preset": args.preset,
        "mapping_frames": len(train),
        "mapping_seconds": round(mapping_s, 1),
        "buffer_seconds": scene_map.training["buffer_seconds"],
        "train_seconds": scene_map.training["train_seconds"],
        "iterations": scene_map.training["iterations"],
        "query_frames": len(test),
        "latency_ms_median": {s: timing.get(s) for s in STAGES},
        "frames_per_second": round(1000.0 / timing["total"], 2),
        "median_inlier_ratio": round(report["median_inlier_ratio"], 3),
        "accuracy_5cm_5deg": report["accuracy"]["5cm_5deg"],
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "hardware": hardware_description(device),
    }
    if device.type == "cuda":
        out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", default="default")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--encoder", default=None)
    p.add_argument("--devices", default="cpu,cuda", help="comma-separated; cuda is skipped when absent")
    p.add_argument("--frames", type=int, default=50, help="query frames to time")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--doc", default=None, help="write the table into this page between its markers")
    args = p.parse_args()
    rows = []
    for name in args.devices.split(","):
        if name == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped", file=sys.stderr)
            continue
        rows.append(run(name, args))
        print(json.dumps(rows[-1], indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    if args.doc:
        replace_between_markers(args.doc, BEGIN, END, table(rows, " ".join(sys.argv[1:])), "latency benchmark")
    return 0


def table(rows: list[dict], argv: str) -> str:
    out = [
        f"Measured by `python benchmarks/latency.py {argv}`, {time.strftime('%Y-%m-%d')}, nothing else running.",
        "",
        "| device | mapping (buffer, training, iterations) | encoder | head | RANSAC | total (frames/s) | 5cm/5° | "
        "peak memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat = r["latency_ms_median"]
        memory = f"{r['peak_rss_mib']:.0f} MiB RSS" + (
            f", {r['peak_cuda_mib']:.0f} MiB CUDA" if "peak_cuda_mib" in r else ""
        )
        out.append(
            f"| {r['hardware']} ({r['precision']}) | {r['mapping_seconds']:.0f} s ({r['buffer_seconds']:.0f} s, "
            f"{r['train_seconds']:.0f} s, {r['iterations']}) | {lat['encoder']:.1f} ms | {lat['head']:.1f} ms | "
            f"{lat['ransac']:.1f} ms | {lat['total']:.1f} ms ({r['frames_per_second']:.1f}) | "
            f"{r['accuracy_5cm_5deg']:.0f} % | {memory} |"
        )
    out.append(
        f"\n{rows[0]['mapping_frames']} mapping frames of `synthetic:{rows[0]['scene']}` with the "
        f"`{rows[0]['preset']}` preset; {rows[0]['query_frames']} query frames at {rows[0]['image_size']}."
    )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())

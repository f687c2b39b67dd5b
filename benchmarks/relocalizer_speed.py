#!/usr/bin/env python3
"""What each frame's relocalization needs to spend (issue 30): RANSAC's budget, the number of
correspondences it sees, the query resolution, and pipelining, against accuracy.

    python benchmarks/relocalizer_speed.py CASE=MAP:DATASET [CASE=MAP:DATASET ...]
        [--settings sequential,subsample-1200,...] [--doc docs/cli.md]

For each case (a map and the dataset whose ``test`` split it is asked about) every setting
localizes the same frames, decoded once and held in memory (so the figure is the relocalizer's,
not the disk's), after a three-frame warm-up, and reports frames per second, the median
milliseconds of RANSAC and in all, and the accuracy at 5 cm / 5° and 2 cm / 2°. ``before`` is
the relocalizer as it was before issue 30 (its RANSAC budget, every correspondence, one frame at
a time), and the speed-up column is against it; ``sequential`` is today's defaults one frame at
a time; the others change one thing or combine them (``SETTINGS`` below). Each setting runs ``--repeat``
times and keeps its fastest run (the poses are the same each time; on two shared cores one run
can be 10 % off another). Run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from pages import HeldFrame, publish, timed_localization  # benchmarks/ is the script's folder, first on the path

from scr_ros import __version__
from scr_ros.datasets import open_dataset
from scr_ros.device import hardware_description
from scr_ros.evaluation.localization import summarize
from scr_ros.mapfile import load_map
from scr_ros.ransac import RansacConfig
from scr_ros.relocalize import Relocalizer, RelocalizerConfig

HERE = Path(__file__).resolve().parent.parent
BEGIN = "<!-- relocalizer speed benchmark: written by benchmarks/relocalizer_speed.py -->"
END = "<!-- end of relocalizer speed benchmark -->"


def _sub(count: int) -> dict:
    return {"selector": "subsample", "selector_settings": {"subsample": {"count": count}}}


# name -> (RelocalizerConfig fields, pipelined)
SETTINGS = {
    "before": ({"ransac": RansacConfig(min_iterations=100, success_prob=0.9999, refine_iterations=100)}, False),
    "sequential": ({}, False),
    "pipelined": ({}, True),
    "subsample-1200": (_sub(1200), False),
    "subsample-600": (_sub(600), False),
    "height-360": ({"query_height": 360}, False),
    "subsample-1200+pipelined": (_sub(1200), True),
    "height-360+subsample-1200+pipelined": ({"query_height": 360, **_sub(1200)}, True),
}


def measure(map_path: str, dataset: str, settings: list[str], repeat: int) -> list[dict]:
    frames = [HeldFrame(f) for f in open_dataset(dataset).frames("test")]
    scene = load_map(map_path)
    rows = []
    for name in settings:
        fields, pipelined = SETTINGS[name]
        reloc = Relocalizer(scene, device="cpu", config=RelocalizerConfig(**fields))
        results, seconds = timed_localization(reloc, frames, pipelined, repeat)
        report = summarize(results)
        rows.append(
            {
                "setting": name,
                "frames": len(results),
                "frames_per_s": len(results) / seconds,
                "ransac_ms": report["timing_ms"].get("ransac"),
                "total_ms": report["timing_ms"].get("total"),
                "5cm_5deg": report["accuracy"]["5cm_5deg"],
                "2cm_2deg": report["accuracy"]["2cm_2deg"],
            }
        )
        r = rows[-1]
        print(
            f"  {name:40s} {r['frames_per_s']:5.1f} frames/s  RANSAC {r['ransac_ms']:5.1f} ms  total "
            f"{r['total_ms']:5.1f} ms  5cm/5deg {r['5cm_5deg']:5.1f} %  2cm/2deg {r['2cm_2deg']:5.1f} %",
            file=sys.stderr,
            flush=True,
        )
    return rows


def table(cases: dict[str, list[dict]]) -> str:
    out = [
        "| case | setting | frames/s (× before) | RANSAC | per frame | 5cm/5° | 2cm/2° |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, rows in cases.items():
        base = next((r for r in rows if r["setting"] == "before"), rows[0])
        for r in rows:
            speedup = r["frames_per_s"] / base["frames_per_s"]
            out.append(
                f"| {case} | {r['setting']} | {r['frames_per_s']:.1f} ({speedup:.2f}×) | "
                f"{r['ransac_ms']:.1f} ms | {r['total_ms']:.1f} ms | {r['5cm_5deg']:.1f} % | {r['2cm_2deg']:.1f} % |"
            )
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cases", nargs="+", metavar="CASE=MAP:DATASET")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--repeat", type=int, default=2, help="runs per setting; the fastest counts")
    p.add_argument("--doc", type=Path, default=None, help="write the table into this page between its markers")
    args = p.parse_args()
    settings = args.settings.split(",")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        p.error(f"unknown settings {unknown}; choose from {', '.join(SETTINGS)}")
    cases = {}
    for spec in args.cases:
        case, _, rest = spec.partition("=")
        map_path, _, dataset = rest.partition(":")
        if not case or not map_path or not dataset:
            p.error(f"{spec}: give CASE=MAP:DATASET")
        print(f"{case}: {map_path} on {dataset}", file=sys.stderr, flush=True)
        cases[case] = measure(map_path, dataset, settings, args.repeat)
    text = (
        f"Measured by `python benchmarks/relocalizer_speed.py {' '.join(sys.argv[1:])}` with scr_ros "
        f"{__version__} on {hardware_description(torch.device('cpu'))}, {time.strftime('%Y-%m-%d')}, nothing "
        "else running; frames held in memory.\n\n" + table(cases)
    )
    publish(text, args.doc, BEGIN, END, "relocalizer speed benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Accuracy on the real SUN3D sample frames (../shared/data/sun3d by default).

    python benchmarks/sun3d.py [--data ../shared/data/sun3d] [--preset cpu] [--encoder NAME|PATH]
                               [--out DIR]

Protocol (the sample's README): in each fragment, frame i maps when (i // 5) is even, else it is
a query. Maps with `scr map`'s code path, relocalizes with `scr localize`'s, and prints the
report (accuracy, median errors, timings) plus the mapping time. Nothing is typed in.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scr_ros.evaluation.reports import format_table, plot_results, write_csv, write_report
from scr_ros.pipeline import build_map, localize


def main() -> int:
    here = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(here.parent / "shared" / "data" / "sun3d"))
    p.add_argument("--preset", default="cpu")
    p.add_argument("--encoder", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="sun3d_out")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scene_map = build_map(
        args.data, out / "map.safetensors", preset_name=args.preset, device=args.device, encoder_spec=args.encoder
    )
    results, report, _, _ = localize(out / "map.safetensors", args.data, "test", args.device, args.encoder)
    report["mapping_seconds"] = scene_map.training["seconds"]
    report["preset"] = args.preset
    write_report(report, out / "report.json")
    write_csv(results, out / "frames.csv")
    plot_results(results, out / "plot.png", title=f"SUN3D sample, preset {args.preset}, encoder {report['encoder']}")
    print(format_table(report))
    print(
        json.dumps(
            {k: report[k] for k in ("accuracy", "median_translation_cm", "median_rotation_deg", "mapping_seconds")},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Encoder x loss on a synthetic scene with one preset: what the demo's choices buy.

    python benchmarks/demo_variants.py [--scene default] [--preset cpu]
        [--variants dsift:ace-depth,dsift:ace,random:ace-depth] [--json out.json]

Each variant maps the scene's mapping trajectory and relocalizes its query trajectory with the
same code as `scr map` / `scr localize`, then one markdown row is printed: accuracy, median
errors, median inlier ratio, mapping time. Takes about six minutes per variant on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from scr_ros.pipeline import build_map, localize


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", default="default")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--variants", default="dsift:ace-depth,dsift:ace,random:ace-depth")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = []
    print(f"scene synthetic:{args.scene}, preset {args.preset}\n")
    print("| encoder | loss | 5cm/5deg | 10cm/5deg | 2cm/2deg | median | inlier ratio | mapping |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            encoder, loss = variant.split(":")
            map_path = Path(tmp) / f"{encoder}-{loss}.safetensors"
            scene_map = build_map(
                f"synthetic:{args.scene}",
                map_path,
                preset_name=args.preset,
                device="cpu",
                encoder_spec=encoder,
                loss=loss,
            )
            _, report, _, _ = localize(map_path, f"synthetic:{args.scene}", "test", "cpu", encoder)
            acc = report["accuracy"]
            t, r = report["median_translation_cm"], report["median_rotation_deg"]
            median = f"{t:.1f} cm, {r:.2f} deg" if t is not None else "n/a (most lost)"
            print(
                f"| {encoder} | {loss} | {acc['5cm_5deg']:.0f} % | {acc['10cm_5deg']:.0f} % | {acc['2cm_2deg']:.0f} "
                f"% | {median} | "
                f"{100 * report['median_inlier_ratio']:.0f} % | {scene_map.training['seconds']:.0f} s |",
                flush=True,
            )
            rows.append({"encoder": encoder, "loss": loss, "mapping_seconds": scene_map.training["seconds"], **report})
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

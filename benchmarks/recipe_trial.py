#!/usr/bin/env python3
"""One mapping-recipe trial: map a dataset with a preset plus overrides, relocalize, print a row.

    python benchmarks/recipe_trial.py LABEL DATASET [--preset cpu] [--encoder NAME] [--loss NAME]
        [--set JSON] [--jsonl trials.jsonl]

DATASET is a dataset folder, `synthetic:NAME`, or `sun3d` for ../shared/data/sun3d. `--set`
takes MappingConfig overrides as JSON, e.g. '{"batch_size": 2560, "head_config": {"width": 192}}'.
Prints (and appends to --jsonl) one JSON row: accuracy (5cm/5deg, 2cm/2deg), median error,
lost frames, mapping time by stage, iterations, buffer rows, median latency by stage, and the
query frames outside 5 cm / 5 deg with their errors. docs/cpu_recipe.md lists the
trials behind the `cpu` preset with the command of each; run them one at a time on an idle
machine, since their timings are part of the result.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from scr_ros.pipeline import build_map, localize

SUN3D = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sun3d"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("label")
    p.add_argument("dataset")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--encoder", default=None)
    p.add_argument("--loss", default=None)
    p.add_argument("--set", default="{}", metavar="JSON", help="MappingConfig overrides")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jsonl", type=Path, default=None)
    args = p.parse_args()
    dataset = str(SUN3D) if args.dataset == "sun3d" else args.dataset
    overrides = json.loads(args.set)
    with tempfile.TemporaryDirectory() as tmp:
        map_path = Path(tmp) / "map.safetensors"
        scene_map = build_map(
            dataset,
            map_path,
            preset_name=args.preset,
            device=args.device,
            encoder_spec=args.encoder,
            loss=args.loss,
            **overrides,
        )
        results, report, _, _ = localize(map_path, dataset, "test", args.device, args.encoder)
    tr = scene_map.training
    row = {
        "label": args.label,
        "dataset": args.dataset,
        "encoder": scene_map.encoder["name"],
        "loss": tr["config"]["loss"],
        "preset": args.preset,
        "overrides": overrides,
        "5cm_5deg": report["accuracy"]["5cm_5deg"],
        "2cm_2deg": report["accuracy"]["2cm_2deg"],
        "median_cm": report["median_translation_cm"],
        "lost": report["lost"],
        "mapping_s": tr["seconds"],
        "buffer_s": tr["buffer_seconds"],
        "train_s": tr["train_seconds"],
        "iterations": tr["iterations"],
        "buffer_rows": tr["buffer_size"],
        "latency_ms": report["timing_ms"],
        "outside_5cm_5deg": [
            (r.name, round(r.translation_error_m * 100, 1), round(r.rotation_error_deg, 1))
            for r in results
            if not (r.translation_error_m < 0.05 and r.rotation_error_deg < 5.0)
        ],
    }
    line = json.dumps(row)
    print(line)
    if args.jsonl:
        with open(args.jsonl, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Mapping speed, side by side: the CPU recipe before issue 14 against today's `cpu` preset.

    python benchmarks/mapping_speed.py [--datasets synthetic:default,SUN3D] [--loss LOSS]
        [--out docs/mapping_speed.md] [--json results.json]

Both recipes map and relocalize each dataset in this one process, one after the other, on the
same machine (run it with nothing else busy: the two figures are only comparable that way):

- **before**: the `dsift` encoder with the `cpu` preset as it was up to commit ed68fb7
  (`BEFORE` below: 1.5M-row buffer, 36 epochs of batch 5120, 256-channel head with one residual
  block);
- **now**: the default encoder with today's `cpu` preset.

For each it reports training iterations per second, wall time per mapping stage (buffer,
training, the map's point cloud), the relocalization accuracy and latency, and the ratio of the
mapping times. The default datasets are the demo scene (`synthetic:default`, with its depth
under the preset's `ace-depth` loss, as `scr demo` maps it) and the real SUN3D sample frames
with the RGB-only `ace` loss (robots usually map without depth).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from scr_ros import __version__
from scr_ros.device import hardware_description
from scr_ros.encoders import DEFAULT_ENCODER
from scr_ros.fileio import atomic_write_text
from scr_ros.mapping_config import PRESETS
from scr_ros.pipeline import build_map, localize

HERE = Path(__file__).resolve().parent.parent
SUN3D = HERE.parent / "shared" / "data" / "sun3d"

# The `cpu` preset before issue 14, as overrides of today's (mapping.PRESETS["cpu"] then).
BEFORE = {
    "encoder": "dsift",
    "overrides": {
        "augmentation": {"scale_min": 0.8, "scale_max": 1.25, "rotation_deg": 5.0},
        "head_config": {"width": 256},
        "loss_config": {"depth_weight": 10.0},
        "buffer_size": 1_500_000,
        "samples_per_image": 1024,
        "max_buffer_passes": 6,
        "epochs": 36.0,
        "batch_size": 5120,
        "image_height": 480,
    },
}


def run(recipe: str, dataset: str, loss: str | None, tmp: Path) -> dict:
    # Naming another loss than the preset's drops the preset's loss_config (cli.mapping_config).
    encoder, overrides = (BEFORE["encoder"], BEFORE["overrides"]) if recipe == "before" else (DEFAULT_ENCODER, {})
    map_path = tmp / f"{recipe}.safetensors"
    t0 = time.perf_counter()
    scene_map = build_map(
        dataset, map_path, preset_name="cpu", device="cpu", encoder_spec=encoder, loss=loss, **overrides
    )
    wall = time.perf_counter() - t0
    _, report, _, _ = localize(map_path, dataset, "test", "cpu")
    map_path.unlink()
    tr = scene_map.training
    return {
        "recipe": recipe,
        "dataset": dataset,
        "encoder": scene_map.encoder["name"],
        "loss": scene_map.training["config"]["loss"],
        "head": f"{tr['config']['head']} {tr['config']['head_config']}",
        "buffer_rows": tr["buffer_size"],
        "iterations": tr["iterations"],
        "iterations_per_s": tr["iterations"] / tr["train_seconds"],
        "buffer_s": tr["buffer_seconds"],
        "train_s": tr["train_seconds"],
        "cloud_s": tr["seconds"] - tr["buffer_seconds"] - tr["train_seconds"],
        "mapping_s": tr["seconds"],
        "wall_s": wall,
        "precision": tr["precision"],
        "frames": report["frames"],
        "lost": report["lost"],
        "5cm_5deg": report["accuracy"]["5cm_5deg"],
        "2cm_2deg": report["accuracy"]["2cm_2deg"],
        "median_cm": report["median_translation_cm"],
        "median_deg": report["median_rotation_deg"],
        "latency_ms": report["timing_ms"].get("total"),
    }


def table(rows: list[dict]) -> str:
    out = [
        "| dataset | recipe | encoder, loss | iterations (it/s) | buffer | training | cloud | mapping | 5cm/5° | "
        "2cm/2° | median | latency |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        median = "n/a" if r["median_cm"] is None else f"{r['median_cm']:.2f} cm, {r['median_deg']:.2f}°"
        out.append(
            f"| {r['label']} | {r['recipe']} | `{r['encoder']}`, `{r['loss']}` | {r['iterations']} "
            f"({r['iterations_per_s']:.1f}) | "
            f"{r['buffer_s']:.0f} s | {r['train_s']:.0f} s | {r['cloud_s']:.0f} s | **{r['mapping_s']:.0f} s** | "
            f"{r['5cm_5deg']:.0f} % | {r['2cm_2deg']:.0f} % | {median} | {r['latency_ms']:.0f} ms |"
        )
    out.append("")
    for label in dict.fromkeys(r["label"] for r in rows):
        pair = {r["recipe"]: r for r in rows if r["label"] == label}
        if {"before", "now"} <= set(pair):
            ratio = pair["now"]["mapping_s"] / pair["before"]["mapping_s"]
            out.append(f"- {label}: mapping takes {ratio:.2f}× the time of the recipe before.")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--datasets",
        default=f"synthetic:default,{SUN3D}",
        help="comma-separated datasets (a missing SUN3D folder is skipped)",
    )
    p.add_argument(
        "--loss",
        default=None,
        help="mapping loss for every dataset (default: the preset's on synthetic scenes, `ace` on real ones)",
    )
    p.add_argument("--out", type=Path, default=HERE / "docs" / "mapping_speed.md")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    datasets = [d for d in args.datasets.split(",") if d]
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            synthetic = dataset.startswith("synthetic:")
            if not synthetic and not Path(dataset).is_dir():
                print(f"no dataset at {dataset}; skipping it", file=sys.stderr)
                continue
            loss = args.loss or (None if synthetic else "ace")
            label = dataset if synthetic else f"{Path(dataset).name} (real, {'RGB only' if loss == 'ace' else loss})"
            for recipe in ("before", "now"):
                print(f"{label}: {recipe} ...", file=sys.stderr, flush=True)
                row = run(recipe, dataset, loss, Path(tmp))
                row["label"] = label
                rows.append(row)
                print(
                    f"  mapping {row['mapping_s']:.0f} s, {row['iterations_per_s']:.1f} it/s, 5cm/5deg "
                    f"{row['5cm_5deg']:.0f} %",
                    file=sys.stderr,
                    flush=True,
                )
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    now = PRESETS["cpu"]
    doc = (
        "# Mapping speed: the CPU recipe before and now\n\n"
        "Written by `benchmarks/mapping_speed.py`; do not edit by hand. *before*: `dsift` with the `cpu` "
        "preset up to commit ed68fb7 (1.5M-row buffer, 36 epochs, batch 5120, 256-channel head with one "
        f"residual block). *now*: `{DEFAULT_ENCODER}` with today's `cpu` preset "
        f"(`{json.dumps(now, sort_keys=True)}`).\n\n"
        f"Measured by `python benchmarks/mapping_speed.py {' '.join(sys.argv[1:])}` with scr_ros {__version__} "
        f"(commit {commit}) on {hardware_description(torch.device('cpu'))}, both recipes in one run, "
        f"{(time.perf_counter() - t0) / 60:.0f} min in all. Mapping is buffer + training + map point cloud; "
        "latency is the median per-frame relocalization time.\n\n"
        f"{table(rows)}\n"
    )
    atomic_write_text(args.out, doc)
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2))
    print(table(rows))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Accuracy away from the mapped path (issue 29): does a map hold for views it was not trained on?

    python benchmarks/generalization.py [--cases demo,away,robot-away,rooftop,rooftop-away,sun3d,sun3d-halves]
                                        [--recipes cpu] [--preset cpu] [--out docs/methods.md]
                                        [--json benchmarks/results/generalization.json] [--resume]

Each case maps one set of frames and relocalizes another, scored as `scr localize` scores them:
overall, and by the distance from each query's true camera centre to the nearest mapping camera
looking the same way (within 30 deg; `scr localize`'s bands). The 0.4-1 m column is where a map
has to extrapolate. Cases:

- demo: the demo scene (synthetic:default), queries between its mapping loops;
- away: the demo's room and mapping loops, queries 0.2 to 1.8 m off them, 0.85 to 1.95 m high,
  pitched otherwise (synthetic:away);
- robot-away: the wheeled robot's two laps, a query lap weaving 0.6 m outside and inside them
  (synthetic:robot-away);
- rooftop / rooftop-away: an open site, buildings 20 to 40 m away and sky behind a railing; the
  mapping walk and the queries 0.3 m behind it / 0.3 to 1.5 m behind and at other heights. The
  rooftop rows also localize the mapping frames themselves (the issue's target: >= 90 % of the
  mapping frames and >= 70 % of the queries within 25 cm / 2 deg);
- sun3d: the real SUN3D sample, interleaved runs of five frames (the dataset's split);
- sun3d-halves: the same frames, each fragment mapped from its first half, queried on its second.

A recipe is the preset with settings changed (RECIPES); each row is appended to --json when it
is measured (--resume skips rows already there) and the table is written into --out between its
markers.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from ablation import git_commit  # benchmarks/ is the script's folder, first on the path
from pages import measure_missing, write_table

from scr_ros.device import hardware_description
from scr_ros.evaluation.metrics import accuracy, median
from scr_ros.mapping_config import PRESETS
from scr_ros.pipeline import build_map, localize

HERE = Path(__file__).resolve().parent.parent
SUN3D = str(HERE.parent / "shared" / "data" / "sun3d")
# case -> (dataset, mapping split, query split, also localize the mapping frames)
CASES = {
    "demo": ("synthetic:default", "train", "test", False),
    "away": ("synthetic:away", "train", "test", False),
    "robot-away": ("synthetic:robot-away", "train", "test", False),
    "rooftop": ("synthetic:rooftop", "train", "test", True),
    "rooftop-away": ("synthetic:rooftop-away", "train", "test", True),
    "sun3d": (SUN3D, "train", "test", False),
    "sun3d-halves": (SUN3D, "first-half", "second-half", False),
}
BEGIN = "<!-- generalization benchmark: written by benchmarks/generalization.py -->"
END = "<!-- end generalization benchmark -->"
BAND = (0.4, 1.0)  # metres: the extrapolation band the targets name


def augmentation(preset: str, **changes) -> dict:
    """The preset's augmentation with ``changes`` (a MappingConfig override replaces the whole dict)."""
    return {"augmentation": {**copy.deepcopy(PRESETS[preset].get("augmentation", {})), **changes}}


# recipe -> MappingConfig overrides on top of the preset (a function of the preset's name)
RECIPES = {
    "cpu": lambda preset: {},
    # the cpu preset's head up to commit 75b2e22: 256 channels with one residual block (the rows
    # measured then as "cpu" are this recipe)
    "head-256": lambda preset: {"head_config": {"width": 256, "num_blocks": 1}},
    # ACE's own augmentation: scale 2/3-3/2, +-15 deg in-plane rotation
    "wide-augmentation": lambda preset: augmentation(preset, scale_min=2 / 3, scale_max=1.5, rotation_deg=15.0),
    # fewer passes over the same images: less memorising of the mapping views
    "passes-4": lambda preset: {"max_buffer_passes": 4},
    # the head's capacity: ACE's head, 512 channels with one residual block
    "head-512": lambda preset: {"head_config": {"width": 512, "num_blocks": 1}},
    # half the training: a head that memorises its views less
    "epochs-12": lambda preset: {"epochs": PRESETS[preset].get("epochs", 16.0) / 2},
    # half the buffer's images seen from a camera moved by up to 0.6 m (from the frames' depth)
    "novel-views": lambda preset: augmentation(preset, novel_views=0.5, novel_view_shift_m=0.6),
    # head-512's capacity in about the preset's time: 10 epochs instead of 24
    "head-512-epochs-10": lambda preset: {
        "head_config": {"width": 512, "num_blocks": 1},
        "epochs": 10.0,
    },
    # a wider head without the residual block: 4 layers of 384 cost about 7 of 256
    "head-384-no-block": lambda preset: {"head_config": {"width": 384, "num_blocks": 0}},
    "head-448-no-block": lambda preset: {"head_config": {"width": 448, "num_blocks": 0}},
    # every buffer image from its camera turned by up to 10 deg about its x and y axes (a
    # homography): other pitch and perspective distortion, the targets kept exact
    "perspective-10": lambda preset: augmentation(preset, perspective_deg=10.0),
    # the cpu preset's head at the former head's multiply-adds: 24 epochs x 492k / 639k per row
    "epochs-18.5": lambda preset: {"epochs": 18.5},
    # the preset with another seed: how far two maps of one recipe differ by chance
    "seed-1": lambda preset: {"seed": 1},
    # the same compute, a faster fit: twice the peak learning rate
    "lr-max-1e-2": lambda preset: {"lr_max": 1e-2},
}


def band_figures(results, lo: float, hi: float) -> dict:
    chosen = [r for r in results if lo <= r.nearest_view_m < hi]
    t = [r.translation_error_m for r in chosen]
    rot = [r.rotation_error_deg for r in chosen]
    return {
        "queries": len(chosen),
        "accuracy": accuracy(t, rot),
        "median_translation_cm": None if not chosen or not math.isfinite(median(t)) else 100 * median(t),
    }


def run(case: str, recipe: str, preset: str, tmp: Path) -> dict:
    dataset, map_split, query_split, own_views = CASES[case]
    out = tmp / f"{case}-{recipe}.safetensors"
    scene_map = build_map(dataset, out, preset_name=preset, split=map_split, **RECIPES[recipe](preset))
    results, report, _, _ = localize(out, dataset, query_split)
    row = {
        "case": case,
        "recipe": recipe,
        "queries": report["frames"],
        "accuracy": report["accuracy"],
        "median_translation_cm": report["median_translation_cm"],
        "band": band_figures(results, *BAND),
        "beyond": band_figures(results, BAND[1], math.inf),
        "within_0_4": band_figures(results, 0.0, BAND[0]),
        "nearest_view_median_m": float(np.median([r.nearest_view_m for r in results])),
        "mapping_s": scene_map.training["seconds"],
        "localize_ms": report["timing_ms"].get("total"),
        "preset": preset,
        "machine": hardware_description(torch.device(scene_map.training.get("device", "cpu"))),
        "commit": git_commit(),
        "command": "python benchmarks/generalization.py " + " ".join(sys.argv[1:]),
    }
    if own_views:
        _, own, _, _ = localize(out, dataset, map_split)
        row["mapping_frames_accuracy"] = own["accuracy"]
    return row


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} %"


def band_cell(b: dict) -> str:
    return "–" if not b["queries"] else f"{b['accuracy']['5cm_5deg']:.0f} % ({b['queries']})"


def machine_labels(rows: list[dict]) -> dict[str, str]:
    """Each machine the rows were measured on -> a letter, in the order they first appear."""
    machines = list(dict.fromkeys(r["machine"] for r in rows))
    return {m: chr(ord("A") + k) for k, m in enumerate(machines)}


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table; with rows from several machines, a column names each row's
    (mapping and localization times compare only within one machine)."""
    labels = machine_labels(rows)
    several = len(labels) > 1
    out = [
        "| case | recipe | queries | 5cm/5° | 2cm/2° | 25cm/2° | < 0.4 m: 5cm/5° (n) | 0.4–1 m: 5cm/5° (n) "
        "| ≥ 1 m: 5cm/5° (n) | median | mapping frames 25cm/2° | mapping | localize |"
        + (" machine |" if several else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if several else ""),
    ]
    for r in rows:
        acc = r["accuracy"]
        med = "n/a" if r["median_translation_cm"] is None else f"{r['median_translation_cm']:.1f} cm"
        own = r.get("mapping_frames_accuracy")
        out.append(
            f"| {r['case']} | {r['recipe']} | {r['queries']} | {pct(acc['5cm_5deg'])} | {pct(acc['2cm_2deg'])} "
            f"| {pct(acc['25cm_2deg'])} | {band_cell(r['within_0_4'])} | {band_cell(r['band'])} "
            f"| {band_cell(r['beyond'])} | {med} | {pct(own['25cm_2deg']) if own else '–'} | {r['mapping_s']:.0f} s "
            f"| {r['localize_ms']:.0f} ms |" + (f" {labels[r['machine']]} |" if several else "")
        )
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--recipes", default="cpu")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--out", type=Path, default=HERE / "docs" / "methods.md")
    p.add_argument("--json", type=Path, default=HERE / "benchmarks" / "results" / "generalization.json")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --json and measure the missing ones")
    args = p.parse_args()
    cases, recipes = args.cases.split(","), args.recipes.split(",")
    unknown = [c for c in cases if c not in CASES] + [r for r in recipes if r not in RECIPES]
    if unknown:
        p.error(f"unknown: {', '.join(unknown)} (cases: {', '.join(CASES)}; recipes: {', '.join(RECIPES)})")
    rows = json.loads(args.json.read_text()) if args.resume and args.json.is_file() else []
    with tempfile.TemporaryDirectory() as tmp:
        measure_missing(
            args.json,
            rows,
            [(case, recipe) for recipe in recipes for case in cases],
            lambda r: (r["case"], r["recipe"]),
            lambda case, recipe: run(case, recipe, args.preset, Path(tmp)),
            lambda row: (
                f"5cm/5deg {row['accuracy']['5cm_5deg']:.0f} %, 0.4-1 m band {band_cell(row['band'])}, "
                f"mapping {row['mapping_s']:.0f} s"
            ),
        )
    order = {name: k for k, name in enumerate(CASES)}
    recipe_order = {name: k for k, name in enumerate(RECIPES)}
    rows.sort(key=lambda r: (order.get(r["case"], 99), recipe_order.get(r["recipe"], 99)))
    labels = machine_labels(rows)
    machines = (
        "; ".join(f"machine {label}: {m}" for m, label in labels.items()) + " (times compare only within one machine)"
        if len(labels) > 1
        else "; ".join(labels)
    )
    commits = sorted({r["commit"] for r in rows})
    commands = list(dict.fromkeys(r.get("command", "python benchmarks/generalization.py") for r in rows))
    body = (
        f"Measured by {'; '.join(f'`{c}`' for c in commands)} (commit {', '.join(commits)}; "
        f"{machines}; nothing else running). Preset `{rows[0]['preset']}`, default encoder. Bands: the "
        "distance from a query's true camera centre to the nearest mapping camera looking within 30° of its way.\n\n"
        + table(rows)
    )
    write_table(args.out, BEGIN, END, body)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Which fixes does ``max_position_std`` refuse, and are the ones it keeps right?

For each case a map is built with the ``cpu`` preset (or an existing one is given) and every
query frame is localized once with the check off, recording its error, inliers and the position
standard deviation of its published covariance (what the check compares). The table then says,
for the check off and at the default ``max_position_std``, what a robot would see: accepted
fixes, the wrong ones among them (further off than 50 cm or 10 deg), and the lost frames.

Cases (nothing typed in; each is measured here):
- ``rooftop``: ../shared/data/rooftop, mapped on ``train/`` (even 20-frame blocks of a real
  handheld outdoor video, far content), queried on ``test/`` (the odd blocks); COLMAP units.
- ``sun3d``: ../shared/data/sun3d (real indoor RGB-D), the sample's own split (benchmarks/sun3d.py).
- ``demo``: the demo's synthetic scene and preset.

    python benchmarks/fix_trust.py --out /tmp/fix_trust [--cases rooftop,sun3d,demo]
        [--map rooftop=/tmp/rooftop.map ...] [--page docs/results/fix_trust.md]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ablation import git_commit  # benchmarks/ is the script's folder, first on the path
from pages import results_page_head

from scr_ros.datasets import open_dataset
from scr_ros.demo import DEMO
from scr_ros.device import cpu_name
from scr_ros.evaluation.localization import WRONG_FIX
from scr_ros.evaluation.metrics import pose_error
from scr_ros.fileio import atomic_write_text
from scr_ros.mapfile import load_map
from scr_ros.pipeline import build_map
from scr_ros.ransac import MAX_POSITION_STD
from scr_ros.relocalize import Relocalizer

HERE = Path(__file__).resolve().parent.parent
SHARED = HERE.parent / "shared" / "data"
CASES = {
    "rooftop": (str(SHARED / "rooftop"), "cpu"),
    "sun3d": (str(SHARED / "sun3d"), "cpu"),
    "demo": (f"synthetic:{DEMO['scene']}", DEMO["preset"]),
}


def measure(map_path: Path, dataset: str) -> list[dict]:
    reloc = Relocalizer(load_map(map_path), device="cpu")
    reloc.config.max_position_std = 0.0  # record every fix; the thresholds are applied afterwards
    rows = []
    for frame in open_dataset(dataset).frames("test"):
        loc = reloc.localize(frame.load_image(), frame.camera)
        row = {"frame": frame.name, "localized": bool(loc.success), "inliers": int(loc.num_inliers)}
        if loc.success:
            t, r = pose_error(loc.T_world_cam, frame.pose)
            row.update(translation_error=float(t), rotation_error_deg=float(r), position_std=float(loc.position_std))
        rows.append(row)
    return rows


def outcome(rows: list[dict], max_std: float) -> dict:
    accepted = [r for r in rows if r["localized"] and (max_std <= 0 or r["position_std"] <= max_std)]
    wrong = [r for r in accepted if r["translation_error"] > WRONG_FIX[0] or r["rotation_error_deg"] > WRONG_FIX[1]]
    return {
        "frames": len(rows),
        "accepted": len(accepted),
        "accepted_pct": 100.0 * len(accepted) / len(rows),
        "wrong": len(wrong),
        "wrong_pct_of_accepted": 100.0 * len(wrong) / len(accepted) if accepted else 0.0,
        "median_error_accepted": float(np.median([r["translation_error"] for r in accepted])) if accepted else None,
    }


def page(results: dict, command: str) -> str:
    lines = results_page_head(
        "Fixes a robot can trust: `max_position_std` on real and synthetic scenes",
        "fix_trust.py",
        command,
        results,
        "Maps: preset `cpu` (the demo: its own preset), trained here.",
    ) + [
        f"A fix is *wrong* when it is further off than {WRONG_FIX[0] * 100:.0f} cm or {WRONG_FIX[1]:.0f}° "
        "(rooftop: COLMAP units, not metres). *std*: the largest position standard deviation of the fix's "
        "published covariance, which `max_position_std` compares.",
        "",
        "| case | query frames | check | accepted | wrong among accepted | median error of accepted |",
        "|---|---|---|---|---|---|",
    ]
    for name, case in results["cases"].items():
        for label, o in (("off", case["off"]), (f"max_position_std {case['max_std']:g}", case["default"])):
            med = "–" if o["median_error_accepted"] is None else f"{o['median_error_accepted'] * 100:.1f} cm"
            lines.append(
                f"| {name} | {o['frames']} | {label} | {o['accepted']} ({o['accepted_pct']:.1f} %) | "
                f"{o['wrong']} ({o['wrong_pct_of_accepted']:.1f} %) | {med} |"
            )
    missing = [name for name in CASES if name not in results["cases"]]
    if missing:
        lines += ["", f"Not measured in this run: {', '.join(missing)}."]
    lines += ["", "Per case, the localized fixes by their std (right / wrong):", ""]
    for name, case in results["cases"].items():
        stds = sorted(
            (r["position_std"], r["translation_error"] > WRONG_FIX[0] or r["rotation_error_deg"] > WRONG_FIX[1])
            for r in case["rows"]
            if r["localized"]
        )
        bins = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, math.inf]
        cells = []
        for lo, hi in zip(bins[:-1], bins[1:]):
            inside = [w for s, w in stds if lo <= s < hi]
            cells.append(f"{lo:g}–{hi:g}: {len(inside) - sum(inside)} / {sum(inside)}")
        lines.append(f"- {name}: " + "; ".join(cells))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the maps and the per-frame JSON")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--map", action="append", default=[], metavar="CASE=MAP", help="use an existing map")
    ap.add_argument("--page", default=None, help="also write the results page (e.g. docs/results/fix_trust.md)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    given = dict(item.split("=", 1) for item in args.map)
    results = {
        "commit": git_commit(),
        "machine": f"{cpu_name()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "cases": {},
    }
    for name in args.cases.split(","):
        dataset, preset = CASES[name]
        map_path = Path(given.get(name) or out / f"{name}.safetensors")
        if not map_path.exists():
            build_map(dataset, map_path, preset_name=preset, device="cpu")
        rows = measure(map_path, dataset)
        results["cases"][name] = {
            "map": str(map_path),
            "max_std": MAX_POSITION_STD,
            "off": outcome(rows, 0.0),
            "default": outcome(rows, MAX_POSITION_STD),
            "rows": rows,
        }
        print(name, json.dumps({k: results["cases"][name][k] for k in ("off", "default")}), flush=True)
    atomic_write_text(out / "fix_trust.json", json.dumps(results, indent=1))
    if args.page:
        command = "python benchmarks/fix_trust.py " + " ".join(sys.argv[1:])
        atomic_write_text(Path(args.page), page(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())

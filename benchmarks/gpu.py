#!/usr/bin/env python3
"""Everything a GPU can show, measured in one call (issue 30): mapping and relocalization.

    python benchmarks/gpu.py --out-dir DIR [--doc docs/development.md] [--budget-s 480]
    python benchmarks/gpu.py --tiny --out-dir DIR      # the same steps in a minute on a CPU

Steps, most wanted first; each step's rows are written to DIR/gpu.json and DIR/gpu.md as soon
as they are measured, so a run cut short by the device's time limit keeps what it measured, and
a step that would start after ``--budget-s`` seconds is recorded as skipped:

1. ``ace``-preset mapping of the demo scene (``synthetic:default``, 480 frames of 640×480):
   seconds per stage (buffer, training, point cloud), training iterations per second, and
   the relocalization accuracy of the map.
2. Relocalization on that map at 480p, frames held in memory as the node holds them: frames
   per second and the median milliseconds of each stage, one frame at a time and pipelined,
   and with fp32, fp16 and bf16 autocast (accuracy beside each, since a faster cast that
   loses poses is no gain).
3. The ``cpu`` preset on the GPU (the same scene), and ``ace``-preset mapping of the real
   SUN3D sample (``../shared/data/sun3d``, RGB only, as a robot maps).

``--tiny`` runs every step on ``synthetic:tiny`` with the ``test`` preset on any device (the
suite runs it on the CPU: test/test_pipelined.py), so device minutes go to measuring only.
``--doc`` writes the table into that page between its markers (not with ``--tiny``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pages import HeldFrame, timed_localization  # benchmarks/ is the script's folder, first on the path

from scr_ros import __version__
from scr_ros.datasets import open_dataset
from scr_ros.device import hardware_description, resolve_device
from scr_ros.evaluation.localization import summarize
from scr_ros.fileio import atomic_write_json, atomic_write_text, replace_between_markers
from scr_ros.mapfile import load_map
from scr_ros.pipeline import build_map, localize
from scr_ros.relocalize import Relocalizer, RelocalizerConfig

HERE = Path(__file__).resolve().parent.parent
SUN3D = HERE.parent / "shared" / "data" / "sun3d"
BEGIN = "<!-- gpu benchmark: written by benchmarks/gpu.py -->"
END = "<!-- end of gpu benchmark -->"
STAGES = ("preprocess", "encoder", "head", "select", "ransac", "refine", "total")


# --tiny: the test preset, cut further (a check of the script, not a figure).
TINY = {"buffer_size": 30_000, "epochs": 3.0}


def plan(tiny: bool) -> dict:
    """The dataset and preset of each step (``--tiny``: the test preset on the tiny scene, and on
    the SUN3D sample, which the tests may read)."""
    if tiny:
        return {"demo": ("synthetic:tiny", "test"), "cpu": ("synthetic:tiny", "test"), "sun3d": (str(SUN3D), "test")}
    return {"demo": ("synthetic:default", "ace"), "cpu": ("synthetic:default", "cpu"), "sun3d": (str(SUN3D), "ace")}


def mapping_row(name: str, dataset: str, preset: str, device: str, out: Path, overrides: dict) -> dict:
    """Map ``dataset`` with ``preset``; the stage times, it/s and the map's accuracy on its test split."""
    t0 = time.perf_counter()
    scene_map = build_map(dataset, out, preset_name=preset, device=device, **overrides)
    wall = time.perf_counter() - t0
    _, report, _, _ = localize(out, dataset, "test", device)
    tr = scene_map.training
    return {
        "step": "mapping",
        "case": name,
        "dataset": dataset,
        "preset": preset,
        "mapping_frames": tr["frames"],
        "buffer_s": round(tr["buffer_seconds"], 1),
        "train_s": round(tr["train_seconds"], 1),
        "cloud_s": round(tr["seconds"] - tr["buffer_seconds"] - tr["train_seconds"], 1),
        "mapping_s": round(tr["seconds"], 1),
        "wall_s": round(wall, 1),
        "iterations": tr["iterations"],
        "iterations_per_s": round(tr["iterations"] / tr["train_seconds"], 1),
        "precision": tr["precision"],
        "5cm_5deg": report["accuracy"]["5cm_5deg"],
        "2cm_2deg": report["accuracy"]["2cm_2deg"],
        "lost": report["lost"],
        "frames": report["frames"],
    }


def relocalization_rows(map_path: Path, dataset: str, device: str, frames_max: int) -> list[dict]:
    """Frames per second and stage medians on ``map_path``: sequential, pipelined, and each
    autocast precision (sequential)."""
    frames = [HeldFrame(f) for f in open_dataset(dataset).frames("test")[:frames_max]]
    scene = load_map(map_path)
    rows = []
    for label, precision, pipelined in (
        ("sequential", "auto", False),
        ("pipelined", "auto", True),
        ("fp32", "fp32", False),
        ("fp16", "fp16", False),
        ("bf16", "bf16", False),
    ):
        row = {"step": "relocalization", "case": label, "precision": precision, "pipelined": pipelined}
        try:
            reloc = Relocalizer(scene, device=device, config=RelocalizerConfig(precision=precision))
            results, seconds = timed_localization(reloc, frames, pipelined)
        except (RuntimeError, TypeError) as exc:  # e.g. a cast this device's kernels lack
            rows.append({**row, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        report = summarize(results)
        totals = [r.timings_ms["total"] for r in results if "total" in r.timings_ms]
        row.update(
            frames=len(results),
            frames_per_s=round(len(results) / seconds, 1),
            latency_p50_ms=round(float(np.percentile(totals, 50)), 1),
            latency_p99_ms=round(float(np.percentile(totals, 99)), 1),
            stage_ms={s: round(v, 2) for s, v in report["timing_ms"].items() if v is not None},
            **{"5cm_5deg": report["accuracy"]["5cm_5deg"], "2cm_2deg": report["accuracy"]["2cm_2deg"]},
        )
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    m = [r for r in result["rows"] if r["step"] == "mapping"]
    rl = [r for r in result["rows"] if r["step"] == "relocalization"]
    out = [
        f"Measured by `{result['command']}` with scr_ros {result['version']} on {result['hardware']}, "
        f"{result['date']}, {result['seconds']:.0f} s in all.",
        "",
        "| mapping | preset | frames | buffer | training (it/s) | cloud | mapping | 5cm/5° | 2cm/2° |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in m:
        out.append(
            f"| {r['case']} (`{r['dataset'].split('/')[-1]}`) | `{r['preset']}` | {r['mapping_frames']} | "
            f"{r['buffer_s']:.0f} s | {r['train_s']:.0f} s ({r['iterations_per_s']:.0f}) | {r['cloud_s']:.0f} s | "
            f"**{r['mapping_s']:.0f} s** | {r['5cm_5deg']:.1f} % | {r['2cm_2deg']:.1f} % |"
        )
    out += [
        "",
        "| relocalization | frames/s | p50 / p99 | encoder | head | RANSAC | 5cm/5° | 2cm/2° |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rl:
        if "error" in r:
            out.append(f"| {r['case']} | failed: {r['error']} | | | | | | |")
            continue
        s = r["stage_ms"]
        out.append(
            f"| {r['case']} | **{r['frames_per_s']:.1f}** | {r['latency_p50_ms']:.1f} / {r['latency_p99_ms']:.1f} ms | "
            f"{s.get('encoder', 0):.1f} ms | {s.get('head', 0):.1f} ms | {s.get('ransac', 0):.1f} ms | "
            f"{r['5cm_5deg']:.1f} % | {r['2cm_2deg']:.1f} % |"
        )
    out += [""] + [f"- skipped {s['case']}: {s['why']}" for s in result["skipped"]]
    return "\n".join(out).strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, required=True, help="where gpu.json and gpu.md go")
    p.add_argument("--tiny", action="store_true", help="the tiny scene and the test preset: checks the script")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda or cpu")
    p.add_argument("--budget-s", type=float, default=480.0, help="start no step after this many seconds")
    p.add_argument("--frames", type=int, default=100, help="query frames for the relocalization rates")
    p.add_argument("--doc", type=Path, default=None, help="also write the table into this page's markers")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if device.type != "cuda" and not args.tiny:
        p.error("no CUDA device: this benchmark is for a GPU (--tiny checks it on a CPU)")
    if args.doc is not None and args.tiny:
        p.error("--doc with --tiny would put the check's figures in the docs")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python benchmarks/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "version": __version__,
        "hardware": hardware_description(device),
        "date": time.strftime("%Y-%m-%d"),
        "tiny": args.tiny,
        "seconds": 0.0,
        "rows": [],
        "skipped": [],
    }
    t_start = time.perf_counter()

    def save() -> None:
        result["seconds"] = round(time.perf_counter() - t_start, 1)
        atomic_write_json(args.out_dir / "gpu.json", result)
        atomic_write_text(args.out_dir / "gpu.md", markdown(result))

    def due(case: str) -> bool:
        if time.perf_counter() - t_start <= args.budget_s:
            print(f"{case} ...", file=sys.stderr, flush=True)
            return True
        result["skipped"].append({"case": case, "why": f"the {args.budget_s:.0f} s budget was spent"})
        save()
        return False

    cases, overrides = plan(args.tiny), TINY if args.tiny else {}
    with tempfile.TemporaryDirectory() as tmp:
        demo_map = Path(tmp) / "demo.safetensors"
        if due("demo"):
            result["rows"].append(mapping_row("demo", *cases["demo"], str(device), demo_map, overrides))
            save()
            if due("relocalization"):
                result["rows"] += relocalization_rows(demo_map, cases["demo"][0], str(device), args.frames)
                save()
        for case in ("cpu", "sun3d"):
            dataset, preset = cases[case]
            if not dataset.startswith("synthetic:") and not Path(dataset).is_dir():
                result["skipped"].append({"case": case, "why": f"no dataset at {dataset}"})
            elif due(case):
                out = Path(tmp) / f"{case}.safetensors"
                result["rows"].append(mapping_row(case, dataset, preset, str(device), out, overrides))
            save()
    if args.doc is not None:
        replace_between_markers(args.doc, BEGIN, END, markdown(result), "gpu benchmark")
    print(markdown(result))
    print(json.dumps({"written": str(args.out_dir / "gpu.json")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

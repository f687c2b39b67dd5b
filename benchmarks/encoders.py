#!/usr/bin/env python3
"""Encoder comparison: what the pretrained weights buy over a random network and dense SIFT.

    python benchmarks/encoders.py [--encoders random,dsift,dsift-ctx] [--ace-weights PATH]
        [--preset cpu] [--loss ace] [--sun3d ../shared/data/sun3d] [--out docs/encoders.md]
        [--card scr_ros/weights/dsift_ctx.md] [--json results.json] [--skip-synthetic]

For every encoder, maps and relocalizes (the code paths of `scr map` / `scr localize`):

- three synthetic rooms that pretraining never saw (scene seeds 201-203, outside the
  pretraining range): a plain one, one whose query trajectory is lit differently, and one with
  repetitive wall texture; 80 mapping and 40 query views each at 640x480;
- the real SUN3D sample frames (frame i maps when (i // 5) is even, the rest are queries).

It writes a markdown report (tables of % within 5 cm / 5 deg and 10 cm / 5 deg, median errors,
mapping time and median per-frame latency, with the command, machine and commit) to --out, and
puts the same tables into the model card's comparison section when --card is given. ACE-format
weights join the comparison as `ace-file` when --ace-weights names a file. Every number is
measured by this run; about 25 minutes for three encoders on two CPU cores.
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
from scr_ros.cli import build_map, localize
from scr_ros.datasets.synthetic import open_synthetic
from scr_ros.fileio import atomic_write_text
from scr_ros.pretrain import hardware_description, replace_comparison
from scr_ros.synthetic import SceneConfig

HERE = Path(__file__).resolve().parent.parent

# Seeds 201-203: not a named scene (0-4) and far below the pretraining seeds (1,000,000 and up).
UNSEEN_SCENES = {
    "unseen-plain": SceneConfig(seed=201, mapping_frames=80, query_frames=40),
    "unseen-lighting": SceneConfig(seed=202, mapping_frames=80, query_frames=40, lighting_change=True),
    "unseen-repetitive": SceneConfig(seed=203, mapping_frames=80, query_frames=40, repetitive_texture=True),
}


def run_one(encoder: str, dataset: str, label: str, preset: str, device: str, tmp: Path, loss: str | None = None) -> dict:
    map_path = tmp / f"{label}-{Path(encoder).stem}.safetensors"
    scene_map = build_map(dataset, map_path, preset, device, encoder, None, quiet=True, loss=loss)
    _, report, _, _ = localize(map_path, dataset, "test", device, quiet=True)
    map_path.unlink()
    return {
        "encoder": scene_map.encoder["name"],
        "encoder_sha256": scene_map.encoder["sha256"],
        "dataset": label,
        "frames": report["frames"],
        "lost": report["lost"],
        "5cm_5deg": report["accuracy"]["5cm_5deg"],
        "10cm_5deg": report["accuracy"]["10cm_5deg"],
        "median_cm": report["median_translation_cm"],
        "median_deg": report["median_rotation_deg"],
        "mapping_s": scene_map.training["seconds"],
        "latency_ms": report["timing_ms"].get("total"),
        "encoder_ms": report["timing_ms"].get("encoder"),
    }


def _fmt(v, spec: str, none: str = "n/a") -> str:
    return none if v is None else format(v, spec)


def tables(rows: list[dict]) -> str:
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        out.append(f"**{dataset}**\n")
        out.append("| encoder | 5cm/5° | 10cm/5° | median | lost | mapping | latency (encoder) |")
        out.append("|---|---|---|---|---|---|---|")
        for r in rows:
            if r["dataset"] != dataset:
                continue
            median = f"{r['median_cm']:.1f} cm, {r['median_deg']:.2f}°" if r["median_cm"] is not None else "n/a (most lost)"
            out.append(
                f"| `{r['encoder']}` | {r['5cm_5deg']:.0f} % | {r['10cm_5deg']:.0f} % | {median} | {r['lost']}/{r['frames']} | "
                f"{r['mapping_s']:.0f} s | {_fmt(r['latency_ms'], '.0f')} ms ({_fmt(r['encoder_ms'], '.0f')} ms) |"
            )
        out.append("")
    return "\n".join(out)


def provenance(args, seconds: float) -> str:
    try:
        commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    return (
        f"Measured by `python benchmarks/encoders.py {' '.join(sys.argv[1:])}` with scr_ros {__version__} "
        f"(commit {commit}), preset `{args.preset}`"
        + (f", loss `{args.loss}`" if args.loss else "")
        + f", on {hardware_description(device)}; {seconds / 60:.0f} min in all. "
        "Latency is the median per-frame total of the relocalizer (preprocess, encoder, head, RANSAC), "
        "with the encoder's share in brackets; mapping time is buffer filling plus head training."
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoders", default="random,dsift,dsift-ctx", help="comma-separated registered names or weights files")
    p.add_argument("--ace-weights", default=None, metavar="PATH", help="also compare ACE-format encoder weights")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--loss",
        default=None,
        help="mapping loss instead of the preset's; `ace` (RGB only) keeps depth from anchoring every "
        "prediction, which otherwise lets even the random control localize the SUN3D frames",
    )
    p.add_argument("--sun3d", default=str(HERE.parent / "shared" / "data" / "sun3d"))
    p.add_argument("--skip-synthetic", action="store_true", help="only the SUN3D frames")
    p.add_argument("--out", type=Path, default=HERE / "docs" / "encoders.md")
    p.add_argument("--card", type=Path, default=None, help="model card whose comparison section to update")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    encoders = [e for e in args.encoders.split(",") if e]
    if args.ace_weights:
        if not Path(args.ace_weights).is_file():
            p.error(f"--ace-weights {args.ace_weights}: no such file")
        encoders.append(args.ace_weights)
    datasets: list[tuple[str, str]] = []
    if not args.skip_synthetic:
        for label, cfg in UNSEEN_SCENES.items():
            datasets.append((label, str(open_synthetic(cfg).root)))
    if Path(args.sun3d).is_dir():
        datasets.append(("SUN3D sample (real)", args.sun3d))
    else:
        print(f"no SUN3D frames at {args.sun3d}; skipping them", file=sys.stderr)
    rows: list[dict] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for label, dataset in datasets:
            for encoder in encoders:
                print(f"{label}: {encoder} ...", file=sys.stderr, flush=True)
                row = run_one(encoder, dataset, label.split()[0], args.preset, args.device, Path(tmp), args.loss)
                row["dataset"] = label
                rows.append(row)
                print(f"  5cm/5deg {row['5cm_5deg']:.0f} %, median {_fmt(row['median_cm'], '.2f')} cm, mapping {row['mapping_s']:.0f} s", file=sys.stderr, flush=True)
    body = tables(rows)
    note = provenance(args, time.perf_counter() - t0)
    doc = (
        "# Encoder comparison\n\n"
        "Written by `benchmarks/encoders.py`; do not edit by hand. `random` is the ACE architecture with "
        "random weights (a control), `dsift` the weight-free dense SIFT baseline, `dsift-ctx` the "
        "project's pretrained encoder (model card: `scr_ros/weights/dsift_ctx.md`), `ace-file` "
        "ACE-format weights supplied by the user. Synthetic rooms are ones pretraining never saw; "
        "SUN3D frames are real (map on (i // 5) even, query the rest).\n\n"
        f"{note}\n\n{body}"
    )
    atomic_write_text(args.out, doc)
    if args.card:
        replace_comparison(args.card, f"{note}\n\n{body}")
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2))
    print(body)
    print(f"written to {args.out}" + (f" and {args.card}" if args.card else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

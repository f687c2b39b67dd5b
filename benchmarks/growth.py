#!/usr/bin/env python3
"""Does growing a map (``scr map --add``, scr_ros/growth.py) make it hold where it was not built?

    python benchmarks/growth.py --out /tmp/growth [--cases sun3d,away,robot-away,rooftop,demo]
        [--preset cpu] [--page docs/results/growth.md]

For each case three maps are built from the same posed frames P and localize the same queries Q,
which are never added, never mapped and not chosen by how they localize:

- ``base``: P alone (a plain build);
- ``grown``: P, grown into the added frames A given as images only (``--add``);
- ``given``: P and A, A with its true poses (a plain build of the same frames: what growth
  could reach at best, and the cost it is compared with).

Q is scored as ``scr localize`` scores it (accepted fixes, wrong ones among them, within 5 cm /
5 deg) overall and by the distance from each query to the nearest similar view of P (the same
bands for all three maps). The grown map's registered frames are scored against A's true poses.

Cases (P / A / Q):
- ``sun3d``: ../shared/data/sun3d, each fragment's first half / every other frame of its second
  half / the frames between them (the fragments do not overlap);
- ``away``, ``robot-away``: the synthetic scenes' mapping path / every other frame of the query
  path that leaves it / the frames between them;
- ``rooftop``: ../shared/data/rooftop (real, COLMAP units) first half / second half's even frames
  / its odd ones;
- ``demo``: the demo scene's mapping path / every other query frame / the rest;
- ``tiny`` (not run unless named): the test scene, to check the script in minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ablation import git_commit  # benchmarks/ is the script's folder, first on the path
from pages import results_page_head

from scr_ros.datasets import open_dataset
from scr_ros.device import hardware_description
from scr_ros.encoders import load_encoder
from scr_ros.evaluation.localization import nearest_view_distances, summarize, view_distance_report
from scr_ros.evaluation.metrics import pose_error
from scr_ros.fileio import atomic_write_text
from scr_ros.mapping import MapBuilder
from scr_ros.pipeline import build_map, localize, mapping_config

HERE = Path(__file__).resolve().parent.parent
SHARED = HERE.parent / "shared" / "data"
# case -> (dataset, posed split, added split, query split)
CASES = {
    "sun3d": (str(SHARED / "sun3d"), "first-half", "second-half/even", "second-half/odd"),
    "away": ("synthetic:away", "train", "test/even", "test/odd"),
    "robot-away": ("synthetic:robot-away", "train", "test/even", "test/odd"),
    "rooftop": (str(SHARED / "rooftop"), "first-half", "second-half/even", "second-half/odd"),
    "demo": ("synthetic:default", "train", "test/even", "test/odd"),
    # A smoke run of the script (with --preset test, a few minutes), not a measurement.
    "tiny": ("synthetic:tiny", "train", "test/even", "test/odd"),
}
MAPS = ("base", "grown", "given")


def score(map_path: Path, dataset: str, query: str, views: np.ndarray) -> dict:
    results, report, _, _ = localize(map_path, dataset, split=query, device="cpu")
    for r, d in zip(results, nearest_view_distances(np.stack([r.T_gt for r in results]), views)):
        r.nearest_view_m = float(d)
    report = summarize(results)
    return {
        "5cm_5deg": report["accuracy"]["5cm_5deg"],
        "accepted": report["accepted_fixes"],
        "wrong": report["wrong_fixes"],
        "queries": len(results),
        "bands": view_distance_report(results),
    }


# What a kept map's row carries over from the run that built it.
KEPT_FIELDS = {
    "base": ("base_seconds",),
    "grown": ("grown_seconds", "growth", "registered_how", "registered_errors_cm"),
    "given": ("given_seconds",),
}


def run_case(
    name: str, out: Path, preset: str, which: list[str], kept: list[str] = (), earlier: dict | None = None
) -> dict:
    dataset, posed_split, added_split, query_split = CASES[name]
    ds = open_dataset(dataset)
    posed, added = ds.frames(posed_split), ds.frames(added_split)
    views = np.stack([f.pose for f in posed])
    row: dict = {"posed": len(posed), "added": len(added), "queries": len(ds.frames(query_split))}
    maps = {k: out / f"{name}-{k}.safetensors" for k in MAPS if k in which}
    if "base" in maps:
        t0 = time.perf_counter()
        build_map(dataset, maps["base"], preset_name=preset, device="cpu", split=posed_split)
        row["base_seconds"] = time.perf_counter() - t0
    if "grown" in maps:
        row.update(grow_case(dataset, posed_split, added_split, added, maps["grown"], preset))
    if "given" in maps:
        # The same frames with A's true poses: a plain build, the cost growth is compared with.
        t0 = time.perf_counter()
        builder = MapBuilder(load_encoder(None), mapping_config(preset), device="cpu")
        given = builder.build(list(posed) + list(added), preset_name=preset)
        given.training.update(dataset=dataset, split=posed_split)
        given.save(maps["given"])
        row["given_seconds"] = time.perf_counter() - t0
    for k in kept:
        # Built by an earlier run into OUT: scored again, its build figures taken from that run's
        # growth.json (``earlier``: its row for this case) where they are.
        path = out / f"{name}-{k}.safetensors"
        if not path.is_file():
            raise SystemExit(f"--keep {k}: {path} does not exist; build it first (--maps {k})")
        maps[k] = path
        row.update({f: earlier[f] for f in KEPT_FIELDS[k] if earlier and f in earlier})
    if "grown_seconds" in row and "given_seconds" in row:
        row["cost_ratio"] = row["grown_seconds"] / row["given_seconds"]
    for k, path in maps.items():
        row[k] = score(path, dataset, query_split, views)
    return row


def grow_case(dataset: str, posed_split: str, added_split: str, added: list, path: Path, preset: str) -> dict:
    row: dict = {}
    t0 = time.perf_counter()
    grown = build_map(
        dataset,
        path,
        preset_name=preset,
        device="cpu",
        split=posed_split,
        add=[dataset],
        add_split=added_split,
        add_truth=True,
    )
    row["grown_seconds"] = time.perf_counter() - t0
    g = grown.training["growth"]
    row["growth"] = {k: g[k] for k in ("registered", "rounds", "registered_pose_errors") if k in g}
    row["registered_how"] = {how: g["how"].count(how) for how in set(g["how"])}
    # Registered poses against their truth, by frame (for the page's worst case).
    truth = {f.name: f.pose for f in added}
    names = grown.mapping_frames[g["posed_frames"] :]
    errs = [pose_error(T, truth[n]) for n, T in zip(names, grown.mapping_poses[g["posed_frames"] :]) if n in truth]
    row["registered_errors_cm"] = sorted(round(100 * e[0], 2) for e in errs)
    return row


def band_cell(report: dict, lo: float, hi: float) -> str:
    for b in report["bands"]:
        if b["from_m"] == lo and b["to_m"] == hi:
            return f"{b['accuracy']['5cm_5deg']:.0f} % of {b['queries']}"
    return "–"


def page(results: dict, command: str) -> str:
    lines = results_page_head(
        "Growing a map into frames without poses (`scr map --add`)", "growth.py", command, results
    ) + [
        "Queries within 5 cm / 5°, overall and 0.4–1 m from the nearest similar view of the posed frames; "
        "*base*: posed frames only; *grown*: grown into the added frames, images only; *given*: the added "
        "frames with their true poses.",
        "",
        "| case | posed / added / queries | base | grown | given | 0.4–1 m: base / grown / given | registered "
        "| registered pose error (median, max) | build time: grown / given |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["cases"].items():
        g = r.get("growth", {})
        e = g.get("registered_pose_errors") or {}

        def acc(k: str) -> str:
            return f"{r[k]['5cm_5deg']:.1f} %" if k in r else "–"

        bands = " / ".join(
            band_cell(r[k], 0.4, 0.7) + " + " + band_cell(r[k], 0.7, 1.0) if k in r else "–" for k in MAPS
        )
        registered = f"{g['registered']} of {r['added']} {r['registered_how']}" if g else "–"
        times = " / ".join(f"{r[f'{k}_seconds']:.0f} s" if f"{k}_seconds" in r else "–" for k in ("grown", "given"))
        if "cost_ratio" in r:
            times += f" ({r['cost_ratio']:.2f}×)"
        lines.append(
            f"| {name} | {r['posed']} / {r['added']} / {r['queries']} | {acc('base')} | {acc('grown')} "
            f"| {acc('given')} | {bands} | {registered} "
            f"| {e.get('median_cm', float('nan')):.1f} cm, {e.get('max_cm', float('nan')):.1f} cm | {times} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the maps and growth.json")
    ap.add_argument("--cases", default=",".join(c for c in CASES if c != "tiny"))
    ap.add_argument("--preset", default="cpu")
    ap.add_argument(
        "--maps",
        default=",".join(MAPS),
        help="which of the maps to build and score (a build takes 20-30 min with the cpu preset on two cores)",
    )
    ap.add_argument(
        "--keep",
        default="",
        help="maps an earlier run built into OUT to score again without rebuilding (e.g. base)",
    )
    ap.add_argument("--page", default=None, help="also write the results page (docs/results/growth.md)")
    args = ap.parse_args()
    kept = [k for k in args.keep.split(",") if k]
    if not set(args.maps.split(",")) | set(kept) <= set(MAPS) or set(kept) & set(args.maps.split(",")):
        raise SystemExit(f"--maps, --keep: choose from {', '.join(MAPS)}, each in one of them")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    earlier = json.loads((out / "growth.json").read_text()) if kept and (out / "growth.json").is_file() else None
    results = {
        "commit": git_commit(),
        "machine": hardware_description(torch.device("cpu")),
        "date": time.strftime("%Y-%m-%d"),
        "preset": args.preset,
        "cases": {},
    }
    for name in args.cases.split(","):
        if name not in CASES:
            raise SystemExit(f"unknown case {name!r} (known: {', '.join(CASES)})")
        results["cases"][name] = run_case(
            name, out, args.preset, args.maps.split(","), kept, earlier["cases"].get(name) if earlier else None
        )
        print(name, json.dumps({k: v for k, v in results["cases"][name].items() if k != "registered_errors_cm"}))
        atomic_write_text(out / "growth.json", json.dumps(results, indent=1))
    if args.page:
        atomic_write_text(Path(args.page), page(results, "python benchmarks/growth.py " + " ".join(sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

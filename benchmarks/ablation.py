#!/usr/bin/env python3
"""Ablation of the papers' methods: what each switch of `scr map` / `scr localize` does.

    python benchmarks/ablation.py [--preset cpu] [--scenes sun3d,plain,lighting,repetitive]
        [--rows baseline,deep,classifier,score,depth,pca,best] [--out docs/ablation.md]
        [--json docs/ablation.json] [--resume]

    # part 2 (large and ambiguous scenes): GLACE, R-SCoRe, two workers
    python benchmarks/ablation.py --resume --preset test --scenes integrated \
        --rows baseline,glace,global-descriptor,global-covisibility,rscore,best-large,workers-1,workers-2

    # part 3 (classification before regression), with part 2's best measured again for the
    # paired comparison (per-frame errors)
    python benchmarks/ablation.py --resume --preset cpu --scenes integrated,repetitive,lighting,sun3d \
        --rows baseline,best-large,hscnet,ss-dvr --redo best-large
    python benchmarks/ablation.py --resume --preset cpu --scenes sun3d --rows hscnet-txf

Rows: the ACE head baseline (RGB-only `ace` loss, every correspondence to RANSAC), each switch
alone, and the best combination (the switches whose mean 5cm/5deg over the measured scenes is
not below the baseline's; `deep` joins only if it helps). The keypoint classifier's map is
localized twice, with its selector and with all correspondences, so its effect on RANSAC is
measured on the same head.

Part 2's rows (issue 18): `glace` (GLACE's position decoder, `--head glace`), `global-descriptor`
and `global-covisibility` (the two global encodings, `--part ...`, on ACE's head), `rscore`
(R-SCoRe's head: position decoder plus refinement module), `best-large` (the better global
encoding of the two with the better of the two heads), and `workers-1` / `workers-2` (the
preset's map, with its own loss, by one process and by `torchrun --nproc_per_node 2` over gloo).
The `integrated` scene is the synthetic four-room scene (rooms sharing walls and furniture,
320x240, mapped at 240 px); `large` the 10 x 8 m synthetic room.

Scenes: the synthetic room (seed 0, the demo room's generator seed) with its lighting-change
(seed 1) and repetitive-texture (seed 2) variants at 80 mapping / 40 query views, and the real
SUN3D sample frames. Every row is appended to --json as soon as it is measured and the doc is
rewritten, so an interrupted run keeps what it measured and --resume continues it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from scr_ros import __version__
from scr_ros.datasets.synthetic import SCENES as NAMED_SCENES
from scr_ros.datasets.synthetic import open_synthetic
from scr_ros.device import hardware_description
from scr_ros.encoders import load_encoder
from scr_ros.fileio import atomic_write_text
from scr_ros.mapfile import load_map
from scr_ros.mapping_config import preset as mapping_preset
from scr_ros.pipeline import build_map, localize
from scr_ros.relocalize import RelocalizerConfig
from scr_ros.renderer import SceneConfig

HERE = Path(__file__).resolve().parent.parent

SCENES = {
    "plain": SceneConfig(seed=0, mapping_frames=80, query_frames=40),
    "lighting": SceneConfig(seed=1, mapping_frames=80, query_frames=40, lighting_change=True),
    "repetitive": SceneConfig(seed=2, mapping_frames=80, query_frames=40, repetitive_texture=True),
}

# label -> (build_map keywords, selectors to localize with)
ROWS: dict[str, tuple[dict, tuple[str, ...]]] = {
    "baseline": ({"depth": False}, ("all",)),
    "deep": ({"depth": False, "head": "deep"}, ("all",)),
    "classifier": ({"depth": False, "parts": {"classifier": {}}}, ("classifier", "all")),
    "score": ({"depth": False, "score": True}, ("score",)),
    "depth": ({"depth": True}, ("all",)),
    "pca": ({"depth": False, "parts": {"pca": {"dim": 128}}}, ("all",)),
}
SWITCH = {
    "deep": {"head": "deep"},
    "classifier": {"parts": {"classifier": {}}},
    "score": {"score": True},
    "depth": {"depth": True},
    "pca": {"parts": {"pca": {"dim": 128}}},
}

# Part 2: large and ambiguous scenes.
ROWS.update(
    {
        "glace": ({"depth": False, "head": "glace"}, ("all",)),
        "global-descriptor": ({"depth": False, "parts": {"global-descriptor": {}}}, ("all",)),
        "global-covisibility": ({"depth": False, "parts": {"global-covisibility": {}}}, ("all",)),
        "rscore": ({"depth": False, "head": "rscore"}, ("all",)),
        # The preset's own loss (ace-depth for test and cpu), where RGB-only maps of a small scene
        # are too weak to compare.
        "workers-1": ({"workers": 1}, ("all",)),
        "workers-2": ({"workers": 2}, ("all",)),
    }
)
# Part 3: classification before regression. RGB-only like part 2: HSCNet's labels then come
# from its first ACE-style stage (triangulated), SS-DVR's structural ones too; hscnet-depth takes
# HSCNet's labels from depth (the preset's ace-depth loss loads it), the paper's dense setting.
ROWS.update(
    {
        "hscnet": ({"depth": False, "head": "hscnet"}, ("all",)),
        "hscnet-txf": ({"depth": False, "head": "hscnet-txf"}, ("all",)),
        "hscnet-depth": ({"depth": True, "head": "hscnet"}, ("all",)),
        "ss-dvr": ({"depth": False, "score": True, "parts": {"partitions": {}}}, ("score",)),
    }
)
PART3 = ("hscnet", "hscnet-txf", "hscnet-depth", "ss-dvr")
# Scenes of part 2, named synthetic scenes, with their mapping overrides.
NAMED = {"integrated": {"image_height": 240}, "large": {}, "tiny": {}}


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def map_with_workers(dataset: str, map_path: Path, preset: str, workers: int, overrides: dict) -> float:
    """The preset's map built by ``workers`` processes under torchrun (a subprocess, as a user
    runs it); returns its mapping seconds."""
    if overrides:
        raise SystemExit(f"the workers rows take no mapping overrides ({overrides}); run them on a scene without")
    cmd = [sys.executable, str(HERE / "benchmarks" / "map_worker.py"), dataset, str(map_path), preset]
    if workers > 1:
        cmd[1:1] = ["-m", "torch.distributed.run", "--nproc_per_node", str(workers)]
    subprocess.run(
        cmd,
        check=True,
        capture_output=True,
        env=dict(os.environ, OMP_NUM_THREADS=str(max(1, torch.get_num_threads() // workers))),
    )
    return load_map(map_path).training["seconds"]


def run_row(
    label: str,
    kwargs: dict,
    selectors: tuple[str, ...],
    scene: str,
    dataset: str,
    preset: str,
    tmp: Path,
    overrides: dict | None = None,
) -> list[dict]:
    kwargs = dict(kwargs)
    head = kwargs.pop("head", None)
    workers = kwargs.pop("workers", None)
    map_path = tmp / f"{scene}-{label}.map"
    if workers:
        defaults = mapping_preset(preset).to_dict()
        map_with_workers(
            dataset, map_path, preset, workers, {k: v for k, v in (overrides or {}).items() if defaults.get(k) != v}
        )
        scene_map = load_map(map_path)
    else:
        scene_map = build_map(dataset, map_path, preset_name=preset, head=head, **kwargs, **(overrides or {}))
    out = []
    for sel in selectors:
        results, r, _, _ = localize(map_path, dataset, "test", "auto", config=RelocalizerConfig(selector=sel))
        out.append(
            {
                "label": label,
                "row": label if len(selectors) == 1 or sel != "all" else f"{label} (selector all)",
                "scene": scene,
                "switches": {k: v for k, v in kwargs.items()} | ({"head": head} if head else {}),
                "selector": r["selector"],
                "5cm_5deg": r["accuracy"]["5cm_5deg"],
                "2cm_2deg": r["accuracy"]["2cm_2deg"],
                "25cm_2deg": r["accuracy"].get("25cm_2deg"),
                "median_cm": r["median_translation_cm"],
                "median_deg": r["median_rotation_deg"],
                "lost": r["lost"],
                "frames": r["frames"],
                "mapping_s": scene_map.training["seconds"],
                "timing_ms": r["timing_ms"],
                "inlier_ratio": r["median_inlier_ratio"],
                "correspondences": r["median_correspondences"],
                "ransac_iterations": r["median_ransac_iterations"],
                "map_bytes": r["map_bytes"],
                "commit": git_commit(),
                "preset": preset,
                "encoder": r["encoder"],
                "hardware": hardware_description(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
                **({"workers": workers} if workers else {}),
                # Per query frame (in order): translation error in cm, None when lost; for paired comparisons.
                "per_frame_cm": [round(x.translation_error_m * 100, 3) if x.success else None for x in results],
            }
        )
    map_path.unlink()
    return out


def best_switches(rows: list[dict]) -> dict:
    """Switches whose mean 5cm/5deg over ``rows`` is at least the baseline's."""

    def mean(label):
        v = [r["5cm_5deg"] for r in rows if r["row"] == label]
        return sum(v) / len(v) if v else None

    base = mean("baseline")
    chosen: dict = {"depth": False}
    for name, sw in SWITCH.items():
        m = mean(name)
        if base is not None and m is not None and m >= base:
            chosen.update(sw)
    return chosen


def best_large(rows: list[dict]) -> dict:
    """Part 2's best combination on a scene: the better head of glace / rscore with the better
    global encoding, each judged by 5cm/5deg (ties: the cheaper, glace and the descriptor)."""
    score = {r["row"]: r["5cm_5deg"] for r in rows}
    head = "rscore" if score.get("rscore", -1) > score.get("glace", -1) else "glace"
    part = (
        "global-covisibility"
        if score.get("global-covisibility", -1) > score.get("global-descriptor", -1)
        else "global-descriptor"
    )
    return {"depth": False, "head": head, "parts": {part: {}}}


def encoder_of(r: dict) -> str:
    """The encoder a row was measured with. Rows from before rows recorded it: part 1's (no
    preset recorded either) used dsift, the default then; later ones the default, xfeat."""
    return r.get("encoder") or ("xfeat" if "preset" in r else "dsift")


def group(rows: list[dict], scene: str, encoder: str) -> list[dict]:
    return [r for r in rows if r["scene"] == scene and encoder_of(r) == encoder]


def paired(rows: list[dict]) -> str:
    """Part 3's rows against part 2's best combination on the same scene, frame by frame: how
    many query frames each localizes better (a lost frame is worse than any pose), the median
    of the per-frame differences in translation error over frames both localize, and the
    two-sided sign test's p-value."""
    from scipy.stats import binomtest

    lines = []
    for scene, encoder in dict.fromkeys((r["scene"], encoder_of(r)) for r in rows):
        own = group(rows, scene, encoder)
        ref = next((r for r in own if r["label"] == "best-large" and "per_frame_cm" in r), None)
        if ref is None:
            continue
        for r in own:
            if r["label"] not in PART3 or len(r.get("per_frame_cm", ())) != len(ref["per_frame_cm"]):
                continue
            a = [math.inf if v is None else v for v in r["per_frame_cm"]]
            b = [math.inf if v is None else v for v in ref["per_frame_cm"]]
            better = sum(x < y for x, y in zip(a, b))
            worse = sum(x > y for x, y in zip(a, b))
            both = [x - y for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
            p = binomtest(better, better + worse).pvalue if better + worse else 1.0
            median = f"{sorted(both)[len(both) // 2]:+.1f} cm" if both else "n/a"
            lines.append(
                f"| {scene} | {r['row']} | {ref['row']} | {better} | {worse} | {len(a) - better - worse} | {median} "
                f"| {p:.3f} |"
            )
    if not lines:
        return ""
    return "\n".join(
        [
            "**Paired comparison with part 2's best combination** (same query frames; `better` / `worse`: frames "
            "where the row's "
            "translation error is lower / higher, a lost frame counting as worse than any pose; `median "
            "difference`: row minus "
            "reference over frames both localize, negative is better; p: two-sided sign test)\n",
            "| scene | row | against | better | worse | tied | median difference | p |",
            "|---|---|---|---|---|---|---|---|",
            *lines,
            "",
        ]
    )


def _f(v, spec, none="n/a"):
    return none if v is None else format(v, spec)


def tables(rows: list[dict]) -> str:
    out = []
    for scene, encoder in dict.fromkeys((r["scene"], encoder_of(r)) for r in rows):
        own = group(rows, scene, encoder)
        presets = sorted({r.get("preset", "cpu") for r in own})
        machines = sorted({r["hardware"] for r in own if "hardware" in r})
        out.append(
            f"**{scene}**, encoder `{encoder}` (preset "
            f"{', '.join(presets)}{'; measured on ' + ' and '.join(machines) if machines else ''})\n"
        )
        out.append(
            "| row | 5cm/5° | 2cm/2° | 25cm/2° | median | lost | mapping | encoder / head / select / RANSAC / "
            "refine / total (ms) | inlier ratio | RANSAC it. | correspondences | map size |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in own:
            t = r["timing_ms"]
            stages = " / ".join(
                _f(t.get(s), ".1f", "–") for s in ("encoder", "head", "select", "ransac", "refine", "total")
            )
            if r["median_cm"] is None:
                median = "n/a (most frames lost)"
            else:
                median = f"{r['median_cm']:.1f} cm, {r['median_deg']:.2f}°"
            out.append(
                f"| {r['row']} | {r['5cm_5deg']:.0f} % | {r['2cm_2deg']:.0f} % | "
                f"{_f(r.get('25cm_2deg'), '.0f', 'n/m')}{'' if r.get('25cm_2deg') is None else ' %'} | "
                f"{median} "
                f"| {r['lost']}/{r['frames']} | {r['mapping_s']:.0f} s | {stages} | {_f(r['inlier_ratio'], '.2f')} "
                f"| {_f(r['ransac_iterations'], '.0f')} "
                f"| {_f(r['correspondences'], '.0f')} | {r['map_bytes'] / 2**20:.2f} MiB |"
            )
        out.append("")
    return "\n".join(out)


def write_doc(path: Path, rows: list[dict], args, seconds: float) -> None:
    commit = git_commit()
    older = sorted({r["commit"] for r in rows if r.get("commit") not in (None, commit)})
    unrecorded = sum("commit" not in r for r in rows)
    provenance = ""
    if older or unrecorded:
        provenance = (
            "Rows kept from earlier runs (--resume): "
            + "; ".join(
                ([f"measured at {', '.join(older)}"] if older else [])
                + ([f"{unrecorded} from before rows recorded their commit"] if unrecorded else [])
            )
            + ". "
        )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    doc = (
        "# Ablation of the papers' methods\n\n"
        "Written by `benchmarks/ablation.py`; do not edit by hand. Rows: `baseline` is ACE's head with the "
        "RGB-only loss and every correspondence given to RANSAC; `deep` the deeper head (Matching Rates, "
        "`--head deep`); `classifier` a keypoint classifier ranking correspondences (Matching Rates, "
        "`--classifier`), also localized without it (`selector all`) on the same map; `score` the "
        "discriminability score with SS-DVR's 0.51th-percentile filter (`--score`); `depth` the Euclidean "
        "depth loss (SS-DVR, R-SCoRe, `--depth`); `pca` a 128-d PCA of the features stored in the map "
        "(R-SCoRe, `--pca 128`); `best` combines, per scene, the switches that did not lower 5cm/5° there "
        "(named in the row). Part 2 (issue 18, large and ambiguous scenes): `glace` GLACE's position decoder "
        "(`--head glace`), `global-descriptor` / `global-covisibility` the two global encodings on ACE's head "
        "(`--part ...`: GLACE's image descriptor, R-SCoRe's covisibility-graph Node2Vec embeddings with 5 retrieval "
        "hypotheses), `rscore` R-SCoRe's head (position decoder and refinement module), `best-large` the better of "
        "the two heads with the better of the two encodings (chosen on the integrated scene), `workers-1` / "
        "`workers-2` the preset's map (its own loss, ace-depth) by one process and by `torchrun --nproc_per_node 2` "
        "(gloo, one thread each; one process has both threads). The "
        "`integrated` scene is four 3.5 x 3 m rooms in one map (320x240, 100 mapping / 25 query views each; "
        "rooms 0 and 1 share their floor, ceiling and two walls, rooms 0 and 2 their furniture), mapped at 240 px; "
        "`large` the 10 x 8 m synthetic room (600 / 150 views at 640x480). Part 2's rows are RGB-only like the "
        "baseline, except the workers rows. Part 3 (issue 19, classification before regression): `hscnet` "
        "HSCNet's hierarchical head (`--head hscnet`: 25 x 25 labels, the first level times the rooms; RGB-only, "
        "so its labels "
        "come from a first ACE-style stage of the preset's epochs, only its well-reprojecting rows, spread by "
        "label propagation), "
        "`hscnet-txf` the same with HSCNet++'s transformer conditioning, `hscnet-depth` HSCNet with labels from depth "
        "(`--depth`: the paper's dense setting; compare it with `depth`, not the baseline; defined, not yet "
        "measured), `ss-dvr` SS-DVR's semantic-structural "
        "partitions, label classifier and partition-aware fusion (`--part partitions`) with its discriminability score "
        "and filter (`--score`). Latency columns are per-frame medians by stage (with several hypotheses, summed "
        "over them); "
        "inlier ratio, RANSAC iterations and correspondences are per-frame medians of what RANSAC saw.\n\n"
        f"Measured by `python benchmarks/ablation.py {' '.join(sys.argv[1:])}` with scr_ros {__version__} (commit "
        f"{commit}), "
        f"preset `{args.preset}`, on {hardware_description(device)}; {seconds / 60:.0f} min in this run. {provenance}"
        "Part 1's synthetic scenes: 80 mapping / 40 query views at 640x480; SUN3D: the sample frames in "
        "../shared/data/sun3d. "
        f"Each scene's heading names its preset and, for rows that record it, the machine.\n\n"
        + tables(rows)
        + "\n"
        + paired(rows)
    )
    atomic_write_text(path, doc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--scenes", default="sun3d,plain,lighting,repetitive")
    p.add_argument("--rows", default="baseline,deep,classifier,score,depth,pca,best")
    p.add_argument("--sun3d", default=str(HERE.parent / "shared" / "data" / "sun3d"))
    p.add_argument("--out", type=Path, default=HERE / "docs" / "ablation.md")
    p.add_argument("--json", type=Path, default=HERE / "docs" / "ablation.json")
    p.add_argument(
        "--resume", action="store_true", help="keep the rows already in --json and measure only the missing ones"
    )
    p.add_argument(
        "--redo",
        default="",
        help="with --resume: measure these rows again on the chosen scenes (e.g. best-large, for per-frame errors)",
    )
    args = p.parse_args()

    rows: list[dict] = json.loads(args.json.read_text()) if args.resume and args.json.is_file() else []
    encoder = load_encoder(None).name  # rows measured with an earlier default encoder are measured again
    done = {(r["scene"], r["label"]) for r in rows if encoder_of(r) == encoder}
    scenes = []
    for name in args.scenes.split(","):
        if name == "sun3d":
            if not Path(args.sun3d).is_dir():
                print(f"no SUN3D frames at {args.sun3d}; skipping them", file=sys.stderr)
                continue
            scenes.append(("SUN3D (real)", args.sun3d))
        elif name in SCENES:
            scenes.append((f"synthetic {name}", str(open_synthetic(SCENES[name]).root)))
        elif name in NAMED:
            scenes.append((f"synthetic {name} (named)", str(open_synthetic(NAMED_SCENES[name]).root)))
        else:
            p.error(f"unknown scene {name!r}")
    wanted = args.rows.split(",")
    redo = set(filter(None, args.redo.split(",")))
    if redo:
        chosen = {scene for scene, _ in scenes}
        rows = [r for r in rows if not (r["label"] in redo and r["scene"] in chosen and encoder_of(r) == encoder)]
        done = {(r["scene"], r["label"]) for r in rows if encoder_of(r) == encoder}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for scene, dataset in scenes:
            for label in wanted:
                if (scene, label) in done:
                    continue
                if label == "best":
                    kwargs, selectors = best_switches(group(rows, scene, encoder)), ("auto",)
                elif label == "best-large":
                    # Chosen on the scene's own rows, or on the integrated scene's where this
                    # scene did not measure the parts.
                    own = group(rows, scene, encoder)
                    if not {"glace", "rscore", "global-descriptor", "global-covisibility"} <= {r["row"] for r in own}:
                        own = group(rows, "synthetic integrated (named)", encoder)
                    kwargs, selectors = best_large(own), ("auto",)
                else:
                    kwargs, selectors = ROWS[label]
                print(f"{scene}: {label} ...", file=sys.stderr, flush=True)
                overrides = next((NAMED[n] for n in NAMED if scene == f"synthetic {n} (named)"), {})
                new = run_row(label, kwargs, selectors, scene, dataset, args.preset, Path(tmp), overrides)
                if label == "best-large":
                    new[0]["row"] = (
                        f"best-large ({new[0]['switches']['head']}, {next(iter(new[0]['switches']['parts']))})"
                    )
                if label == "best":
                    on = [k if v is True else f"{k}={v}" for k, v in new[0]["switches"].items() if v is not False]
                    new[0]["row"] = f"best ({', '.join(on) or 'baseline'})"
                rows.extend(new)
                for r in new:
                    print(
                        f"  {r['row']}: 5cm/5deg {r['5cm_5deg']:.0f} %, ransac {r['timing_ms'].get('ransac')} ms, "
                        f"mapping {r['mapping_s']:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                atomic_write_text(args.json, json.dumps(rows, indent=1))
                write_doc(args.out, rows, args, time.perf_counter() - t0)
    write_doc(args.out, rows, args, time.perf_counter() - t0)
    print(tables(rows))
    print(paired(rows))
    print(f"written to {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``scr bag convert | info | map | replay``: argument parsing and console output only; the work
is in :mod:`scr_ros.bag`."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..bag.convert import convert, new_bag
from ..bag.layout import BagError, Topics
from ..bag.reader import BagSource, describe
from ..bag.record import record_session
from ..bag.replay import EstimateBag, replay
from ..device import cuda_available
from ..errors import ScrError
from ..evaluation.drift import parse_drift
from ..evaluation.reports import (
    format_table,
    plot_error_cdf,
    plot_results,
    skipped_frames_line,
    write_csv,
    write_poses,
    write_report,
)
from ..evaluation.rerun_log import require_rerun, write_replay_recording
from ..fileio import check_output_file, check_output_folder, remove_stale_staging
from ..mapfile import not_a_map
from ..mapping_config import PRESETS
from ..node_logic.params import load_yaml_parameters
from ..node_logic.relocalizer_core import RelocalizerCore
from ..pipeline import DEPTH_CHOICES, build_map, open_dataset_reporting
from ..progress import Progress, ProgressBar, counter
from .options import DEVICES, PRECISION_CHOICES, PRECISION_HELP, add_method_arguments, overrides_from_options


def _topics(args) -> Topics:
    kw = {}
    image = getattr(args, "image_topic", None)
    if image:
        kw["image"] = image[: -len("/compressed")] if image.endswith("/compressed") else image
    for name in ("camera_info", "depth", "ground_truth"):
        value = getattr(args, f"{name}_topic", None)
        if value:
            kw[name] = value
    return Topics(**kw)


def _default_split(bag: Path, wanted: str | None, fallback: str, topics: Topics) -> str:
    """The split a command reads: the one asked for, else ``fallback`` when the bag records
    splits (a converted dataset), else all of it."""
    if wanted:
        return wanted
    with BagSource(bag, topics) as src:
        return fallback if fallback in src.split_ranges() else "all"


# ------------------------------------------------------------------------------ convert


def cmd_convert(args) -> int:
    check_output_folder(args.out.parent, "folder for the bag")
    drift = parse_drift(args.simulate_drift) if args.simulate_drift else None
    if drift is not None and args.no_odometry:
        raise BagError("--simulate-drift drifts the odometry, which --no-odometry leaves out")
    bar = ProgressBar()
    ds = open_dataset_reporting(args.dataset, bar)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    frames = {s: ds.frames(s) for s in splits}
    if args.split == "all" and ds.splits.get("train") is ds.splits.get("test"):
        frames = {"train": ds.frames("train")}  # a flat folder: one set of frames, not two copies
    n = sum(len(v) for v in frames.values())
    print(
        f"converting {n} frames ({', '.join(f'{k}: {len(v)}' for k, v in frames.items())}) of {ds.layout} dataset "
        f"{ds.root} to {args.out} ({args.storage}{', JPEG' if args.compressed else ''})",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    try:
        summary = convert(
            frames,
            args.out,
            storage=args.storage,
            compressed=args.compressed,
            jpeg_quality=args.jpeg_quality,
            rate_hz=args.rate,
            start_ns=int(round(args.start_time * 1e9)),
            odometry=not args.no_odometry,
            overwrite=args.overwrite,
            description=f"{ds.layout} {args.dataset} ({ds.description})"
            if ds.description
            else f"{ds.layout} {args.dataset}",
            progress=counter(bar, "convert"),
            base_to_camera=ds.base_to_camera,
            drift=drift,
        )
    finally:
        bar.close()
    counts = ", ".join(f"{k} {v}" for k, v in summary.messages.items())
    print(
        f"wrote {summary.path}: {summary.frames} frames over {summary.duration_s:.1f} s (stamps: {summary.stamps}), "
        f"{summary.bytes / 2**20:.1f} MiB in {time.perf_counter() - t0:.1f} s ({counts})"
    )
    return 0


# ------------------------------------------------------------------------------ info


def cmd_info(args) -> int:
    with BagSource(args.bag, _topics(args)) as src:
        print(describe(src))
    return 0


# ------------------------------------------------------------------------------ map


def cmd_map(args) -> int:
    check_output_file(args.out, "map", not_a_map)
    if args.out.parent.is_dir():
        remove_stale_staging(args.out, "", infix=".session-")  # left by a killed run for this map
    topics = _topics(args)
    split = _default_split(args.bag, args.split, "train", topics)
    if args.session is not None and args.session.exists() and any(args.session.iterdir()):
        raise BagError(
            f"session folder {args.session} is not empty; choose a new folder (or leave --session out for a "
            "temporary one)"
        )
    session = args.session or Path(
        tempfile.mkdtemp(prefix=f".{args.out.name}.session-", dir=args.out.parent if args.out.parent.is_dir() else None)
    )
    t0 = time.perf_counter()
    try:
        bar = ProgressBar()
        try:
            summary = record_session(
                args.bag,
                session,
                args.pose_frame,
                split,
                args.depth,
                args.min_translation,
                args.min_rotation,
                args.max_interval,
                topics,
                progress=counter(bar, "record"),
            )
        finally:
            bar.close()
        print(f"{args.bag} ({split}): {summary.describe()}", file=sys.stderr)
        scene_map = build_map(
            str(session),
            args.out,
            preset_name=args.preset,
            device=args.device,
            encoder_spec=args.encoder,
            head=args.head,
            seed=args.seed,
            precision=args.precision,
            loss=args.loss,
            source=f"{args.bag} ({split})",
            depth=DEPTH_CHOICES[args.depth],
            head_config=args.head_config,
            **overrides_from_options(args),
        )
    finally:
        if args.session is None:
            shutil.rmtree(session, ignore_errors=True)
    tr = scene_map.training
    print(
        f"mapping time: {tr['seconds']:.1f} s ({tr['iterations']} iterations, final loss {tr['final_loss']:.3f}); "
        f"total with reading the bag {time.perf_counter() - t0:.1f} s"
    )
    skipped = skipped_frames_line(tr)
    if skipped:
        print(f"scr: warning: {skipped}", file=sys.stderr)
    print(f"map written to {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return 0


# ------------------------------------------------------------------------------ replay


def replay_params(args) -> dict:
    params = {}
    if args.params:
        try:
            params = dict(load_yaml_parameters(args.params, "scr_relocalizer"))
        except OSError as exc:
            raise ScrError(f"cannot read {args.params}: {exc}") from None
    params["map_path"] = str(args.map)
    if args.sequential:
        params["pipelined"] = False
    if args.device != "auto" or "device" not in params:
        params["device"] = args.device
    return params


def cmd_replay(args) -> int:
    topics = _topics(args)
    split = _default_split(args.bag, args.split, "test", topics)
    core = RelocalizerCore(replay_params(args))
    print(core.load_map(str(args.map)), file=sys.stderr)
    stem = args.report.with_suffix("")
    csv_path = args.csv or stem.with_name(stem.name + ".csv")
    traj_path = args.plot or stem.with_name(stem.name + "_trajectory.png")
    cdf_path = args.cdf or stem.with_name(stem.name + "_cdf.png")
    for path, what in (
        (args.report, "report"),
        (csv_path, "CSV file"),
        (traj_path, "plot"),
        (cdf_path, "plot"),
        (args.poses, "poses file"),
        (args.rerun, "rerun recording"),
    ):
        if path is not None:
            check_output_file(path, what)
    if args.rerun is not None:
        require_rerun()
    if args.out_bag:
        check_output_folder(args.out_bag.parent, "folder for the estimate bag")
    bar = ProgressBar()
    t0 = time.perf_counter()
    progress = lambda i, n, r, o: bar(Progress("localize", i, n, time.perf_counter() - t0))  # noqa: E731

    def run(on_outcome=None):
        try:
            return replay(args.bag, core, split, topics, on_frame=progress, on_outcome=on_outcome)
        finally:
            bar.close()

    if args.out_bag:
        with new_bag(args.out_bag, args.storage, args.overwrite) as w:
            result = run(EstimateBag(w, scene_points=not args.no_scene_points))
    else:
        result = run()
    report = result.report
    write_report(report, args.report)
    write_csv(result.results, csv_path)
    plot_results(result.results, traj_path, title=f"{args.bag} ({split})")
    plot_error_cdf(result.results, cdf_path, title=f"{args.bag} ({split})")
    if args.poses:
        write_poses(result.results, args.poses)
    if args.rerun is not None:
        write_replay_recording(core.map, result.results, args.rerun)
    print(format_table(report))
    rp = report["replay"]
    print(
        f"  {'replay'.ljust(16)}  {rp['images']} images, {rp['frames_per_second']} frames/s overall; "
        f"reading + decoding alone {rp['decode_frames_per_second']} frames/s, relocalizer "
        f"{rp['relocalizer_frames_per_second']} frames/s"
    )
    for reason, n in result.skipped.most_common(5):
        print(f"  skipped {n}: {reason}", file=sys.stderr)
    written = (
        [args.report, csv_path, traj_path, cdf_path]
        + ([args.poses] if args.poses else [])
        + ([args.out_bag] if args.out_bag else [])
    )
    print("wrote " + ", ".join(map(str, written)))
    return 0


# ------------------------------------------------------------------------------ parser


def _topic_args(p, images=True, ground_truth=False, depth=False) -> None:
    t = Topics()
    if images:
        p.add_argument(
            "--image-topic", default=None, metavar="TOPIC", help=f"image topic (default {t.image}, or {t.compressed})"
        )
        p.add_argument("--camera-info-topic", default=None, metavar="TOPIC", help=f"default {t.camera_info}")
    if depth:
        p.add_argument("--depth-topic", default=None, metavar="TOPIC", help=f"default {t.depth}")
    if ground_truth:
        p.add_argument(
            "--ground-truth-topic",
            default=None,
            metavar="TOPIC",
            help=f"PoseStamped of the camera (default {t.ground_truth})",
        )


def add_bag_parser(sub) -> None:
    bag = sub.add_parser("bag", help="rosbag2: convert datasets, inspect, map from and replay against bags")
    bsub = bag.add_subparsers(dest="bag_command", required=True, metavar="BAG_COMMAND")

    c = bsub.add_parser("convert", help="write a dataset as a rosbag2 bag (images, camera info, TF, ground truth)")
    c.add_argument("dataset", metavar="DATASET", help="a dataset folder (any layout scr map reads) or synthetic:NAME")
    c.add_argument("--out", type=Path, required=True, metavar="BAG", help="bag folder to create")
    c.add_argument(
        "--split",
        default="all",
        choices=["train", "test", "all"],
        help="which frames (default all: mapping frames, then query frames; the bag records which is which)",
    )
    c.add_argument(
        "--storage",
        default="mcap",
        choices=["mcap", "sqlite3"],
        help="rosbag2 storage plugin (default mcap; sqlite3 is Humble's default and needs no extra plugin)",
    )
    c.add_argument(
        "--compressed",
        action="store_true",
        help="JPEG on <image topic>/compressed instead of raw rgb8 (JPEG files are copied, not re-encoded)",
    )
    c.add_argument("--jpeg-quality", type=int, default=95, metavar="Q", help="JPEG quality when encoding (default 95)")
    c.add_argument(
        "--rate", type=float, default=10.0, metavar="HZ", help="frame rate for datasets without timestamps (default 10)"
    )
    c.add_argument(
        "--start-time",
        type=float,
        default=1_700_000_000.0,
        metavar="SEC",
        help="stamp of the first frame, seconds since the epoch, for datasets without timestamps",
    )
    c.add_argument(
        "--simulate-drift",
        default=None,
        metavar="vio|wheel|SPEC",
        help="the odometry (/odom, odom -> base_link) drifts as a robot's would (see scr map --simulate-drift); "
        "the ground truth stays true",
    )
    c.add_argument(
        "--no-odometry",
        action="store_true",
        help="leave out the odom -> base_link chain (then scr bag map and tf_mode map_to_odom have no poses)",
    )
    c.add_argument(
        "--overwrite", action="store_true", help="replace an existing bag (only a rosbag2 folder is replaced)"
    )
    c.set_defaults(func=cmd_convert)

    i = bsub.add_parser("info", help="topics, counts, duration, and whether map / replay can use the bag")
    i.add_argument("bag", type=Path, metavar="BAG")
    _topic_args(i, ground_truth=True, depth=True)
    i.set_defaults(func=cmd_info)

    m = bsub.add_parser(
        "map",
        help="build a map from a bag's images and TF poses (the mapping node's path)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("bag", type=Path, metavar="BAG")
    m.add_argument("--out", type=Path, required=True, metavar="MAP", help="map file to write (safetensors)")
    m.add_argument(
        "--split",
        default=None,
        choices=["train", "test", "all"],
        help="default: train for a converted dataset bag, else all",
    )
    m.add_argument(
        "--pose-frame",
        default="odom",
        metavar="FRAME",
        help="fixed frame the camera pose is looked up in (default odom: a converted bag's odometry is its ground "
        "truth)",
    )
    m.add_argument(
        "--depth",
        default="auto",
        choices=list(DEPTH_CHOICES),
        help="use the registered depth topic (auto: when the bag has one, with the preset's loss; on: required, "
        "and trained with the ace-depth loss; off: RGB only)",
    )
    m.add_argument(
        "--min-translation",
        type=float,
        default=0.0,
        metavar="M",
        help="keyframe selection as in the mapping node (default 0: every frame)",
    )
    m.add_argument("--min-rotation", type=float, default=0.0, metavar="DEG")
    m.add_argument("--max-interval", type=float, default=0.0, metavar="SEC")
    m.add_argument(
        "--session",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the recorded keyframes in this new folder (default: a temporary one)",
    )
    m.add_argument(
        "--preset",
        default="ace" if cuda_available() else "cpu",
        choices=list(PRESETS),
        help="training settings (default: ace with CUDA, else cpu)",
    )
    m.add_argument("--device", default="auto", choices=DEVICES)
    m.add_argument("--encoder", default=None, metavar="NAME|PATH")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--precision", default="auto", choices=PRECISION_CHOICES, help=PRECISION_HELP)
    _topic_args(m, depth=True)
    add_method_arguments(m, depth=False)
    m.set_defaults(func=cmd_map)

    r = bsub.add_parser("replay", help="relocalize every image of a bag with the relocalizer node's logic and score it")
    r.add_argument("bag", type=Path, metavar="BAG")
    r.add_argument("--map", type=Path, required=True, metavar="MAP")
    r.add_argument("--report", type=Path, required=True, metavar="REPORT.json")
    r.add_argument(
        "--split",
        default=None,
        choices=["train", "test", "all"],
        help="default: test for a converted dataset bag, else all",
    )
    r.add_argument(
        "--params",
        type=Path,
        default=None,
        metavar="YAML",
        help="relocalizer node parameters (e.g. config/relocalizer.yaml)",
    )
    r.add_argument("--csv", type=Path, default=None, help="per-frame CSV (default: REPORT.csv)")
    r.add_argument("--plot", type=Path, default=None, help="trajectory plot (default: REPORT_trajectory.png)")
    r.add_argument("--cdf", type=Path, default=None, help="error CDF plot (default: REPORT_cdf.png)")
    r.add_argument("--poses", type=Path, default=None, metavar="POSES.txt", help="also write estimated poses")
    r.add_argument(
        "--out-bag",
        type=Path,
        default=None,
        metavar="BAG",
        help="also write the estimates (pose, covariance, inliers, scene points, TF map -> camera_estimate) and "
        "ground truth as a bag for rviz",
    )
    r.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"], help="storage of --out-bag")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out-bag")
    r.add_argument("--no-scene-points", action="store_true", help="leave the per-frame scene points out of --out-bag")
    r.add_argument(
        "--rerun",
        type=Path,
        default=None,
        metavar="FILE.rrd",
        help="also write a 3D recording: the map cloud, its mapping trajectory and the replayed frames (rerun-sdk)",
    )
    r.add_argument(
        "--sequential",
        action="store_true",
        help="one frame at a time (default: the node's pipelined parameter, true unless --params says otherwise: "
        "each frame's RANSAC overlaps the next frame's network; the same poses)",
    )
    r.add_argument("--device", default="auto", choices=DEVICES)
    _topic_args(r, ground_truth=True)
    r.set_defaults(func=cmd_replay)

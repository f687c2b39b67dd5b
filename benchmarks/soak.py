#!/usr/bin/env python3
"""Soak: the relocalizer node fed camera frames at a steady rate for many minutes.

    python benchmarks/soak.py [--minutes 10] [--rate 30] [--map MAP] [--dataset synthetic:default]
        [--preset cpu] [--base-to-camera "X Y Z QX QY QZ QW"] [--planar]
        [--out docs/soak.md] [--json soak.json]

Starts ``relocalizer_node`` (the console script, ``tf_mode: none``, CPU; the base pose from
``--base-to-camera``, planar with ``--planar``) in a DDS domain of its own on loopback, and
publishes the dataset's query frames (``sensor_msgs/Image`` rgb8 and ``CameraInfo``), cycling
through them, at ``--rate`` Hz from this process with rclpy. Without ``--map`` it first maps the
dataset with ``--preset`` (``cpu``, the maps users build: 480-pixel queries, about five minutes;
``test``: 240 pixels, about a minute).

Measured: latency from an image's stamp (set when it is published) to the arrival of its pose
here (p50 / p99 / max); frames sent, processed, dropped by the node because a newer frame arrived
(it only ever works on the newest), poses and base poses published (and, with ``--planar``, the
largest roll / pitch of a base pose); the node's resident memory (VmRSS) after a
warm-up minute and at the end, sampled every 30 s; and whether the node stayed up and exited
cleanly on SIGINT. Needs rclpy and the message packages (``pip install -e '.[ros]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent.parent
DDS_ENVIRONMENT = ("RMW_IMPLEMENTATION", "FASTDDS_BUILTIN_TRANSPORTS", "FASTRTPS_DEFAULT_PROFILES_FILE")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=30.0, help="frames per second sent")
    p.add_argument("--map", type=Path, default=None, help="map to load (default: map --dataset with --preset first)")
    p.add_argument("--dataset", default="synthetic:default")
    p.add_argument("--preset", default="cpu")
    p.add_argument(
        "--base-to-camera",
        default="0.1 0 0.5 -0.5 0.5 -0.5 0.5",
        help="the node's base_to_camera (x y z qx qy qz qw; default a forward-looking camera 0.5 m up); '' for none",
    )
    p.add_argument("--planar", action="store_true", help="the node's planar option (x, y, yaw base pose)")
    p.add_argument(
        "--node-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another node parameter (YAML value), e.g. pipelined=false, selector=subsample; autostart=false "
        "leaves the node inactive, so only the transport is measured",
    )
    p.add_argument("--out", type=Path, default=HERE / "docs" / "soak.md")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    extra = {}
    for item in args.node_param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            p.error(f"--node-param {item}: give NAME=VALUE")
        extra[name] = yaml.safe_load(value)

    import rclpy
    import torch
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from scr_ros import __version__
    from scr_ros.datasets import open_dataset
    from scr_ros.device import hardware_description
    from scr_ros.fileio import atomic_write_text
    from scr_ros.messages import encode_camera_info, encode_image, make_time, pose_to_matrix, stamp_to_ns
    from scr_ros.node_logic.frames import yaw_pitch_roll
    from scr_ros.ros.common import rclpy_factory

    work = Path(tempfile.mkdtemp(prefix="scr_soak_"))
    map_path = args.map
    if map_path is None:
        from scr_ros.pipeline import build_map

        map_path = work / "soak.safetensors"
        print(f"mapping {args.dataset} with preset {args.preset} ...", file=sys.stderr)
        build_map(args.dataset, map_path, preset_name=args.preset, device="cpu")
    frames = open_dataset(args.dataset).frames("test")

    env = {
        **os.environ,
        "ROS_DOMAIN_ID": str(190 + os.getpid() % 40),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONUNBUFFERED": "1",
    }
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    params = work / "params.yaml"
    mount = [float(v) for v in args.base_to_camera.split()]
    params.write_text(
        f"scr_relocalizer:\n  ros__parameters:\n    map_path: {json.dumps(str(map_path))}\n    device: cpu\n    "
        f"tf_mode: none\n    base_to_camera: {json.dumps(mount)}\n    planar: {json.dumps(args.planar)}\n"
        + "".join(f"    {name}: {json.dumps(value)}\n" for name, value in extra.items())
    )
    log = open(work / "node.log", "wb")
    node_proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "relocalizer_node"), "--ros-args", "--params-file", str(params)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    rclpy.init()
    node = rclpy.create_node("scr_soak_feeder")
    f = rclpy_factory()
    image_pub = node.create_publisher(Image, "image", 10)
    info_pub = node.create_publisher(CameraInfo, "camera_info", 10)
    latencies: list[float] = []
    diagnostics: list = []

    def on_pose(msg) -> None:
        latencies.append((node.get_clock().now().nanoseconds - stamp_to_ns(msg.header.stamp)) * 1e-6)

    base_poses = [0]
    tilt = [0.0]  # largest |roll| or |pitch| of a base pose, degrees

    def on_base_pose(msg) -> None:
        base_poses[0] += 1
        _, pitch, roll = yaw_pitch_roll(pose_to_matrix(msg.pose.pose)[:3, :3])
        tilt[0] = max(tilt[0], abs(np.degrees(pitch)), abs(np.degrees(roll)))

    streaming = [False]

    def on_diagnostics(msg) -> None:
        for st in msg.status:
            if st.name == "scr_relocalizer: relocalizer":
                diagnostics.append(
                    {kv.key: kv.value for kv in st.values} | {"_message": st.message, "_streaming": streaming[0]}
                )

    node.create_subscription(PoseStamped, "/scr_relocalizer/pose", on_pose, qos_profile_sensor_data)
    node.create_subscription(
        PoseWithCovarianceStamped, "/scr_relocalizer/pose_with_covariance", on_base_pose, qos_profile_sensor_data
    )
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    # Messages encoded once; only their stamps change.
    images = [encode_image(f, fr.load_image(), 0, "camera_optical") for fr in frames]
    infos = [encode_camera_info(f, fr.camera, 0, "camera_optical") for fr in frames]
    deadline = time.monotonic() + 180
    while not (image_pub.get_subscription_count() and diagnostics) and time.monotonic() < deadline:
        if node_proc.poll() is not None:
            raise SystemExit(f"the node exited with {node_proc.returncode}: {(work / 'node.log').read_text()}")
        time.sleep(0.2)

    period = 1.0 / args.rate
    streaming[0] = True
    sent, rss, t_start = 0, [], time.monotonic()
    next_send, next_sample = t_start, t_start + 60.0
    rss_warm = None
    while time.monotonic() - t_start < args.minutes * 60 and node_proc.poll() is None:
        now = time.monotonic()
        if now >= next_sample:
            rss.append((round(now - t_start), rss_mib(node_proc.pid)))
            rss_warm = rss_warm if rss_warm is not None else rss[-1][1]
            next_sample += 30.0
        k = sent % len(images)
        stamp = node.get_clock().now().nanoseconds
        infos[k].header.stamp = images[k].header.stamp = make_time(f, stamp)
        info_pub.publish(infos[k])
        image_pub.publish(images[k])
        sent += 1
        next_send += period
        time.sleep(max(0.0, next_send - time.monotonic()))
    elapsed = time.monotonic() - t_start
    streaming[0] = False
    time.sleep(3.0)  # the last poses and one more diagnostics message
    alive = node_proc.poll() is None
    rss_end = rss_mib(node_proc.pid) if alive else float("nan")
    node_proc.send_signal(signal.SIGINT)
    try:
        code = node_proc.wait(20)
    except subprocess.TimeoutExpired:
        node_proc.kill()
        code = "killed after 20 s"
    executor.shutdown()
    rclpy.shutdown()

    d = diagnostics[-1] if diagnostics else {}
    # The node's rates cover its last 5 s: the summary that counts is the last one sent while the
    # stream ran (after it, the window holds seconds without images and reads low).
    during = [m for m in diagnostics if m["_streaming"]]
    live = during[-1] if during else {}
    lat = np.asarray(latencies)
    row = {
        "minutes": round(elapsed / 60, 2),
        "rate_hz": args.rate,
        "sent": sent,
        "sent_hz": sent / elapsed,
        "node_params": extra,
        # DDS settings both processes ran with (the transport decides how many large images arrive)
        "dds_environment": {k: os.environ[k] for k in DDS_ENVIRONMENT if k in os.environ},
        "received": int(d.get("frames received", 0)),
        "processed": int(d.get("frames processed", 0)),
        "dropped": int(d.get("dropped (newer frame arrived)", 0)),
        "poses": len(latencies),
        "base_poses": base_poses[0],
        "base_to_camera": mount,
        "planar": args.planar,
        "max_base_tilt_deg": tilt[0],
        "processed_hz": int(d.get("frames processed", 0)) / elapsed,
        "latency_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "max": float(lat.max()),
        }
        if len(lat)
        else None,
        "node_latency_ms": float(d.get("latency median (ms)", "nan")),
        "rss_mib": {"after_1_min": rss_warm, "end": rss_end, "samples": rss},
        "alive_at_end": alive,
        "exit_code": code,
        "diagnostics": live.get("_message", ""),
        "diagnostics_published_hz": float(live.get("published rate (Hz)", "nan")),
        "poses_hz": len(latencies) / elapsed,
        "never_reached_node": sent - int(d.get("frames received", 0)),
    }
    print(json.dumps(row, indent=1))
    if args.json:
        args.json.write_text(json.dumps(row, indent=1))
    cmd = "python benchmarks/soak.py " + " ".join(sys.argv[1:])
    L = row["latency_ms"] or {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    samples = ", ".join(f"{t // 60}:{t % 60:02d} {m:.0f}" for t, m in rss)
    if row["processed_hz"] < 0.95 * args.rate:
        keep_up = (
            f"The node processed {row['processed_hz']:.1f} of the {args.rate:g} frames a second; by design it drops "
            "all but the "
            "newest waiting frame, so latency stays bounded instead of growing with a queue."
        )
    else:
        keep_up = f"The node kept up with {args.rate:g} Hz."
    sent_cell = f"{sent} ({row['sent_hz']:.1f} Hz) / {row['received']} ({row['never_reached_node']})"
    given = "".join(f", {k} {v}" for k, v in extra.items())
    dds = ", ".join(f"{k}={v}" for k, v in row["dds_environment"].items()) or "defaults (rmw_fastrtps_cpp)"
    text = f"""# Soak: the relocalizer node at {args.rate:g} Hz

Written by `benchmarks/soak.py`; do not edit by hand. Measured by `{cmd.strip()}` with scr_ros {__version__} on
{hardware_description(torch.device("cpu"))}; nothing else running. The node (`relocalizer_node`, `tf_mode: none`, CPU)
ran in its own process; this process fed it the query frames of `{args.dataset}`
({frames[0].camera.width}x{frames[0].camera.height} rgb8, cycling) over DDS on loopback, and received its poses.

| | |
|---|---|
| duration | {row["minutes"]:.1f} min |
| frames sent (rate reached) / received by the node (never reached it) | {sent_cell} |
| node parameters set | map_path, device cpu, tf_mode none, base_to_camera, planar{given} |
| DDS environment (both processes) | {dds} |
| processed (newest frame only) | {row["processed"]} ({row["processed_hz"]:.1f} Hz) |
| dropped (a newer frame arrived first) | {row["dropped"]} |
| poses received (camera) / base poses received | {row["poses"]} ({row["poses_hz"]:.1f} Hz) / {row["base_poses"]} |
| base_to_camera, planar | {mount or "none"}, {args.planar} |
| largest roll or pitch of a base pose | {tilt[0]:.2g} deg |
| latency, image stamp to pose here: p50 / p99 / max | {L["p50"]:.0f} / {L["p99"]:.0f} / {L["max"]:.0f} ms |
| node's own median processing time | {row["node_latency_ms"]:.0f} ms |
| resident memory after 1 min / at the end | {"n/a" if rss_warm is None else f"{rss_warm:.0f}"} / {rss_end:.0f} MiB |
| memory samples (m:ss MiB) | {samples} |
| node up at the end, exit code on SIGINT | {alive}, {code} |
| diagnostics summary, the last while the stream ran | {row["diagnostics"]} |

{keep_up}
"""
    atomic_write_text(args.out, text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0 if alive and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

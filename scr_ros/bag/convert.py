"""Dataset -> rosbag2 (``scr bag convert``).

Per frame, all at the frame's stamp: ``camera_info``, the image (raw rgb8, or JPEG on the
``/compressed`` topic), depth as 32FC1 metres when the dataset has registered depth, ``/tf``
(``map -> camera_ground_truth`` and, with odometry, ``odom -> base_link``), ``/odom``
(nav_msgs/Odometry, the same base pose) and ``/ground_truth/pose``. ``/tf_static`` (``base_link ->
camera_optical_frame``: the dataset's camera mount, e.g. the robot scene's, else the camera at the
base origin) is written once, transient-local. With ``--simulate-drift`` the odometry drifts as a
robot's would (:mod:`scr_ros.evaluation.drift`) and the ground truth stays true. See :mod:`scr_ros.bag.layout`
for the frame tree.

Stamps: the dataset's own capture times when every frame has one, else a fixed rate. With
``--split all`` the mapping frames come first, then the query frames after a one-second gap;
the metadata's ``custom_data`` records each split's time range so ``scr bag map`` and
``scr bag replay`` pick the right frames.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..datasets.base import Frame
from ..evaluation.drift import DriftModel, drift_poses, up_axis
from ..fileio import atomic_directory
from ..geometry import invert_pose
from ..messages import (
    encode_camera_info,
    encode_compressed_image,
    encode_image,
    make_header,
    make_odometry,
    make_pose_stamped,
    make_transform_stamped,
    rosbags_factory,
)
from . import layout
from .layout import SPLITS_KEY, BagError, Frames, Topics

# 2023-11-14T22:13:20Z: a fixed origin for datasets without timestamps, so conversions are
# reproducible and stamps are plausible wall-clock times for tools that display them.
DEFAULT_START_NS = 1_700_000_000 * 1_000_000_000
SPLIT_GAP_NS = 1_000_000_000


@dataclass
class ConvertSummary:
    path: Path
    frames: int
    messages: dict[str, int]
    splits: dict[str, list[int]]
    duration_s: float
    bytes: int
    stamps: str  # where the stamps came from: "dataset" or the fixed rate


def is_rosbag2(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "metadata.yaml").is_file()


def frame_stamps(frames: Sequence[Frame], start_ns: int, rate_hz: float) -> tuple[list[int], str]:
    """The dataset's stamps when all frames have increasing ones, else ``start + i / rate``."""
    own = [f.stamp_ns for f in frames]
    note = ""
    if frames and all(s is not None for s in own):
        if all(b > a for a, b in zip(own, own[1:])):
            return list(own), "dataset"
        note = " (the dataset's own stamps do not increase)"
    if rate_hz <= 0:
        raise BagError(f"--rate must be positive, got {rate_hz}")
    period = 1e9 / rate_hz
    return [start_ns + int(round(i * period)) for i in range(len(frames))], f"{rate_hz:g} Hz{note}"


class _Writer:
    """rosbags Writer + CDR serialization + per-topic counts."""

    def __init__(self, path: Path, storage: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f"unknown storage {storage!r}; choose mcap or sqlite3")
        self.typestore = layout.typestore()
        self.factory = rosbags_factory(self.typestore)
        # Metadata version 8: the newest layout that Humble's rosbag2 reads.
        self.writer = Writer(path, version=8, storage_plugin=plugins[storage])
        self.connections: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def open(self) -> None:
        self.writer.open()

    def topic(self, name: str, msgtype: str, durability: str = "volatile") -> None:
        qos = layout.qos(durability, depth=1 if durability == "transient_local" else 10)
        self.connections[name] = self.writer.add_connection(
            name, msgtype, typestore=self.typestore, offered_qos_profiles=[qos]
        )
        self.counts[name] = 0

    def write(self, topic: str, msg, stamp_ns: int) -> None:
        conn = self.connections[topic]
        self.writer.write(conn, int(stamp_ns), self.typestore.serialize_cdr(msg, conn.msgtype))
        self.counts[topic] += 1

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def new_bag(out: Path, storage: str = "mcap", overwrite: bool = False) -> Iterator[_Writer]:
    """An open bag writer whose bag appears at ``out`` only when the block completes; on any
    error the partial bag is discarded (and a previous bag at ``out`` kept)."""
    try:
        with atomic_directory(out, replace=overwrite, is_replaceable=is_rosbag2) as tmp:
            w = _Writer(tmp, storage)
            w.open()
            try:
                yield w
                w.close()
            except BaseException:
                w.writer.abort()
                raise
    except FileExistsError as exc:
        raise BagError(str(exc)) from None


def compressed_image(f, frame: Frame, rgb: np.ndarray, stamp_ns: int, frame_id: str, quality: int):
    """JPEG files go in unchanged (no second lossy step); anything else is encoded once."""
    if frame.image_path.suffix.lower() in (".jpg", ".jpeg"):
        data = np.frombuffer(frame.image_path.read_bytes(), np.uint8)
        return f(
            "sensor_msgs/msg/CompressedImage",
            header=make_header(f, stamp_ns, frame_id),
            format="rgb8; jpeg compressed bgr8",
            data=f.byte_array(data),
        )
    return encode_compressed_image(f, rgb, stamp_ns, frame_id, quality=quality)


def odometry_poses(
    plan: Sequence[tuple[str, Frame, int]], T_cam_base: np.ndarray, drift: DriftModel | None
) -> list[np.ndarray]:
    """The base poses odometry reports for each planned frame: the true ones, or, with ``drift``,
    each split's chain drifted from its first frame (about the cameras' up axis)."""
    base = [frame.pose @ T_cam_base for _, frame, _ in plan]
    if drift is None:
        return base
    out = list(base)
    splits = [s for k, (s, _, _) in enumerate(plan) if k == 0 or plan[k - 1][0] != s]
    for split in splits:
        rows = [k for k, (s, _, _) in enumerate(plan) if s == split]
        up = up_axis(np.stack([plan[k][1].pose for k in rows]))
        for k, T in zip(rows, drift_poses(np.stack([base[k] for k in rows]), drift, up=up)):
            out[k] = T
    return out


def convert(
    frames_by_split: dict[str, Sequence[Frame]],
    out: Path,
    storage: str = "mcap",
    compressed: bool = False,
    jpeg_quality: int = 95,
    rate_hz: float = 10.0,
    start_ns: int = DEFAULT_START_NS,
    odometry: bool = True,
    overwrite: bool = False,
    description: str = "",
    topics: Topics = Topics(),
    frame_ids: Frames = Frames(),
    progress: Callable[[int, int], None] | None = None,
    base_to_camera: np.ndarray | None = None,
    drift: DriftModel | None = None,
) -> ConvertSummary:
    """Write the frames of each split (in order: train, then test) into the bag ``out``.

    ``base_to_camera``: the camera's mount on the robot base, T_base_cam (default: the camera at
    the base origin, :data:`layout.T_BASE_CAMERA`). ``drift``: the odometry (``/odom`` and ``odom
    -> base_link``) drifts by this model, each split from its first frame on, while the ground
    truth (``/ground_truth/pose``, ``map -> camera_ground_truth``) stays true: what a robot's bag
    looks like.

    The bag appears at ``out`` only when complete; a failure or Ctrl-C leaves nothing (or the
    previous bag, with ``overwrite``) there.
    """
    out = Path(out)
    splits = {k: list(v) for k, v in frames_by_split.items() if len(v)}
    if not splits:
        raise BagError("no frames to convert")
    plan: list[tuple[str, Frame, int]] = []
    ranges: dict[str, list[int]] = {}
    clock = start_ns
    how = set()
    for split, frames in splits.items():
        stamps, source = frame_stamps(frames, clock, rate_hz)
        how.add(source)
        if plan and stamps[0] <= plan[-1][2]:
            raise BagError(
                f"the {split} frames' own stamps overlap the previous split's; convert one split per bag (--split)"
            )
        plan += [(split, fr, s) for fr, s in zip(frames, stamps)]
        ranges[split] = [stamps[0], stamps[-1]]
        clock = stamps[-1] + SPLIT_GAP_NS
    has_depth = all(fr.depth_path is not None for _, fr, _ in plan)
    with new_bag(out, storage, overwrite) as w:
        f = w.factory
        image_topic = topics.compressed if compressed else topics.image
        w.topic(image_topic, layout.COMPRESSED_TYPE if compressed else layout.IMAGE_TYPE)
        w.topic(topics.camera_info, layout.CAMERA_INFO_TYPE)
        if has_depth:
            w.topic(topics.depth, layout.IMAGE_TYPE)
        w.topic(topics.tf, layout.TF_TYPE)
        w.topic(topics.tf_static, layout.TF_TYPE, durability="transient_local")
        w.topic(topics.ground_truth, layout.POSE_TYPE)
        fr_ = frame_ids
        mount = layout.T_BASE_CAMERA if base_to_camera is None else np.asarray(base_to_camera, np.float64)
        static = make_transform_stamped(f, mount, plan[0][2], fr_.base, fr_.camera)
        w.write(topics.tf_static, f("tf2_msgs/msg/TFMessage", transforms=[static]), plan[0][2])
        T_cam_base = invert_pose(mount)
        odom = odometry_poses(plan, T_cam_base, drift) if odometry else None
        if odometry:
            w.topic(topics.odometry, layout.ODOMETRY_TYPE)
        for i, (_, frame, stamp) in enumerate(plan):
            rgb = frame.load_image()
            w.write(topics.camera_info, encode_camera_info(f, frame.camera, stamp, fr_.camera), stamp)
            if compressed:
                w.write(image_topic, compressed_image(f, frame, rgb, stamp, fr_.camera, jpeg_quality), stamp)
            else:
                w.write(image_topic, encode_image(f, rgb, stamp, fr_.camera), stamp)
            if has_depth:
                w.write(
                    topics.depth,
                    encode_image(f, frame.load_depth().astype(np.float32), stamp, fr_.camera, "32FC1"),
                    stamp,
                )
            transforms = [make_transform_stamped(f, frame.pose, stamp, fr_.map, fr_.ground_truth)]
            if odometry:
                transforms.append(make_transform_stamped(f, odom[i], stamp, fr_.odom, fr_.base))
                w.write(topics.odometry, make_odometry(f, odom[i], stamp, fr_.odom, fr_.base), stamp)
            w.write(topics.tf, f("tf2_msgs/msg/TFMessage", transforms=transforms), stamp)
            w.write(topics.ground_truth, make_pose_stamped(f, frame.pose, stamp, fr_.map), stamp)
            if progress:
                progress(i + 1, len(plan))
        info = {
            "source": description,
            "stamps": sorted(how),
            "odometry": odometry,
            "base_to_camera": mount.tolist(),
            **({"simulated_drift": drift.describe()} if drift is not None else {}),
            "compressed": compressed,
            "generator": "scr_ros",
        }
        w.writer.set_custom_data(SPLITS_KEY, json.dumps(ranges))
        w.writer.set_custom_data("scr_ros.conversion", json.dumps(info))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ConvertSummary(
        out, len(plan), dict(w.counts), ranges, (plan[-1][2] - plan[0][2]) * 1e-9, size, ", ".join(sorted(how))
    )

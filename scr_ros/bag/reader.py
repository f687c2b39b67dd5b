"""Reading a bag the way the nodes read topics.

:class:`BagSource` opens a rosbag2 (or ROS 1) bag with ``rosbags``' AnyReader. Small topics
(camera info, TF, ground truth) are loaded once into memory; images are streamed in stamp order
and decoded with the same :mod:`scr_ros.messages` functions the nodes use. Stamps are the
messages' header stamps, as the nodes use them for TF lookups.
"""

from __future__ import annotations

import bisect
import collections
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import MessageError
from ..geometry import PinholeCamera, camera_for_image
from ..messages import (
    CameraInfo,
    decode_camera_info,
    decode_compressed_image,
    decode_depth,
    decode_image,
    pose_to_matrix,
    stamp_to_ns,
    transform_to_matrix,
)
from . import layout
from .layout import SPLITS_KEY, BagError, Topics
from .tf import PoseSeries, TfBuffer


@dataclass
class TopicSummary:
    name: str
    msgtype: str
    count: int
    durability: str  # as offered when recorded: transient_local, volatile, ... or "" (unknown)


@dataclass
class BagImage:
    """One decoded camera image with what the nodes would know about it."""

    stamp_ns: int
    frame_id: str
    image: np.ndarray  # RGB uint8 (H, W, 3) or grey (H, W)
    camera: PinholeCamera
    depth: np.ndarray | None  # float32 metres, NaN invalid, registered to the image
    decode_s: float  # time spent reading and decoding this frame's messages


@dataclass
class SideData:
    """Everything but the images: camera infos by stamp, TF, ground-truth poses."""

    camera_infos: list[tuple[int, CameraInfo]] = field(default_factory=list)
    tf: TfBuffer = field(default_factory=TfBuffer)
    ground_truth: PoseSeries = field(default_factory=PoseSeries)
    ground_truth_frame: str = ""
    problems: collections.Counter = field(default_factory=collections.Counter)
    _info_stamps: list[int] = field(default_factory=list, repr=False)

    def camera_info_at(self, stamp_ns: int) -> CameraInfo:
        """The camera info with this stamp, else the newest one before it, else the first."""
        if not self.camera_infos:
            raise BagError("the bag has no camera_info messages")
        if len(self._info_stamps) != len(self.camera_infos):  # built once, not per image
            self._info_stamps = [s for s, _ in self.camera_infos]
        i = bisect.bisect_right(self._info_stamps, stamp_ns)
        return self.camera_infos[max(i - 1, 0)][1]


class BagSource:
    """A bag opened for reading. Use as a context manager.

    Args:
        path: the bag folder (rosbag2) or ``.bag`` file (ROS 1).
        topics: topic names (the converter's by default).
    """

    def __init__(self, path: str | Path, topics: Topics = Topics()) -> None:
        from rosbags.highlevel import AnyReader, AnyReaderError

        self.path = Path(path)
        self.topics = topics
        if not self.path.exists():
            raise BagError(f"bag not found: {self.path}")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            raise BagError(f"{self.path} is not a rosbag2 folder (no metadata.yaml)")
        try:
            self.reader = AnyReader([self.path], default_typestore=layout.typestore())
            self.reader.open()
        except (AnyReaderError, OSError, ValueError, KeyError) as exc:
            raise BagError(f"cannot open bag {self.path}: {exc}") from None
        self.by_topic: dict[str, list] = collections.defaultdict(list)
        for c in self.reader.connections:
            self.by_topic[c.topic].append(c)

    def __enter__(self) -> "BagSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.reader.close()

    # ------------------------------------------------------------------ metadata

    def topic_summaries(self) -> list[TopicSummary]:
        out = []
        for name, conns in sorted(self.by_topic.items()):
            durability = set()
            for c in conns:
                for q in getattr(c.ext, "offered_qos_profiles", None) or []:
                    durability.add(q.durability.name.lower())
            out.append(
                TopicSummary(name, conns[0].msgtype, sum(c.msgcount for c in conns), ",".join(sorted(durability)))
            )
        return out

    def custom_data(self) -> dict:
        meta = self.path / "metadata.yaml"
        if not meta.is_file():
            return {}
        import yaml

        try:
            info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            return {}
        return info.get("custom_data") or {}

    def split_ranges(self) -> dict[str, tuple[int, int]]:
        """{split: (first_ns, last_ns)} recorded by ``scr bag convert``; empty for other bags."""
        raw = self.custom_data().get(SPLITS_KEY)
        if not raw:
            return {}
        try:
            return {k: (int(v[0]), int(v[1])) for k, v in json.loads(raw).items()}
        except (ValueError, TypeError, IndexError, AttributeError) as exc:
            raise BagError(f"{self.path}: malformed {SPLITS_KEY} in metadata.yaml ({exc})") from None

    def stamp_range(self, split: str | None) -> tuple[int | None, int | None]:
        """Bag-time bounds (start, stop) for a split; (None, None) for all of it."""
        if split in (None, "all"):
            return None, None
        ranges = self.split_ranges()
        if not ranges:
            raise BagError(f"{self.path} records no splits (it was not written by scr bag convert); use --split all")
        if split not in ranges:
            raise BagError(f"{self.path} has no {split!r} split (has {', '.join(ranges)})")
        first, last = ranges[split]
        return first, last + 1

    def image_topic(self) -> tuple[str, bool]:
        """(topic, compressed) of the camera images: raw preferred, else the compressed stream."""
        t = self.topics
        if t.image in self.by_topic:
            return t.image, False
        if t.compressed in self.by_topic:
            return t.compressed, True
        images = [n for n, c in self.by_topic.items() if c[0].msgtype in (layout.IMAGE_TYPE, layout.COMPRESSED_TYPE)]
        raise BagError(
            f"{self.path}: no image topic {t.image} or {t.compressed}"
            + (f" (image topics in the bag: {', '.join(images)}; pass --image-topic)" if images else "")
        )

    def _connections(self, topic: str, msgtype: str | tuple[str, ...]) -> list:
        conns = self.by_topic.get(topic, [])
        types = (msgtype,) if isinstance(msgtype, str) else msgtype
        wrong = [c.msgtype for c in conns if c.msgtype not in types]
        if wrong:
            raise BagError(f"{self.path}: topic {topic} has type {wrong[0]}, expected {' or '.join(types)}")
        return conns

    # ------------------------------------------------------------------ small topics

    def load_side(self, tf_max_gap_s: float = 0.5) -> SideData:
        """Camera infos, TF and ground truth: read once, kept in memory. Malformed messages are
        counted in ``problems`` and skipped, as a node would skip them."""
        t = self.topics
        side = SideData(tf=TfBuffer(tf_max_gap_s))
        conns = (
            self._connections(t.camera_info, layout.CAMERA_INFO_TYPE)
            + self._connections(t.tf, layout.TF_TYPE)
            + self._connections(t.tf_static, layout.TF_TYPE)
            + self._connections(t.ground_truth, (layout.POSE_TYPE, "geometry_msgs/msg/PoseWithCovarianceStamped"))
        )
        if not conns:
            return side
        for conn, _, raw in self.reader.messages(connections=conns):
            try:
                msg = self.reader.deserialize(raw, conn.msgtype)
                if conn.topic == t.camera_info:
                    side.camera_infos.append((stamp_to_ns(msg.header.stamp), decode_camera_info(msg)))
                elif conn.topic in (t.tf, t.tf_static):
                    for tr in msg.transforms:
                        T = transform_to_matrix(tr.transform, f"transform {tr.header.frame_id} -> {tr.child_frame_id}")
                        side.tf.add(
                            tr.header.frame_id,
                            tr.child_frame_id,
                            T,
                            stamp_to_ns(tr.header.stamp),
                            static=conn.topic == t.tf_static,
                        )
                else:
                    pose = msg.pose.pose if conn.msgtype.endswith("WithCovarianceStamped") else msg.pose
                    side.ground_truth.add(stamp_to_ns(msg.header.stamp), pose_to_matrix(pose, "ground-truth pose"))
                    side.ground_truth_frame = msg.header.frame_id
            except (MessageError, LookupError) as exc:
                side.problems[f"{conn.topic}: {exc}"] += 1
        side.camera_infos.sort(key=lambda it: it[0])
        return side

    # ------------------------------------------------------------------ images

    def count_images(self, split: str | None = None, side: SideData | None = None) -> int:
        """Images in a split, for progress bars: exact for the whole bag; for a split, the
        camera infos in its time range (one per image in converted bags) scaled to the image
        count, so the images themselves are not read twice."""
        topic, _ = self.image_topic()
        total = sum(c.msgcount for c in self.by_topic[topic])
        start, stop = self.stamp_range(split)
        if start is None or side is None or not side.camera_infos:
            return total
        inside = sum(start <= s < stop for s, _ in side.camera_infos)
        return round(inside * total / len(side.camera_infos))

    def images(
        self, side: SideData, split: str | None = None, with_depth: bool = False, allow_scaling: bool = True
    ) -> Iterator[BagImage | tuple[int, str]]:
        """Decoded images in bag order; depth paired by stamp when ``with_depth``.

        Yields :class:`BagImage`, or ``(stamp_ns, reason)`` for a message that cannot be used
        (the caller counts it; one bad message never ends the replay).
        """
        topic, compressed = self.image_topic()
        start, stop = self.stamp_range(split)
        conns = list(self._connections(topic, layout.COMPRESSED_TYPE if compressed else layout.IMAGE_TYPE))
        depth_conns = self._connections(self.topics.depth, layout.IMAGE_TYPE) if with_depth else []
        depths: dict[int, np.ndarray] = {}
        pending: collections.deque[BagImage] = collections.deque()
        # Registered depth carries the image's stamp; an image waits at most this long (bag
        # time) for its depth before it goes on without.
        wait_ns = 500_000_000
        # decode_s: the wall time from handing out the previous frame to having this one ready
        # (reading storage, deserializing, decoding; depth included): what replay costs
        # without the network.
        carry = 0.0
        t_read = time.perf_counter()
        for conn, bag_ns, raw in self.reader.messages(connections=conns + depth_conns, start=start, stop=stop):
            item = None
            try:
                msg = self.reader.deserialize(raw, conn.msgtype)
                stamp = stamp_to_ns(msg.header.stamp)
                if conn in depth_conns:
                    depths[stamp] = decode_depth(msg)
                else:
                    img = decode_compressed_image(msg) if compressed else decode_image(msg)
                    info = side.camera_info_at(stamp)
                    camera = camera_for_image(info.camera, img.shape[1], img.shape[0], allow_scaling)
                    item = BagImage(stamp, msg.header.frame_id or info.frame_id, img, camera, None, 0.0)
            except (MessageError, BagError) as exc:
                yield (bag_ns, f"{conn.topic}: {exc}")
                t_read = time.perf_counter()
                continue
            now = time.perf_counter()
            carry += now - t_read
            t_read = now
            if item is None:
                pass
            elif not with_depth:
                item.decode_s, carry = carry, 0.0
                yield item
                t_read = time.perf_counter()
                continue
            else:
                item.decode_s, carry = carry, 0.0
                pending.append(item)
            while pending and (pending[0].stamp_ns in depths or bag_ns - pending[0].stamp_ns > wait_ns):
                ready = pending.popleft()
                ready.depth = depths.pop(ready.stamp_ns, None)
                yield ready
                t_read = time.perf_counter()
            for s in [s for s in depths if s < bag_ns - 2 * wait_ns]:
                del depths[s]
        while pending:
            ready = pending.popleft()
            ready.depth = depths.pop(ready.stamp_ns, None)
            yield ready


def describe(source: BagSource, side: SideData | None = None) -> str:
    """The text of ``scr bag info``: topics, counts, duration, and whether map / replay can run."""
    r = source.reader
    lines = [f"bag:       {source.path}"]
    storage = ""
    meta = source.path / "metadata.yaml"
    if meta.is_file():
        import yaml

        try:
            info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
            storage = f"rosbag2 version {info.get('version')}, storage {info.get('storage_identifier')}"
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            storage = "rosbag2 (metadata.yaml unreadable)"
    lines.append(f"format:    {storage or 'ROS 1 bag'}")
    lines.append(f"duration:  {r.duration * 1e-9:.2f} s  ({r.message_count} messages)")
    ranges = source.split_ranges()
    if ranges:
        lines.append("splits:    " + ", ".join(f"{k} {(b - a) * 1e-9:.1f} s" for k, (a, b) in ranges.items()))
    summaries = source.topic_summaries()
    width = max([len(s.name) for s in summaries] + [5])
    lines.append("topics:")
    for s in summaries:
        qos = f"  [{s.durability}]" if s.durability else ""
        lines.append(f"  {s.name.ljust(width)}  {s.count:7d}  {s.msgtype}{qos}")
    side = side or source.load_side()
    edges = side.tf.edges()
    if edges:
        lines.append("tf:        " + ", ".join(f"{p} -> {c}{' (static)' if st else ''}" for p, c, st in edges))
    for problem, n in side.problems.most_common(5):
        lines.append(f"warning:   {n} message(s) skipped: {problem}")
    lines.append(f"map:       {readiness(source, side, 'map')}")
    lines.append(f"replay:    {readiness(source, side, 'replay')}")
    return "\n".join(lines)


def readiness(source: BagSource, side: SideData, command: str, pose_frame: str = "odom") -> str:
    """``yes ...`` or ``no: <what is missing>`` for ``scr bag map`` / ``scr bag replay``."""
    missing = []
    try:
        topic, _ = source.image_topic()
    except BagError:
        topic = None
        missing.append(f"images ({source.topics.image} or {source.topics.compressed})")
    if not side.camera_infos:
        missing.append(f"camera info ({source.topics.camera_info})")
    if command == "map" and topic is not None and side.camera_infos:
        frame = side.camera_infos[0][1].frame_id
        stamp = side.camera_infos[len(side.camera_infos) // 2][0]
        try:
            side.tf.lookup(pose_frame, frame, stamp)
        except LookupError as exc:
            missing.append(f"camera poses from TF ({pose_frame} -> {frame}: {exc})")
    if command == "replay" and len(side.ground_truth) == 0:
        missing.append(
            f"ground-truth poses ({source.topics.ground_truth}); without them replay can localize but not score"
        )
    if missing:
        return "no: missing " + "; ".join(missing)
    n = sum(c.msgcount for c in source.by_topic[topic])
    return f"yes ({n} images on {topic})"

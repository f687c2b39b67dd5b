"""``scr bag map``: the mapping node's recording path fed from a bag.

Each image is paired with its registered depth (optional), its camera pose is looked up in TF
at the image stamp (``pose_frame -> image frame``, as the node does), and
:class:`~scr_ros.node_logic.mapping_core.MappingCore` validates it, picks keyframes and records them into
a session folder; the map is then built from that folder by the same ``build_map`` the node's
build service and ``scr map`` run.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..node_logic.mapping_core import MappingCore
from .layout import BagError, Topics
from .reader import BagSource, readiness


@dataclass
class RecordSummary:
    images: int = 0
    recorded: int = 0
    with_depth: int = 0
    problems: collections.Counter = field(default_factory=collections.Counter)

    def describe(self) -> str:
        text = f"{self.recorded} keyframes recorded from {self.images} images" + (
            f" ({self.with_depth} with depth)" if self.with_depth else ""
        )
        for reason, n in self.problems.most_common(5):
            text += f"\n  skipped {n}: {reason}"
        return text


def record_session(
    bag: str | Path,
    session: str | Path,
    pose_frame: str = "odom",
    split: str | None = None,
    depth: str = "auto",
    min_translation: float = 0.0,
    min_rotation_deg: float = 0.0,
    max_interval: float = 0.0,
    topics: Topics = Topics(),
    progress: Callable[[int, int], None] | None = None,
) -> RecordSummary:
    """Record the keyframes of ``bag`` into the posed folder ``session``.

    ``depth``: ``auto`` (use the depth topic when the bag has one), ``on`` (require it) or
    ``off``. All keyframe thresholds 0 (the default) records every frame: dataset bags hold
    frames that were already chosen.
    """
    with BagSource(bag, topics) as src:
        side = src.load_side()
        ready = readiness(src, side, "map", pose_frame)
        if not ready.startswith("yes"):
            raise BagError(f"{bag}: cannot map: {ready[4:]}")
        has_depth = topics.depth in src.by_topic
        if depth == "on" and not has_depth:
            raise BagError(f"{bag}: no depth topic {topics.depth} (--depth on)")
        use_depth = has_depth and depth != "off"
        core = MappingCore(
            {
                "session_folder": str(session),
                "pose_frame": pose_frame,
                "use_depth": use_depth,
                "min_translation": min_translation,
                "min_rotation_deg": min_rotation_deg,
                "max_interval": max_interval,
            }
        )
        core.start_recording()
        summary = RecordSummary()
        total = src.count_images(split, side)
        for i, item in enumerate(src.images(side, split, with_depth=use_depth, allow_scaling=False), 1):
            if isinstance(item, tuple):
                summary.problems[item[1]] += 1
                continue
            summary.images += 1
            try:
                T = side.tf.lookup(pose_frame, item.frame_id, item.stamp_ns)
            except LookupError as exc:
                summary.problems[f"no pose in TF ({pose_frame} -> {item.frame_id}): {exc}"] += 1
                continue
            if use_depth and item.depth is None:
                summary.problems["no depth image with the same stamp (recorded without depth)"] += 1
            result = core.add_frame(item.image, item.camera, T, item.stamp_ns, item.frame_id, item.depth)
            if result.status == "recorded":
                summary.recorded += 1
                summary.with_depth += item.depth is not None
            elif result.status == "invalid":
                summary.problems[result.reason] += 1
            if progress:
                progress(i, total)
        core.stop_recording()
    if summary.recorded < 2:
        raise BagError(f"{bag}: only {summary.recorded} keyframe(s) recorded; {summary.describe()}")
    return summary

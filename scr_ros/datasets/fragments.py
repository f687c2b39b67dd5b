"""RGB-D fragments as published with the 3DMatch toolbox (SUN3D, 7-Scenes, ... scenes).

::

    ROOT/camera-intrinsics.txt               3x3 K
    ROOT/<name>-rgbd-frames/frame-XXXXXX.color.png, .depth.png (16-bit mm, registered), .pose.txt

There is no official relocalization split. The one used here (and in the SUN3D sample's README):
within each fragment, the frame at position ``i`` (in name order) is a mapping frame when
``(i // 5)`` is even and a query otherwise, so queries come in runs of five between mapping runs.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from ..geometry import PinholeCamera
from .base import Dataset, Frame, image_size, read_numbers, read_pose_file


def is_fragments(root: Path) -> bool:
    return (root / "camera-intrinsics.txt").is_file() and any(root.glob("*-rgbd-frames"))


def open_fragments(root: Path) -> Dataset:
    root = Path(root)
    K = read_numbers(root / "camera-intrinsics.txt", 9).reshape(3, 3)
    fragments = sorted(p for p in root.glob("*-rgbd-frames") if p.is_dir())
    splits: dict[str, list[Frame]] = {"train": [], "test": []}
    camera = None
    for frag in fragments:
        images = sorted(frag.glob("frame-*.color.png"))
        if not images:
            raise DatasetError(f"{frag}: no frame-XXXXXX.color.png images")
        if camera is None:
            w, h = image_size(images[0])
            try:
                camera = PinholeCamera.from_K(K, w, h)
            except ValueError as exc:
                raise DatasetError(f"{root / 'camera-intrinsics.txt'}: {exc}") from None
        for i, img in enumerate(images):
            stem = img.name[: -len(".color.png")]
            depth = frag / f"{stem}.depth.png"
            frame = Frame(
                f"{frag.name}/{stem}",
                img,
                read_pose_file(frag / f"{stem}.pose.txt"),
                camera,
                depth if depth.is_file() else None,
            )
            splits["train" if (i // 5) % 2 == 0 else "test"].append(frame)
    return Dataset(root, "rgbd-fragments", splits, description="3DMatch-style fragments, split (i // 5) even = train")

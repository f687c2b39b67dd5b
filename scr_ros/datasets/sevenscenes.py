"""Microsoft 7-Scenes, official layout.

::

    SCENE/TrainSplit.txt, TestSplit.txt      lines like "sequence1"
    SCENE/seq-01/frame-000000.color.png      640x480 RGB
    SCENE/seq-01/frame-000000.pose.txt       4x4 camera-to-world
    SCENE/seq-01/frame-000000.depth.png      16-bit mm (65535 = invalid)

RGB intrinsics are not distributed; the customary values are focal 525 px with the principal
point at the image centre. The depth camera is not registered to the RGB camera (different
focal length and viewpoint), so depth is not exposed here.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DatasetError
from ..geometry import PinholeCamera
from .base import Dataset, Frame, read_pose_file, read_text

SPLIT_FILES = {"train": "TrainSplit.txt", "test": "TestSplit.txt"}


def is_seven_scenes(root: Path) -> bool:
    return (root / "TrainSplit.txt").is_file() or (root / "TestSplit.txt").is_file()


def _sequences(split_file: Path) -> list[str]:
    names = []
    for lineno, line in enumerate(read_text(split_file, "split file").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        m = re.fullmatch(r"sequence(\d+)", line, flags=re.IGNORECASE)
        if not m:
            raise DatasetError(f"{split_file}:{lineno}: expected a line like 'sequence1', got {line!r}")
        names.append(f"seq-{int(m.group(1)):02d}")
    if not names:
        raise DatasetError(f"{split_file}: lists no sequences")
    return names


def open_seven_scenes(root: Path, focal: float = 525.0, width: int = 640, height: int = 480) -> Dataset:
    root = Path(root)
    camera = PinholeCamera(focal, focal, width / 2.0, height / 2.0, width, height)
    splits, absent = {}, {}
    for split, fname in SPLIT_FILES.items():
        if not (root / fname).exists():
            # A scene with only TrainSplit.txt still maps; asking for its test split says why not.
            absent[split] = f"split file missing: {root / fname}"
            continue
        frames = []
        for seq in _sequences(root / fname):
            seq_dir = root / seq
            if not seq_dir.is_dir():
                raise DatasetError(f"{root / fname} lists {seq}, but {seq_dir} does not exist")
            images = sorted(seq_dir.glob("frame-*.color.png"))
            if not images:
                raise DatasetError(f"{seq_dir}: no frame-XXXXXX.color.png images")
            have = {img.name[: -len(".color.png")] for img in images}
            orphans = sorted(
                p.name[: -len(".pose.txt")]
                for p in seq_dir.glob("frame-*.pose.txt")
                if p.name[: -len(".pose.txt")] not in have
            )
            if orphans:
                raise DatasetError(
                    f"{seq_dir}: {len(orphans)} frame(s) have a pose but no colour image ({', '.join(orphans[:3])}"
                    f"{', ...' if len(orphans) > 3 else ''}); an incomplete download?"
                )
            for img in images:
                stem = img.name[: -len(".color.png")]
                pose = read_pose_file(seq_dir / f"{stem}.pose.txt")
                frames.append(Frame(f"{seq}/{stem}", img, pose, camera))
        splits[split] = frames
    return Dataset(root, "7scenes", splits, description=f"7-Scenes, focal {focal}", absent=absent)

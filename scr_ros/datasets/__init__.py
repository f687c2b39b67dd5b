"""Dataset readers and layout detection.

``open_dataset(spec)`` accepts ``synthetic:NAME`` or a folder whose layout is detected:
7-Scenes scene folders, the ACE / DSAC* layout (Wayspots), 12-Scenes scene folders, Cambridge
Landmarks scene folders, 3DMatch-style RGB-D fragments, TUM RGB-D sequences (or any image folder
posed by a TUM trajectory file), and the plain posed folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import DatasetError
from .ace_layout import is_ace_layout, open_ace_layout
from .base import SPLITS, Dataset, Frame
from .cambridge import is_cambridge, open_cambridge
from .fragments import is_fragments, open_fragments
from .posed_folder import is_posed_folder, open_posed_folder
from .sevenscenes import is_seven_scenes, open_seven_scenes
from .synthetic import SCENES, open_synthetic, render_to_folder
from .tum import is_tum, open_tum
from .twelvescenes import is_twelve_scenes, open_twelve_scenes

# (name, detector, reader): tried in order; the first detector that says yes reads the folder.
LAYOUTS: list[tuple[str, Callable[[Path], bool], Callable[[Path], Dataset]]] = [
    ("7scenes", is_seven_scenes, open_seven_scenes),
    # before the posed folder: an ACE scene also has train/rgb + train/poses
    ("ace", is_ace_layout, open_ace_layout),
    # after the ACE layout: ACE's setup script writes train/ and test/ into the Cambridge scene
    # folder itself, and such a folder has always opened as the ACE layout
    ("12scenes", is_twelve_scenes, open_twelve_scenes),
    ("cambridge", is_cambridge, open_cambridge),
    ("rgbd-fragments", is_fragments, open_fragments),
    # before the posed folder: a TUM image folder has rgb/ too, but a trajectory file, not poses/
    ("tum", is_tum, open_tum),
    ("posed-folder", is_posed_folder, open_posed_folder),
]


def open_dataset(spec: str | Path, progress=None) -> Dataset:
    """Open ``synthetic:NAME`` or a dataset folder, detecting its layout."""
    spec_str = str(spec)
    if spec_str.startswith("synthetic:"):
        return open_synthetic(spec_str.split(":", 1)[1] or "default", progress=progress)
    root = Path(spec)
    if not root.exists():
        raise DatasetError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"dataset must be a folder or synthetic:NAME, got file {root}")
    for _, detect, read in LAYOUTS:
        if detect(root):
            return read(root)
    raise DatasetError(
        f"{root}: unrecognized dataset layout. Expected one of: a 7-Scenes scene (TrainSplit.txt, seq-XX/), "
        f"the ACE layout (train/ and test/ with rgb/, poses/, calibration/), a 12-Scenes scene (info.txt, split.txt, "
        "data/frame-XXXXXX.color.jpg), a Cambridge Landmarks scene (dataset_train.txt, dataset_test.txt), RGB-D "
        "fragments (camera-intrinsics.txt, *-rgbd-frames/), a TUM sequence (rgb.txt or rgb/ and groundtruth.txt, "
        "trajectory.txt or poses.txt in TUM format), or a posed folder (rgb/ + poses/, "
        f"optionally under train/ and test/)"
    )


__all__ = ["Dataset", "Frame", "SPLITS", "SCENES", "LAYOUTS", "open_dataset", "open_synthetic", "render_to_folder"]

"""TUM RGB-D sequences, and image folders posed by a TUM trajectory file.

::

    ROOT/rgb.txt             "stamp rgb/STAMP.png" per line (TUM RGB-D), or just ROOT/rgb/ with
                             images named by their stamp in seconds (e.g. 1305031102.175304.png)
    ROOT/depth.txt           optional, "stamp depth/STAMP.png": 16-bit, 5000 per metre (TUM's)
    ROOT/groundtruth.txt     the camera trajectory, TUM format (stamp tx ty tz qx qy qz qw);
                             trajectory.txt or poses.txt are read the same way
    ROOT/intrinsics.txt      optional "fx fy cx cy [width height]"; without it a TUM RGB-D
                             sequence (rgbd_dataset_freiburgN_...) takes its published intrinsics

Each image gets the trajectory's pose at its stamp, interpolated between the two poses around
it when they are at most 0.1 s apart (TUM's ground truth runs at 100 Hz); an image outside the
trajectory, or in a longer gap, is left out and counted. Depth images are paired with the image
nearest in time within 0.02 s (TUM's ``associate.py``). A sequence has no splits: every split
name selects all its frames. TUM's ground truth is the pose of the camera's optical centre in
its optical axes, so it is used as is.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..evaluation.trajectory import poses_at, read_tum
from ..geometry import PinholeCamera
from .base import Dataset, Frame, image_size, read_numbers, read_text

TRAJECTORY_FILES = ("groundtruth.txt", "trajectory.txt", "poses.txt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_POSE_GAP_S = 0.1
MAX_DEPTH_GAP_S = 0.02
DEPTH_SCALE = 1.0 / 5000.0  # TUM RGB-D depth PNGs: 5000 units per metre
# Published intrinsics of the TUM RGB-D cameras (fx, fy, cx, cy at 640x480), by sequence prefix.
FREIBURG = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3),
    "freiburg2": (520.9, 521.0, 325.1, 249.7),
    "freiburg3": (535.4, 539.2, 320.1, 247.6),
}
STAMPED_NAME = re.compile(r"^\d+(\.\d+)?$")


def _trajectory_file(root: Path) -> Path | None:
    return next((root / name for name in TRAJECTORY_FILES if (root / name).is_file()), None)


def is_tum(root: Path) -> bool:
    """A TUM sequence: rgb.txt (or rgb/ with stamp-named images, and no poses/ folder, which a
    posed folder has) and a trajectory file."""
    if _trajectory_file(root) is None or (root / "poses").is_dir():
        return False
    if (root / "rgb.txt").is_file():
        return True
    rgb = root / "rgb"
    return rgb.is_dir() and any(STAMPED_NAME.match(p.stem) for p in rgb.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _list(path: Path, root: Path) -> tuple[np.ndarray, list[Path]]:
    """A TUM list file ("stamp relative/path" per line, # comments): stamps and paths."""
    stamps, paths = [], []
    for number, line in enumerate(read_text(path, "image list").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            stamp = float(parts[0])
        except (ValueError, IndexError):
            raise DatasetError(f"{path}:{number}: expected 'stamp path', got {line[:80]!r}") from None
        if len(parts) < 2:
            raise DatasetError(f"{path}:{number}: expected 'stamp path', got {line[:80]!r}")
        stamps.append(stamp)
        paths.append(root / parts[1])
    return np.asarray(stamps, np.float64), paths


def _images(root: Path) -> tuple[np.ndarray, list[Path]]:
    if (root / "rgb.txt").is_file():
        stamps, paths = _list(root / "rgb.txt", root)
    else:
        files = sorted((p for p in (root / "rgb").iterdir() if STAMPED_NAME.match(p.stem)), key=lambda p: float(p.stem))
        stamps, paths = np.asarray([float(p.stem) for p in files]), files
    if not len(paths):
        raise DatasetError(f"{root}: no images listed")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{root}: {len(missing)} listed image(s) missing, e.g. {missing[0]}")
    order = np.argsort(stamps, kind="stable")
    return stamps[order], [paths[i] for i in order]


def _camera(root: Path, first_image: Path) -> PinholeCamera:
    w, h = image_size(first_image)
    path = root / "intrinsics.txt"
    if path.is_file():
        values = read_numbers(path, (4, 6))
        fx, fy, cx, cy = values[:4]
    else:
        key = next((k for k in FREIBURG if k in root.resolve().name), None)
        if key is None:
            raise DatasetError(
                f"{root}: no intrinsics: add intrinsics.txt ('fx fy cx cy') or keep the TUM RGB-D folder name "
                f"(rgbd_dataset_freiburgN_...) whose published intrinsics are known"
            )
        fx, fy, cx, cy = FREIBURG[key]
        if (w, h) != (640, 480):
            raise DatasetError(f"{root}: the {key} intrinsics are for 640x480 images, these are {w}x{h}")
    try:
        return PinholeCamera(float(fx), float(fy), float(cx), float(cy), w, h)
    except ValueError as exc:
        raise DatasetError(f"{root}: {exc}") from None


def open_tum(root: Path) -> Dataset:
    root = Path(root)
    trajectory = _trajectory_file(root)
    traj_stamps, traj_poses = read_tum(trajectory)
    stamps, images = _images(root)
    camera = _camera(root, images[0])
    poses, found = poses_at(traj_stamps, traj_poses, stamps, MAX_POSE_GAP_S)
    depth_stamps, depth_paths = _list(root / "depth.txt", root) if (root / "depth.txt").is_file() else (np.zeros(0), [])
    frames = []
    unpaired = 0
    for k in np.flatnonzero(found):
        depth = None
        if len(depth_stamps):
            j = int(np.argmin(np.abs(depth_stamps - stamps[k])))
            if abs(depth_stamps[j] - stamps[k]) <= MAX_DEPTH_GAP_S and depth_paths[j].is_file():
                depth = depth_paths[j]
            else:
                unpaired += 1
        frames.append(
            Frame(
                name=images[k].stem,
                image_path=images[k],
                pose=poses[k],
                camera=camera,
                depth_path=depth,
                depth_scale=DEPTH_SCALE,
                stamp_ns=int(round(stamps[k] * 1e9)),
            )
        )
    if not frames:
        raise DatasetError(
            f"{root}: no image lies within {trajectory.name}'s time span (or all fall in gaps over {MAX_POSE_GAP_S} s)"
        )
    if len(depth_stamps) and unpaired:
        # Depth is used only when every frame has it (the loss needs it everywhere or nowhere).
        frames = [dataclasses.replace(f, depth_path=None) for f in frames]
    dropped = len(images) - len(frames)
    note = f"; {dropped} image(s) outside the trajectory or in its gaps left out" if dropped else ""
    depth_note = f"; depth left out: {unpaired} image(s) have none within {MAX_DEPTH_GAP_S} s" if unpaired else ""
    return Dataset(
        root=root,
        layout="tum",
        splits={"train": frames, "test": frames},
        description=f"TUM sequence, poses from {trajectory.name}{note}{depth_note}",
    )

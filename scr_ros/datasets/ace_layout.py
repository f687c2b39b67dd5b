"""The ACE / DSAC* layout (Wayspots and the benchmarks as ACE's setup scripts write them).

::

    SCENE/train/rgb/NAME.png|.jpg          colour images
    SCENE/train/poses/NAME.txt             4x4 camera-to-world (OpenCV optical axes, metres)
    SCENE/train/calibration/NAME.txt       a focal length in pixels (principal point at the
                                           image centre), or a 3x3 calibration matrix
    SCENE/test/...                         the same for the query split

Frames are matched by name across the three folders; a missing or malformed file is named in
the error.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from ..geometry import PinholeCamera
from .base import Dataset, Frame, image_size, read_numbers, read_pose_file
from .posed_folder import IMAGE_SUFFIXES


def is_ace_layout(root: Path) -> bool:
    return all((root / "train" / d).is_dir() for d in ("rgb", "poses", "calibration"))


def _camera(calibration: Path, image: Path) -> PinholeCamera:
    values = read_numbers(calibration, (1, 9))
    w, h = image_size(image)
    if values.size == 1:
        fx = fy = float(values[0])
        cx, cy = w / 2.0, h / 2.0
    else:
        K = values.reshape(3, 3)
        fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    try:
        return PinholeCamera(fx, fy, cx, cy, w, h)
    except ValueError as exc:
        raise DatasetError(f"{calibration}: {exc}") from None


def _read_split(folder: Path) -> list[Frame]:
    for d in ("rgb", "poses", "calibration"):
        if not (folder / d).is_dir():
            raise DatasetError(f"{folder}: missing the {d}/ folder of the ACE layout")
    images = sorted(p for p in (folder / "rgb").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{folder / 'rgb'}: no images (.png / .jpg)")
    frames = []
    for img in images:
        name = img.stem
        camera = _camera(folder / "calibration" / f"{name}.txt", img)
        frames.append(Frame(name, img, read_pose_file(folder / "poses" / f"{name}.txt"), camera))
    return frames


def open_ace_layout(root: Path) -> Dataset:
    root = Path(root)
    if not (root / "test").is_dir():
        raise DatasetError(f"{root}: has train/ but no test/ split folder")
    return Dataset(root, "ace", {s: _read_split(root / s) for s in ("train", "test")}, description="ACE / DSAC* layout")

"""The plain posed-image folder: scr_ros's own layout, written by the mapping node and the
synthetic scene, and easy to produce from any source.

::

    ROOT/                       one set of frames ...
      rgb/NAME.png|.jpg         colour images
      poses/NAME.txt            4x4 camera-to-world matrix (OpenCV optical axes, metres)
      intrinsics.txt            "fx fy cx cy [width height]" shared by all frames, or
      intrinsics/NAME.txt       the same per frame (takes precedence)
      depth/NAME.png            optional, 16-bit millimetres, 0 = invalid
      meta/NAME.json            optional, {"stamp_ns": capture time, ...} (the mapping node's)
    ROOT/base_to_camera.txt     optional 4x4 T_base_cam: the camera's mount on a robot base
                                (REP-103 base_link), which scr bag convert writes to /tf_static
    ROOT/train/..., ROOT/test/...   ... or one such set per split

A flat folder has no splits: every split name selects all its frames.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..errors import DatasetError
from ..fileio import atomic_write_bytes, atomic_write_text
from ..geometry import PinholeCamera
from .base import Dataset, Frame, image_size, read_numbers, read_pose_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MOUNT_FILE = "base_to_camera.txt"


def is_posed_folder(root: Path) -> bool:
    return all((root / d).is_dir() for d in ("rgb", "poses")) or all(
        (root / "train" / d).is_dir() for d in ("rgb", "poses")
    )


def _camera(values: np.ndarray, first_image: Path, path: Path) -> PinholeCamera:
    if values.size == 6:
        w, h = int(values[4]), int(values[5])
    else:
        w, h = image_size(first_image)
    try:
        return PinholeCamera(*values[:4], w, h)
    except ValueError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def _read_set(folder: Path) -> list[Frame]:
    rgb_dir, pose_dir = folder / "rgb", folder / "poses"
    images = sorted(p for p in rgb_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{rgb_dir}: no images (.png / .jpg)")
    shared_path = folder / "intrinsics.txt"
    if not shared_path.is_file() and (folder.parent / "intrinsics.txt").is_file():
        shared_path = folder.parent / "intrinsics.txt"
    shared = _camera(read_numbers(shared_path, (4, 6)), images[0], shared_path) if shared_path.is_file() else None
    frames = []
    for img in images:
        name = img.stem
        own = folder / "intrinsics" / f"{name}.txt"
        if own.is_file():
            camera = _camera(read_numbers(own, (4, 6)), img, own)
        elif shared is not None:
            camera = shared
        else:
            raise DatasetError(f"no intrinsics for {img}: expected {own} or {folder / 'intrinsics.txt'}")
        depth = folder / "depth" / f"{name}.png"
        pose = read_pose_file(pose_dir / f"{name}.txt")
        frames.append(
            Frame(
                name,
                img,
                pose,
                camera,
                depth if depth.is_file() else None,
                stamp_ns=_stamp(folder / "meta" / f"{name}.json"),
            )
        )
    return frames


def _stamp(meta: Path) -> int | None:
    if not meta.is_file():
        return None
    try:
        stamp = json.loads(meta.read_text())["stamp_ns"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{meta}: not a frame metadata file with a stamp_ns ({exc})") from None
    if not isinstance(stamp, int) or stamp < 0:
        raise DatasetError(f"{meta}: stamp_ns must be a non-negative integer (nanoseconds), got {stamp!r}")
    return stamp


def open_posed_folder(root: Path) -> Dataset:
    root = Path(root)
    mount = read_pose_file(root / MOUNT_FILE) if (root / MOUNT_FILE).is_file() else None
    if (root / "train").is_dir():
        splits = {s: _read_set(root / s) for s in ("train", "test") if (root / s / "rgb").is_dir()}
        if "test" not in splits:
            raise DatasetError(f"{root}: has train/ but no test/ split folder")
        return Dataset(root, "posed-folder", splits, base_to_camera=mount)
    frames = _read_set(root)
    return Dataset(
        root,
        "posed-folder",
        {"train": frames, "test": frames},
        description="flat folder: every split is all frames",
        base_to_camera=mount,
    )


def write_frame(
    folder: Path,
    name: str,
    rgb: np.ndarray,
    T_world_cam: np.ndarray,
    depth_m: np.ndarray | None = None,
    camera: PinholeCamera | None = None,
) -> None:
    """Write one frame into a posed folder; ``camera`` also writes per-frame intrinsics.

    Each file is written atomically and the image goes last: the reader lists frames by their
    images, so a crash mid-frame leaves at most side files without an image, which it ignores.
    ``rgb`` is RGB (H, W, 3) or grey (H, W) uint8.
    """
    for d in (
        ("rgb", "poses") + (("depth",) if depth_m is not None else ()) + (("intrinsics",) if camera is not None else ())
    ):
        (folder / d).mkdir(parents=True, exist_ok=True)
    image = np.asarray(rgb)
    ok, png = cv2.imencode(
        ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image, [cv2.IMWRITE_PNG_COMPRESSION, 1]
    )
    if not ok:
        raise DatasetError(f"cannot encode image for frame {name}")
    if camera is not None:
        c = camera
        atomic_write_text(
            folder / "intrinsics" / f"{name}.txt", f"{c.fx:.6f} {c.fy:.6f} {c.cx:.6f} {c.cy:.6f} {c.width} {c.height}\n"
        )
    if depth_m is not None:
        mm = np.where(np.isfinite(depth_m), np.clip(np.round(depth_m * 1000.0), 0, 65535), 0).astype(np.uint16)
        ok, dpng = cv2.imencode(".png", mm, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        atomic_write_bytes(folder / "depth" / f"{name}.png", dpng.tobytes())
    atomic_write_text(
        folder / "poses" / f"{name}.txt", "\n".join(" ".join(f"{v:.9f}" for v in row) for row in T_world_cam) + "\n"
    )
    atomic_write_bytes(folder / "rgb" / f"{name}.png", png.tobytes())


def write_mount(folder: Path, T_base_cam: np.ndarray) -> None:
    """The camera's mount on a robot base (``base_to_camera.txt``: 4x4 T_base_cam, REP-103 base)."""
    atomic_write_text(folder / MOUNT_FILE, "\n".join(" ".join(f"{v:.9f}" for v in row) for row in T_base_cam) + "\n")


def write_intrinsics(folder: Path, camera: PinholeCamera) -> None:
    c = camera
    atomic_write_text(folder / "intrinsics.txt", f"{c.fx:.6f} {c.fy:.6f} {c.cx:.6f} {c.cy:.6f} {c.width} {c.height}\n")

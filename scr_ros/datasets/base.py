"""Frames, datasets, and the small parsers every reader shares.

A reader turns a folder into :class:`Frame` records: an image path, a camera-to-world pose,
intrinsics and optionally a depth path. Poses and file existence are checked when the dataset is
opened, so a broken folder fails at once with the offending file named; pixels are read lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import DatasetError
from ..geometry import InvalidPoseError, PinholeCamera, check_pose

SPLITS = ("train", "test", "all", "first-half", "second-half")
# Splits that cut every recorded sequence in two by time instead of taking the dataset's own split:
# a map from the first half of a walk is asked about the second half, which goes elsewhere.
HALF_SPLITS = ("first-half", "second-half")
# A split's every other frame: SPLIT/even from its first frame, SPLIT/odd from its second.
EVERY_OTHER = ("even", "odd")


@dataclass(frozen=True)
class Frame:
    """One posed image.

    ``pose`` is the 4x4 camera-to-world matrix (OpenCV optical axes, metres). ``depth_scale``
    converts stored depth values to metres (16-bit PNG in millimetres: 0.001). ``stamp_ns`` is
    the capture time when the dataset records one (nanoseconds since the epoch), else ``None``.
    """

    name: str
    image_path: Path
    pose: np.ndarray = field(repr=False)
    camera: PinholeCamera
    depth_path: Path | None = None
    depth_scale: float = 0.001
    depth_invalid: tuple[int, ...] = (0,)
    stamp_ns: int | None = None

    def load_image(self) -> np.ndarray:
        """RGB uint8 (H, W, 3); the image size must match the intrinsics."""
        img = cv2.imread(str(self.image_path), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"cannot decode image {self.image_path}")
        if (img.shape[1], img.shape[0]) != (self.camera.width, self.camera.height):
            raise DatasetError(
                f"{self.image_path}: image is {img.shape[1]}x{img.shape[0]} but its intrinsics are for "
                f"{self.camera.width}x{self.camera.height}"
            )
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def load_depth(self) -> np.ndarray | None:
        """Depth in metres, float32 (H, W), NaN where invalid; ``None`` without a depth file."""
        if self.depth_path is None:
            return None
        raw = cv2.imread(str(self.depth_path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.ndim != 2:
            raise DatasetError(f"cannot decode depth image {self.depth_path} (expected single-channel 16-bit PNG)")
        depth = raw.astype(np.float32) * self.depth_scale
        for value in self.depth_invalid:
            depth[raw == value] = np.nan
        return depth


@dataclass
class Dataset:
    """Frames of one scene, by split. ``layout`` names the reader that produced it."""

    root: Path
    layout: str
    splits: dict[str, list[Frame]]
    description: str = ""
    absent: dict[str, str] = field(default_factory=dict)  # split -> why this dataset lacks it
    # The camera's mount on a robot base, T_base_cam (4, 4), when the dataset records one.
    base_to_camera: np.ndarray | None = field(default=None, repr=False)

    def frames(self, split: str = "train") -> list[Frame]:
        """The frames of ``split``: a name of ``SPLITS`` (or the dataset's own), optionally with
        ``/even`` or ``/odd`` (every other frame of it, in its order, from the first or the
        second: frames to add to a map and the ones between them to query, ``scr map --add``)."""
        base, _, every_other = split.partition("/")
        if every_other:
            if every_other not in EVERY_OTHER:
                raise DatasetError(
                    f"split {split!r}: after the '/' give {' or '.join(EVERY_OTHER)} (every other frame), "
                    f"not {every_other!r}"
                )
            return self.frames(base)[EVERY_OTHER.index(every_other) :: 2]
        if split == "all":
            seen, out = set(), []
            for frames in self.splits.values():
                for f in frames:
                    if f.name not in seen:
                        seen.add(f.name)
                        out.append(f)
            return out
        if split in HALF_SPLITS:
            return self._half(split == "second-half")
        if split not in self.splits:
            why = f": {self.absent[split]}" if split in self.absent else ""
            raise DatasetError(
                f"{self.root}: no split {split!r} in this {self.layout} dataset (has "
                f"{', '.join(self.splits) or 'none'}){why}"
            )
        return list(self.splits[split])

    def _half(self, second: bool) -> list[Frame]:
        """The first or second half in time of every sequence (the name's folder part, e.g.
        ``seq-01`` of ``seq-01/frame-000000``), from all frames in name order (capture order for
        every reader here); refused where the dataset's splits are separate trajectories that reuse
        frame names (synthetic scenes, posed folders with train/ and test/)."""
        names: dict[str, int] = {}
        for frames in self.splits.values():
            for f in frames:
                names[f.name] = names.get(f.name, 0) + 1
        clash = [name for name, count in names.items() if count > 1]
        if clash:
            raise DatasetError(
                f"{self.root}: cannot split this {self.layout} dataset into halves: its splits are separate "
                f"trajectories with the same frame names (e.g. {clash[0]!r}); use train and test"
            )
        sequences: dict[str, list[Frame]] = {}
        for f in sorted(self.frames("all"), key=lambda f: f.name):
            sequences.setdefault(f.name.rpartition("/")[0], []).append(f)
        out = []
        for frames in sequences.values():
            cut = (len(frames) + 1) // 2
            out.extend(frames[cut:] if second else frames[:cut])
        return out

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}: {len(v)}" for k, v in self.splits.items())
        return f"Dataset({self.layout} at {self.root}, {sizes})"


# --------------------------------------------------------------------------------------------
# Parsers shared by readers: each error names the file.


def read_pose_file(path: Path) -> np.ndarray:
    """A 4x4 camera-to-world matrix stored as 16 whitespace-separated numbers (4 rows)."""
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1).reshape(-1)
    except FileNotFoundError:
        raise DatasetError(f"pose file missing: {path}") from None
    except ValueError as exc:
        raise DatasetError(f"{path}: not a 4x4 matrix of numbers ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"cannot read pose file {path}: {exc}") from None
    if values.size != 16:
        raise DatasetError(f"{path}: expected 16 numbers (a 4x4 matrix), found {values.size}")
    try:
        return check_pose(values.reshape(4, 4), what=str(path), tol=1e-3)
    except InvalidPoseError as exc:
        raise DatasetError(str(exc)) from None


def read_numbers(path: Path, count: int | tuple[int, ...]) -> np.ndarray:
    """All numbers in a small text file; ``count`` says how many are acceptable."""
    counts = (count,) if isinstance(count, int) else count
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1).reshape(-1)
    except FileNotFoundError:
        raise DatasetError(f"file missing: {path}") from None
    except ValueError as exc:
        raise DatasetError(f"{path}: cannot parse numbers ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if values.size not in counts:
        raise DatasetError(f"{path}: expected {' or '.join(map(str, counts))} numbers, found {values.size}")
    if not np.all(np.isfinite(values)):
        raise DatasetError(f"{path}: contains NaN or infinite values")
    return values


def _header_problem(path: Path, expected: tuple[int, int], depth: bool) -> str | None:
    """What is wrong with an image file judging by its header alone (None: nothing)."""
    from PIL import Image, UnidentifiedImageError

    if path.is_symlink() and not path.exists():
        return f"{path} is a dangling symbolic link"
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
    except FileNotFoundError:
        return f"{path} is missing"
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return f"{path} is not a readable image ({exc})"
    if size != expected:
        return f"{path} is {size[0]}x{size[1]} but the frame's intrinsics are for {expected[0]}x{expected[1]}"
    if depth and mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        return f"{path} is a {mode} image, not a single-channel 16-bit depth image"
    return None


def check_frames(frames: Sequence[Frame], what: str = "mapping frames") -> None:
    """Check every frame's image and depth files by their headers (exist, readable format, the
    size the intrinsics are for; depth single-channel 16-bit) before long work starts: about a
    millisecond a frame. Damage inside a file shows only when it is decoded; the mapper then skips
    that frame and records it. Raises DatasetError listing the first problems."""
    problems = []
    for f in frames:
        size = (f.camera.width, f.camera.height)
        problem = _header_problem(f.image_path, size, depth=False)
        if problem is None and f.depth_path is not None:
            problem = _header_problem(f.depth_path, size, depth=True)
        if problem:
            problems.append(f"{f.name}: {problem}")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DatasetError(f"{len(problems)} of {len(frames)} {what} are unusable: " + "; ".join(problems[:3]) + more)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, reading only what is needed to decode it."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot decode image {path}")
    return img.shape[1], img.shape[0]


def read_text(path: Path, what: str = "file") -> str:
    """A small text file's content; missing, unreadable or binary files are a DatasetError naming it."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise DatasetError(f"{what} missing: {path}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text file") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None


def require_file(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"file missing: {path}")
    return path

"""Stanford 12-Scenes (Valentin et al., 3DV 2016), official per-scene layout.

::

    SCENE/info.txt                          "key = value" lines; the colour camera's size and
                                            intrinsics are read from it (see below)
    SCENE/split.txt                         first line "sequence0 [frames=N]"
    SCENE/data/frame-000000.color.jpg       colour image (1296x968 in the release)
    SCENE/data/frame-000000.pose.txt        4x4 camera-to-world (OpenCV optical axes, metres)
    SCENE/data/frame-000000.depth.png       depth from a separate sensor

Intrinsics come from three keys of ``info.txt``: ``m_colorWidth``, ``m_colorHeight`` and
``m_calibrationColorIntrinsic``, a 4x4 matrix written row-major as 16 numbers, so that
``fx, cx, fy, cy`` are its entries 0, 2, 5 and 6. Other keys are ignored. (DSAC*'s setup script
averages fx and fy into one focal length and centres the principal point; here the calibrated
values are kept as they are.)

Split: the first recorded sequence is the query set. ``split.txt`` gives its length N on its first
line, so frames numbered below N are ``test`` and all later frames ``train`` -- the rule of the
benchmark and of the DSAC* / ACE setup scripts. The frame number is taken from the file name.

Where tracking failed, the released pose files hold non-finite values (``inf`` / ``nan``, possibly
in the ``-1.#INF`` spelling of the Windows C runtime). Those frames have no ground truth; they are
skipped, as the benchmark does, and counted in the dataset description. Any other malformed pose
file (wrong number of values, not a rotation) is an error that names the file.

The depth images come from a different camera (other resolution and intrinsics) and are not
registered to the colour images, so depth is not exposed here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..geometry import InvalidPoseError, PinholeCamera, check_pose
from .base import Dataset, Frame, read_text

INFO_KEYS = ("m_colorWidth", "m_colorHeight", "m_calibrationColorIntrinsic")

# Non-finite values as printed by various C runtimes: "inf", "-INF", "nan", "-1.#INF00", "1.#QNAN".
_NON_FINITE = re.compile(r"[+-]?(\d*\.?\d*#)?(inf(inity)?|nan|ind|qnan|snan)\d*", re.IGNORECASE)
_SPLIT_LINE = re.compile(r"\s*sequence\d+\s*\[\s*frames\s*=\s*(\d+)\s*\]", re.IGNORECASE)
_IMAGE_NAME = re.compile(r"frame-(\d+)\.color\.jpg")


def is_twelve_scenes(root: Path) -> bool:
    data = root / "data"
    if not data.is_dir():
        return False
    return (
        (root / "info.txt").is_file()
        or (root / "split.txt").is_file()
        or next(data.glob("frame-*.color.jpg"), None) is not None
    )


def _read_info(path: Path) -> PinholeCamera:
    entries: dict[str, tuple[int, str]] = {}
    for lineno, line in enumerate(read_text(path, "calibration file").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise DatasetError(f"{path}:{lineno}: expected a line like 'key = value', got {line.strip()!r}")
        entries.setdefault(key.strip(), (lineno, value.strip()))
    missing = [k for k in INFO_KEYS if k not in entries]
    if missing:
        raise DatasetError(f"{path}: missing {', '.join(missing)} (needed for the colour camera's intrinsics)")

    def numbers(key: str, count: int) -> np.ndarray:
        lineno, value = entries[key]
        try:
            values = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: {key} must be numbers, got {value!r}") from None
        if values.size != count or not np.all(np.isfinite(values)):
            raise DatasetError(f"{path}:{lineno}: {key} must be {count} finite number(s), got {value!r}")
        return values

    sizes = []
    for key in ("m_colorWidth", "m_colorHeight"):
        v = float(numbers(key, 1)[0])
        if v <= 0 or v != int(v):
            raise DatasetError(f"{path}:{entries[key][0]}: {key} must be a positive integer, got {entries[key][1]!r}")
        sizes.append(int(v))
    K = numbers("m_calibrationColorIntrinsic", 16)
    try:
        return PinholeCamera(float(K[0]), float(K[5]), float(K[2]), float(K[6]), sizes[0], sizes[1])
    except ValueError as exc:
        raise DatasetError(f"{path}:{entries['m_calibrationColorIntrinsic'][0]}: {exc}") from None


def _read_split(path: Path) -> int:
    text = read_text(path, "split file")
    first = text.splitlines()[0] if text.strip() else ""
    m = _SPLIT_LINE.match(first)
    if not m:
        raise DatasetError(f"{path}:1: expected a first line like 'sequence0 [frames=357]', got {first.strip()!r}")
    return int(m.group(1))


def _read_pose(path: Path) -> np.ndarray | None:
    """The camera-to-world matrix, or ``None`` when the file marks a tracking failure."""
    tokens = read_text(path, "pose file").split()
    if len(tokens) != 16:
        raise DatasetError(f"{path}: expected 16 numbers (a 4x4 matrix), found {len(tokens)} values")
    values = np.empty(16)
    for i, tok in enumerate(tokens):
        try:
            values[i] = float(tok)
        except ValueError:
            if not _NON_FINITE.fullmatch(tok):
                raise DatasetError(f"{path}: value {i + 1} is not a number: {tok!r}") from None
            values[i] = np.nan
    if not np.all(np.isfinite(values)):
        return None
    try:
        return check_pose(values.reshape(4, 4), what=str(path), tol=1e-3)
    except InvalidPoseError as exc:
        raise DatasetError(str(exc)) from None


def open_twelve_scenes(root: Path) -> Dataset:
    root = Path(root)
    camera = _read_info(root / "info.txt")
    n_test = _read_split(root / "split.txt")
    data = root / "data"
    images = []
    for img in sorted(data.glob("frame-*.color.jpg")):
        m = _IMAGE_NAME.fullmatch(img.name)
        if m:
            images.append((int(m.group(1)), img))
    if not images:
        raise DatasetError(f"{data}: no frame-XXXXXX.color.jpg images")
    splits: dict[str, list[Frame]] = {"train": [], "test": []}
    skipped = 0
    for index, img in images:
        stem = img.name[: -len(".color.jpg")]
        pose = _read_pose(data / f"{stem}.pose.txt")
        if pose is None:
            skipped += 1
            continue
        splits["test" if index < n_test else "train"].append(Frame(f"data/{stem}", img, pose, camera))
    for split, frames in splits.items():
        if not frames:
            raise DatasetError(
                f"{root / 'split.txt'}: the first {n_test} frames are the test split, which leaves no usable {split} "
                f"frames among the {len(images)} images in {data}"
            )
    return Dataset(
        root,
        "12scenes",
        splits,
        description=f"12-Scenes, test = frames below {n_test}, {skipped} frame(s) skipped for a non-finite pose",
    )

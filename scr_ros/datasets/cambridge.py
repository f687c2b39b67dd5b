"""Cambridge Landmarks (Kendall et al., PoseNet, ICCV 2015), official per-scene layout.

::

    SCENE/dataset_train.txt, dataset_test.txt   three header lines, then "IMAGE X Y Z W P Q R"
    SCENE/seq1/frame00001.png                   colour images (1920x1080 in the release)
    SCENE/reconstruction.nvm                    optional: the VisualSFM model (focal lengths)

Poses. On each line ``X Y Z`` is the camera centre in world coordinates and ``W P Q R`` the
quaternion (w, x, y, z) of the world-to-camera rotation, as VisualSFM stores it. The
camera-to-world pose is therefore ``[[R(q)^T, c], [0, 0, 0, 1]]``. This is how the DSAC* and ACE
setup scripts (``datasets/setup_cambridge.py``) read the files: they build ``[R(q) | -R(q) c]``
and write its inverse as the camera-to-world pose. The quaternion is normalized; a zero or
non-finite one is an error naming the file and line. Lines whose camera centre lies more than
10 km from the origin are broken reconstructions: they are skipped, as those scripts skip them,
and counted in the dataset description.

Focal length. ``reconstruction.nvm`` (NVM_V3) lists one camera per line after the header and a
camera count: ``NAME FOCAL QW QX QY QZ CX CY CZ RADIAL 0``. Its image names end in ``.jpg`` while
the released images are ``.png``, so frames are matched by path without extension. The NVM
focal length is in pixels of the released 1920-pixel-wide frames: the DSAC* / ACE setup scripts
use it unchanged for the full-size image and multiply it by ``new_width / 1920`` when they resize
the images (to 480 px high). The same scaling is applied here, ``focal * W / nvm_width`` with
``W`` the width of the images found on disk, so folders of resized copies also get consistent
intrinsics.

Frames that are not in the NVM (some official lines are not), or every frame when there is no
NVM, get a default focal length. Unless ``focal=`` is given (in pixels of the images on disk),
it is ``DEFAULT_FOCAL_1920 = 1670`` px at 1920 px width, scaled the same way. That figure is an
**approximation**, not a calibration: it is the order of the NVM values for these phone videos
(about 60 degrees of horizontal field of view, and the value a public PoseNet evaluation script
falls back to for King's College), but it was not checked against each scene's NVM file.

The principal point is the image centre and there is no lens distortion (the NVM's radial term
is ignored). The image size is read from the first image of the dataset.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DatasetError
from ..geometry import PinholeCamera, make_pose, quaternion_to_matrix
from .base import Dataset, Frame, image_size, read_text

SPLIT_FILES = {"train": "dataset_train.txt", "test": "dataset_test.txt"}
HEADER_LINES = 3
NVM_WIDTH = 1920.0  # width of the released frames, the pixels NVM focal lengths are measured in
DEFAULT_FOCAL_1920 = 1670.0  # approximate focal length at 1920 px width (see the module docstring)
MAX_CENTRE_DISTANCE = 10_000.0  # metres; farther camera centres are reconstruction outliers


def is_cambridge(root: Path) -> bool:
    return any((root / f).is_file() for f in SPLIT_FILES.values())


def _key(name: str) -> str:
    """An image name without extension, with '/' separators: how NVM and list files are matched."""
    return str(PurePosixPath(name.replace("\\", "/")).with_suffix(""))


def read_nvm_focals(path: Path) -> dict[str, float]:
    """Focal length (pixels) per image of an NVM_V3 file's first model, keyed by :func:`_key`."""
    lines = [(n, line.strip()) for n, line in enumerate(read_text(path, "NVM file").splitlines(), 1) if line.strip()]
    if not lines or not lines[0][1].startswith("NVM_V3"):
        raise DatasetError(f"{path}:1: not an NVM_V3 file (the first line must start with NVM_V3)")
    if len(lines) < 2:
        raise DatasetError(f"{path}: ends before the camera count")
    lineno, text = lines[1]
    try:
        count = int(text.split()[0])
    except ValueError:
        raise DatasetError(f"{path}:{lineno}: expected the number of cameras, got {text!r}") from None
    if count < 0 or len(lines) < 2 + count:
        raise DatasetError(
            f"{path}:{lineno}: announces {count} cameras, but the file has only {len(lines) - 2} more lines"
        )
    focals: dict[str, float] = {}
    for lineno, text in lines[2 : 2 + count]:
        fields = text.split()
        if len(fields) < 10:
            raise DatasetError(
                f"{path}:{lineno}: a camera line needs 'NAME FOCAL QW QX QY QZ CX CY CZ RADIAL', got {len(fields)} "
                "fields"
            )
        try:
            focal = float(fields[1])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: focal length is not a number: {fields[1]!r}") from None
        if not np.isfinite(focal) or focal <= 0:
            raise DatasetError(f"{path}:{lineno}: focal length must be positive and finite, got {fields[1]!r}")
        focals.setdefault(_key(fields[0]), focal)
    return focals


def _read_list(path: Path, root: Path) -> list[tuple[str, Path, np.ndarray]]:
    """(name, image path, camera-to-world pose) for each pose line of a dataset_*.txt file."""
    lines = read_text(path, "image list").splitlines()
    if len(lines) < HEADER_LINES:
        raise DatasetError(f"{path}: shorter than its {HEADER_LINES} header lines")
    entries = []
    for lineno, line in enumerate(lines[HEADER_LINES:], HEADER_LINES + 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 8:
            raise DatasetError(f"{path}:{lineno}: expected 'IMAGE X Y Z W P Q R' (8 fields), got {len(fields)}")
        try:
            values = np.array([float(v) for v in fields[1:]], dtype=np.float64)
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: pose values must be numbers, got {' '.join(fields[1:])!r}") from None
        if not np.all(np.isfinite(values[:3])):
            raise DatasetError(f"{path}:{lineno}: camera position is not finite")
        w, x, y, z = values[3:]
        try:
            R_cam_world = quaternion_to_matrix(np.array([x, y, z, w]))
        except ValueError:
            raise DatasetError(
                f"{path}:{lineno}: quaternion (w, x, y, z) = {values[3:].tolist()} is not a rotation"
            ) from None
        image = root / fields[0]
        if not image.is_file():
            raise DatasetError(f"{path}:{lineno}: lists {fields[0]}, but {image} does not exist")
        entries.append((_key(fields[0]), image, make_pose(R_cam_world.T, values[:3])))
    return entries


def open_cambridge(root: Path, focal: float | None = None, nvm_width: float = NVM_WIDTH) -> Dataset:
    """Read a Cambridge Landmarks scene.

    ``focal`` (pixels of the images on disk) replaces the approximate default for frames without
    an NVM focal length; ``nvm_width`` is the image width the NVM focal lengths refer to.
    """
    root = Path(root)
    if focal is not None and not (np.isfinite(focal) and focal > 0):
        raise ValueError(f"focal must be a positive number of pixels, got {focal!r}")
    if not (np.isfinite(nvm_width) and nvm_width > 0):
        raise ValueError(f"nvm_width must be a positive number of pixels, got {nvm_width!r}")
    lists = {split: _read_list(root / fname, root) for split, fname in SPLIT_FILES.items()}
    nvm = root / "reconstruction.nvm"
    focals = read_nvm_focals(nvm) if nvm.is_file() else {}
    first = next((e[1] for entries in lists.values() for e in entries), None)
    if first is None:
        raise DatasetError(f"{root / SPLIT_FILES['train']} and {root / SPLIT_FILES['test']} list no images")
    width, height = image_size(first)
    scale = width / float(nvm_width)
    default_focal = DEFAULT_FOCAL_1920 * width / NVM_WIDTH if focal is None else float(focal)
    cameras: dict[float, PinholeCamera] = {}

    def camera(f: float) -> PinholeCamera:
        if f not in cameras:
            try:
                cameras[f] = PinholeCamera(f, f, width / 2.0, height / 2.0, width, height)
            except ValueError as exc:
                raise DatasetError(f"{root}: {exc}") from None
        return cameras[f]

    splits: dict[str, list[Frame]] = {}
    from_nvm = defaulted = outliers = 0
    for split, entries in lists.items():
        frames = []
        for name, image, pose in entries:
            if np.linalg.norm(pose[:3, 3]) > MAX_CENTRE_DISTANCE:
                outliers += 1
                continue
            if name in focals:
                from_nvm += 1
                f = focals[name] * scale
            else:
                defaulted += 1
                f = default_focal
            frames.append(Frame(name, image, pose, camera(f)))
        if not frames:
            raise DatasetError(f"{root / SPLIT_FILES[split]}: lists no usable images")
        splits[split] = frames
    default_text = f"{default_focal:g} px" + (" (approximate)" if focal is None else "")
    description = (
        f"Cambridge Landmarks, {width}x{height}: focal from {nvm.name} for {from_nvm} frame(s), "
        f"default {default_text} for {defaulted}; {outliers} outlier pose(s) skipped"
    )
    return Dataset(root, "cambridge", splits, description=description)

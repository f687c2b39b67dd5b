"""Dataset folders written on the fly in each layout the readers take, for the reader tests
(test_datasets.py, test_benchmark_readers.py)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from scr_ros.errors import DatasetError


def random_pose(rng) -> np.ndarray:
    q = rng.normal(size=4)
    R, _ = cv2.Rodrigues(q[:3] / np.linalg.norm(q[:3]) * rng.uniform(0.1, 3.0))
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = rng.uniform(-3, 3, size=3)
    return T


def write_pose(path: Path, T: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(f"{v:.12e}" for v in row) for row in T) + "\n")


def write_image(path: Path, width: int, height: int, rgb=(40, 90, 200)) -> None:
    """An RGB image (written as BGR by OpenCV) with a constant colour and a diagonal line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = rgb[::-1]
    cv2.line(img, (0, 0), (width - 1, height - 1), (255, 255, 255), 1)
    assert cv2.imwrite(str(path), img)


def raises_naming(path: Path, fn, *args):
    """Call fn(*args); it must raise DatasetError whose message contains ``path``."""
    with pytest.raises(DatasetError) as info:
        fn(*args)
    assert str(path) in str(info.value), str(info.value)
    return str(info.value)


def make_seven_scenes(root: Path, rng, size=(640, 480)):
    (root / "TrainSplit.txt").write_text("sequence1\n\n")
    (root / "TestSplit.txt").write_text("Sequence2\n")
    poses = {}
    for seq, n in (("seq-01", 3), ("seq-02", 2)):
        for i in range(n):
            stem = f"frame-{i:06d}"
            write_image(root / seq / f"{stem}.color.png", *size)
            poses[f"{seq}/{stem}"] = random_pose(rng)
            write_pose(root / seq / f"{stem}.pose.txt", poses[f"{seq}/{stem}"])
    return poses


def make_posed_set(folder: Path, rng, names, size=(48, 32)):
    poses = {}
    for name in names:
        write_image(folder / "rgb" / f"{name}.png", *size)
        poses[name] = random_pose(rng)
        write_pose(folder / "poses" / f"{name}.txt", poses[name])
    return poses


def make_fragments(root: Path, rng, counts=(("frag-a", 12), ("frag-b", 7)), size=(40, 30)):
    K = np.array([[45.0, 0.0, 19.5], [0.0, 46.0, 14.5], [0.0, 0.0, 1.0]])
    (root / "camera-intrinsics.txt").write_text("\n".join("\t".join(f"{v:.8e}" for v in row) for row in K) + "\n")
    poses, depths = {}, {}
    for frag, n in counts:
        d = root / f"{frag}-rgbd-frames"
        for i in range(n):
            stem = f"frame-{935 + i:06d}"  # numbering need not start at 0
            write_image(d / f"{stem}.color.png", *size)
            poses[f"{frag}-rgbd-frames/{stem}"] = random_pose(rng)
            write_pose(d / f"{stem}.pose.txt", poses[f"{frag}-rgbd-frames/{stem}"])
            mm = rng.integers(300, 5000, size=(size[1], size[0])).astype(np.uint16)
            mm[rng.random(mm.shape) < 0.2] = 0
            assert cv2.imwrite(str(d / f"{stem}.depth.png"), mm)
            depths[f"{frag}-rgbd-frames/{stem}"] = mm
    return K, poses, depths


def make_ace_scene(root: Path, rng, focal_as_matrix=False):
    poses = {}
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            name = f"seq1_frame{i:05d}"
            T = random_pose(rng)
            poses[(split, name)] = T
            write_image(root / split / "rgb" / f"{name}.jpg", 64, 48)
            write_pose(root / split / "poses" / f"{name}.txt", T)
            calib = root / split / "calibration" / f"{name}.txt"
            calib.parent.mkdir(parents=True, exist_ok=True)
            calib.write_text("55.5 0 30.0\n0 56.5 25.0\n0 0 1\n" if focal_as_matrix else "55.5\n")
    return poses

"""12-Scenes and Cambridge Landmarks readers on tiny hand-made scene folders.

Each fixture is written the way the official release stores it, from known camera-to-world poses,
so the tests pin down the pose convention (and the pixel a known world point must land on), the
intrinsics, the splits, the frames that are skipped, and the refusal of broken folders.
"""

from pathlib import Path

import numpy as np
import pytest
import transforms3d.quaternions as tq
from dataset_folders import (
    make_ace_scene,
    make_fragments,
    make_posed_set,
    make_seven_scenes,
    raises_naming,
    write_image,
    write_pose,
)

from scr_ros.datasets import LAYOUTS, open_dataset
from scr_ros.datasets.cambridge import open_cambridge
from scr_ros.datasets.twelvescenes import open_twelve_scenes
from scr_ros.geometry import look_at_rotation, project_world_points


def detected(root: Path) -> list[str]:
    return [name for name, detect, _ in LAYOUTS if detect(root)]


def looking_pose(rng) -> np.ndarray:
    """A camera-to-world pose built from its optical axes (x right, y down, z forward)."""
    T = np.eye(4)
    T[:3, :3] = look_at_rotation(rng.normal(size=3) + np.array([0.0, 0.0, 0.2]), roll_rad=rng.uniform(-0.5, 0.5))
    T[:3, 3] = rng.uniform(-20, 20, size=3)
    return T


def assert_projects_as_expected(pose: np.ndarray, camera, T_true: np.ndarray) -> None:
    """A world point 5 m ahead, 0.5 m right and 0.25 m up of the true camera lands where a
    pinhole camera with these intrinsics must put it."""
    right, down, forward, centre = T_true[:3, 0], T_true[:3, 1], T_true[:3, 2], T_true[:3, 3]
    points = np.stack([centre + 5.0 * forward, centre + 5.0 * forward + 0.5 * right - 0.25 * down])
    px, depth = project_world_points(points, pose, camera)
    np.testing.assert_allclose(depth, [5.0, 5.0], atol=1e-9)
    np.testing.assert_allclose(px[0], [camera.width / 2.0, camera.height / 2.0], atol=1e-9)
    np.testing.assert_allclose(
        px[1], [camera.width / 2.0 + camera.fx * 0.1, camera.height / 2.0 - camera.fy * 0.05], atol=1e-9
    )


# --------------------------------------------------------------------------------------------
# 12-Scenes

INFO = """m_versionNumber = 4
m_sensorName = StructureSensor
m_colorWidth = 64
m_colorHeight = 48
m_depthWidth = 32
m_depthHeight = 24
m_depthShift = 1000
m_calibrationColorIntrinsic = 58.5 0 31.25 0 0 57.5 23.75 0 0 0 1 0 0 0 0 1
m_calibrationColorExtrinsic = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1
m_calibrationDepthIntrinsic = 29 0 16 0 0 29 12 0 0 0 1 0 0 0 0 1
m_calibrationDepthExtrinsic = 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1
m_frames.size = 7
"""

# Tracking failures as the release and other C runtimes print them.
FAILED_POSES = {
    1: "-INF -INF -INF -INF\n-INF -INF -INF -INF\n-INF -INF -INF -INF\n-INF -INF -INF -INF\n",
    5: "-1.#INF00 0 0 0\n0 1.#QNAN0 0 0\n0 0 -1.#IND00 nan\n0 0 0 inf\n",
}


def make_twelve_scenes(root: Path, rng, n_frames=7, n_test=3):
    (root / "info.txt").write_text(INFO)
    (root / "split.txt").write_text(f"sequence0 [frames={n_test}]\nsequence1 [frames={n_frames - n_test}]\n")
    data = root / "data"
    poses = {}
    for i in range(n_frames):
        stem = f"frame-{i:06d}"
        write_image(data / f"{stem}.color.jpg", 64, 48)
        (data / f"{stem}.depth.png").write_bytes(b"depth from another camera, never read")
        if i in FAILED_POSES:
            (data / f"{stem}.pose.txt").write_text(FAILED_POSES[i])
        else:
            poses[f"data/{stem}"] = looking_pose(rng)
            write_pose(data / f"{stem}.pose.txt", poses[f"data/{stem}"])
    return poses


def test_twelve_scenes(tmp_path, rng):
    poses = make_twelve_scenes(tmp_path, rng)
    assert detected(tmp_path) == ["12scenes"]
    ds = open_dataset(tmp_path)
    assert ds.layout == "12scenes"
    # split.txt says the first sequence has 3 frames: frames 0..2 are queries; 1 and 5 have no pose
    assert [f.name for f in ds.frames("test")] == ["data/frame-000000", "data/frame-000002"]
    assert [f.name for f in ds.frames("train")] == ["data/frame-000003", "data/frame-000004", "data/frame-000006"]
    assert "2 frame(s) skipped" in ds.description
    for f in ds.frames("all"):
        np.testing.assert_allclose(f.pose, poses[f.name], atol=1e-9)  # camera-to-world, as stored
        assert f.image_path == tmp_path / f"{f.name}.color.jpg"
        assert f.depth_path is None  # not registered to the colour camera
        c = f.camera
        assert (c.fx, c.fy, c.cx, c.cy, c.width, c.height) == (58.5, 57.5, 31.25, 23.75, 64, 48)
    f = ds.frames("train")[0]
    X_cam = np.array([[0.3, -0.2, 2.0]])
    px, depth = project_world_points(poses[f.name][:3, :3] @ X_cam[0] + poses[f.name][:3, 3][None], f.pose, f.camera)
    np.testing.assert_allclose(px[0], [58.5 * 0.15 + 31.25, 57.5 * -0.1 + 23.75], atol=1e-9)
    assert f.load_image().shape == (48, 64, 3)


def test_twelve_scenes_split_follows_frame_numbers(tmp_path, rng):
    make_twelve_scenes(tmp_path, rng)
    (tmp_path / "split.txt").write_text("sequence0 [frames=5]\n")
    ds = open_twelve_scenes(tmp_path)
    assert [f.name[-1] for f in ds.frames("test")] == ["0", "2", "3", "4"]
    assert [f.name[-1] for f in ds.frames("train")] == ["6"]


def test_twelve_scenes_missing_info(tmp_path, rng):
    make_twelve_scenes(tmp_path, rng)
    (tmp_path / "info.txt").unlink()
    assert detected(tmp_path) == ["12scenes"]  # still recognized, so the message names info.txt
    raises_naming(tmp_path / "info.txt", open_dataset, tmp_path)


@pytest.mark.parametrize(
    "edit, where",
    [
        (lambda s: s.replace("m_depthShift = 1000", "m_depthShift 1000"), ":7"),  # no '='
        (lambda s: s.replace("m_colorWidth = 64\n", ""), "m_colorWidth"),  # missing key
        (
            lambda s: s.replace("m_calibrationColorIntrinsic", "m_calibrationColorIntrinsics"),
            "m_calibrationColorIntrinsic",
        ),
        (lambda s: s.replace("58.5 0 31.25 0", "58.5 0 31.25"), ":8"),  # 15 numbers
        (lambda s: s.replace("58.5 0 31.25 0", "58.5 0 nan 0"), ":8"),
        (lambda s: s.replace("58.5 0 31.25 0", "0 0 31.25 0"), ":8"),  # zero focal length
        (lambda s: s.replace("m_colorHeight = 48", "m_colorHeight = 48.5"), ":4"),
        (lambda s: s.replace("m_colorWidth = 64", "m_colorWidth = wide"), ":3"),
    ],
)
def test_twelve_scenes_bad_info(tmp_path, rng, edit, where):
    make_twelve_scenes(tmp_path, rng, n_frames=4, n_test=1)
    info = tmp_path / "info.txt"
    info.write_text(edit(INFO))
    assert where in raises_naming(info, open_dataset, tmp_path)


@pytest.mark.parametrize(
    "content", ["", "\n", "sequence0\n", "[frames=3]\n", "sequence0 [frames=three]\n", "frames=3 sequence0\n"]
)
def test_twelve_scenes_bad_split(tmp_path, rng, content):
    make_twelve_scenes(tmp_path, rng, n_frames=4, n_test=1)
    split = tmp_path / "split.txt"
    split.write_text(content)
    assert ":1" in raises_naming(split, open_dataset, tmp_path)


def test_twelve_scenes_split_leaves_a_split_empty(tmp_path, rng):
    make_twelve_scenes(tmp_path, rng, n_frames=4, n_test=1)
    split = tmp_path / "split.txt"
    split.write_text("sequence0 [frames=4]\n")
    assert "train" in raises_naming(split, open_dataset, tmp_path)
    split.write_text("sequence0 [frames=0]\n")
    assert "test" in raises_naming(split, open_dataset, tmp_path)
    split.unlink()
    raises_naming(split, open_dataset, tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        "1 0 0 0\n0 1 0 0\n0 0 1 0\n",  # 12 values
        "-inf -inf -inf -inf\n-inf -inf -inf -inf\n-inf -inf -inf -inf\n",  # 12 values, even if all -inf
        "1 0 0 0\n0 1 0 0\n0 0 one 0\n0 0 0 1\n",  # not a number
        "1 0.2 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n",  # not a rotation
        "-1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n",  # reflection
        "\x00\xff garbage",
    ],
)
def test_twelve_scenes_bad_pose(tmp_path, rng, content):
    make_twelve_scenes(tmp_path, rng, n_frames=4, n_test=1)
    bad = tmp_path / "data" / "frame-000002.pose.txt"
    bad.write_text(content)
    raises_naming(bad, open_dataset, tmp_path)


def test_twelve_scenes_missing_pose_or_images(tmp_path, rng):
    make_twelve_scenes(tmp_path, rng, n_frames=4, n_test=1)
    bad = tmp_path / "data" / "frame-000003.pose.txt"
    bad.unlink()
    raises_naming(bad, open_dataset, tmp_path)
    for img in (tmp_path / "data").glob("*.color.jpg"):
        img.unlink()
    raises_naming(tmp_path / "data", open_dataset, tmp_path)


# --------------------------------------------------------------------------------------------
# Cambridge Landmarks

HEADER = "Cambridge Landmarks Dataset V1\nImageFile, Camera Position [X Y Z W P Q R]\n\n"


def cambridge_line(name: str, T: np.ndarray, q_factor: float = 1.0) -> str:
    """The release's line for camera-to-world pose T: centre, then the world-to-camera quaternion."""
    q = tq.mat2quat(T[:3, :3].T) * q_factor  # (w, x, y, z), any non-zero scale or sign
    return f"{name} " + " ".join(f"{v:.15g}" for v in (*T[:3, 3], *q))


def make_cambridge(root: Path, rng, nvm=True, size=(64, 36)):
    poses = {}
    lines = {"train": [], "test": []}
    for split, seq, n in (("train", "seq1", 3), ("test", "seq2", 2)):
        for i in range(n):
            name = f"{seq}/frame{i + 1:05d}"
            write_image(root / f"{name}.png", *size)
            poses[name] = looking_pose(rng)
            lines[split].append(cambridge_line(f"{name}.png", poses[name], q_factor=(-2.5 if i == 1 else 1.0)))
    for split in lines:
        (root / f"dataset_{split}.txt").write_text(HEADER + "\n".join(lines[split]) + "\n")
    if nvm:
        # seq1/frame00002 is not in the reconstruction; the others have focal 1500 px at 1920 px wide
        cams = [n for n in poses if n != "seq1/frame00002"]
        body = "".join(f"{n}.jpg 1500 1 0 0 0 0 0 0 0.001 0\n" for n in cams)
        (root / "reconstruction.nvm").write_text(f"NVM_V3 \n\n{len(cams)}\n{body}\n0\n\n0\n")
    return poses


def test_cambridge(tmp_path, rng):
    poses = make_cambridge(tmp_path, rng)
    assert detected(tmp_path) == ["cambridge"]
    ds = open_dataset(tmp_path)
    assert ds.layout == "cambridge"
    assert [f.name for f in ds.frames("train")] == ["seq1/frame00001", "seq1/frame00002", "seq1/frame00003"]
    assert [f.name for f in ds.frames("test")] == ["seq2/frame00001", "seq2/frame00002"]
    for f in ds.frames("all"):
        np.testing.assert_allclose(f.pose, poses[f.name], atol=1e-9)
        assert f.image_path == tmp_path / f"{f.name}.png"
        c = f.camera
        assert (c.cx, c.cy, c.width, c.height) == (32.0, 18.0, 64, 36)  # size read from the image
        # NVM focal 1500 px refers to 1920 px wide frames: 1500 * 64 / 1920 = 50
        expected = 1670.0 * 64 / 1920 if f.name == "seq1/frame00002" else 50.0
        assert c.fx == pytest.approx(expected, abs=1e-12) and c.fy == c.fx
        assert_projects_as_expected(f.pose, c, poses[f.name])
        assert f.load_image().shape == (36, 64, 3)
    assert "for 4 frame(s)" in ds.description and "for 1" in ds.description and "approximate" in ds.description


def test_cambridge_focal_options(tmp_path, rng):
    make_cambridge(tmp_path, rng)
    ds = open_cambridge(tmp_path, focal=40.0, nvm_width=64)
    focals = {f.name: f.camera.fx for f in ds.frames("all")}
    assert focals.pop("seq1/frame00002") == 40.0  # not in the NVM: the given focal, as is
    assert set(focals.values()) == {1500.0}  # the NVM was made at this resolution: unscaled
    assert "approximate" not in ds.description
    with pytest.raises(ValueError):
        open_cambridge(tmp_path, focal=0.0)


def test_cambridge_without_nvm(tmp_path, rng):
    poses = make_cambridge(tmp_path, rng, nvm=False, size=(96, 54))
    ds = open_dataset(tmp_path)
    for f in ds.frames("all"):
        assert f.camera.fx == pytest.approx(1670.0 * 96 / 1920, abs=1e-12)
        assert (f.camera.cx, f.camera.cy) == (48.0, 27.0)
        assert_projects_as_expected(f.pose, f.camera, poses[f.name])
    assert "for 0 frame(s)" in ds.description and "approximate" in ds.description


def test_cambridge_skips_outlier_centres(tmp_path, rng):
    make_cambridge(tmp_path, rng)
    T = looking_pose(rng)
    T[:3, 3] = [3e4, -1e5, 2.0]
    listing = tmp_path / "dataset_test.txt"
    listing.write_text(listing.read_text() + cambridge_line("seq1/frame00001.png", T) + "\n\n")
    ds = open_dataset(tmp_path)
    assert len(ds.frames("test")) == 2 and "1 outlier pose(s) skipped" in ds.description


@pytest.mark.parametrize(
    "line, what",
    [
        ("seq1/frame00001.png 1 2 3 1 0 0", "8 fields"),
        ("seq1/frame00001.png 1 2 3 1 0 0 0 0", "8 fields"),
        ("seq1/frame00001.png 1 2 x 1 0 0 0", "numbers"),
        ("seq1/frame00001.png 1 2 3 0 0 0 0", "quaternion"),
        ("seq1/frame00001.png 1 2 3 nan 0 0 1", "quaternion"),
        ("seq1/frame00001.png 1 inf 3 1 0 0 0", "position"),
        ("seq1/frame00009.png 1 2 3 1 0 0 0", "frame00009.png"),  # the image does not exist
    ],
)
def test_cambridge_bad_list_line(tmp_path, rng, line, what):
    make_cambridge(tmp_path, rng)
    listing = tmp_path / "dataset_train.txt"
    listing.write_text(listing.read_text() + line + "\n")
    msg = raises_naming(listing, open_dataset, tmp_path)
    assert ":7" in msg and what in msg  # 3 header lines + 3 good lines, then the bad one


def test_cambridge_missing_files(tmp_path, rng):
    make_cambridge(tmp_path, rng)
    (tmp_path / "dataset_test.txt").unlink()
    assert detected(tmp_path) == ["cambridge"]
    raises_naming(tmp_path / "dataset_test.txt", open_dataset, tmp_path)
    make_cambridge(tmp_path, rng)
    (tmp_path / "seq2" / "frame00002.png").unlink()
    msg = raises_naming(tmp_path / "dataset_test.txt", open_dataset, tmp_path)
    assert str(tmp_path / "seq2" / "frame00002.png") in msg


@pytest.mark.parametrize(
    "content, where",
    [
        ("NVM_V2\n\n1\nseq1/frame00001.jpg 1500 1 0 0 0 0 0 0 0 0\n", ":1"),
        ("NVM_V3\n\nmany\n", ":3"),
        ("NVM_V3\n\n3\nseq1/frame00001.jpg 1500 1 0 0 0 0 0 0 0 0\n", ":3"),  # fewer cameras than announced
        ("NVM_V3\n\n1\nseq1/frame00001.jpg 1500 1 0 0 0\n", ":4"),
        ("NVM_V3\n\n1\nseq1/frame00001.jpg -1500 1 0 0 0 0 0 0 0 0\n", ":4"),
        ("NVM_V3\n\n1\nseq1/frame00001.jpg f 1 0 0 0 0 0 0 0 0\n", ":4"),
    ],
)
def test_cambridge_bad_nvm(tmp_path, rng, content, where):
    make_cambridge(tmp_path, rng)
    nvm = tmp_path / "reconstruction.nvm"
    nvm.write_text(content)
    assert where in raises_naming(nvm, open_dataset, tmp_path)


# --------------------------------------------------------------------------------------------
# Detection: each detector recognizes its own layout only


def test_detectors_are_specific(tmp_path, rng):
    builders = {
        "7scenes": lambda d: make_seven_scenes(d, rng, size=(32, 24)),
        "ace": lambda d: make_ace_scene(d, rng),
        "rgbd-fragments": lambda d: make_fragments(d, rng, counts=(("frag-a", 2),)),
        "posed-folder": lambda d: make_posed_set(d, rng, ["a"]),
        "12scenes": lambda d: make_twelve_scenes(d, rng, n_frames=2, n_test=1),
        "cambridge": lambda d: make_cambridge(d, rng),
    }
    for name, build in builders.items():
        folder = tmp_path / name
        folder.mkdir()
        build(folder)
        found = detected(folder)
        assert found[0] == name, (name, found)
        assert "12scenes" not in found[1:] and "cambridge" not in found[1:], (name, found)
    empty = tmp_path / "empty"
    (empty / "data").mkdir(parents=True)
    assert detected(empty) == []
    write_pose(empty / "data" / "frame-000000.pose.txt", np.eye(4))
    assert detected(empty) == []  # a pose file alone is not a 12-Scenes scene

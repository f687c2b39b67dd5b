"""Dataset readers on tiny hand-made folders, and their refusals of broken ones."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from dataset_folders import (
    make_ace_scene,
    make_fragments,
    make_posed_set,
    make_seven_scenes,
    raises_naming,
    write_image,
)

from scr_ros.datasets import open_dataset
from scr_ros.errors import DatasetError

# --------------------------------------------------------------------------------------------
# Fixture builders


# --------------------------------------------------------------------------------------------
# 7-Scenes


def test_seven_scenes(tmp_path, rng):
    poses = make_seven_scenes(tmp_path, rng)
    ds = open_dataset(tmp_path)
    assert ds.layout == "7scenes"
    train, test = ds.frames("train"), ds.frames("test")
    assert [f.name for f in train] == ["seq-01/frame-000000", "seq-01/frame-000001", "seq-01/frame-000002"]
    assert [f.name for f in test] == ["seq-02/frame-000000", "seq-02/frame-000001"]
    assert len(ds.frames("all")) == 5
    for f in train + test:
        np.testing.assert_allclose(f.pose, poses[f.name], atol=1e-10)  # camera-to-world, as stored
        assert f.image_path == tmp_path / f"{f.name}.color.png"
        assert f.depth_path is None
        c = f.camera
        assert (c.fx, c.fy) == (525.0, 525.0)
        assert (c.width, c.height) == (640, 480)
        # The customary 7-Scenes principal point: the image centre (W/2, H/2).
        assert (c.cx, c.cy) == (320.0, 240.0)
    img = train[0].load_image()
    assert img.shape == (480, 640, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[240, 100], [40, 90, 200])  # RGB, not BGR
    with pytest.raises(DatasetError, match="no split"):
        ds.frames("validation")


def test_seven_scenes_missing_pose(tmp_path, rng):
    make_seven_scenes(tmp_path, rng)
    bad = tmp_path / "seq-02" / "frame-000001.pose.txt"
    bad.unlink()
    raises_naming(bad, open_dataset, tmp_path)


@pytest.mark.parametrize(
    "content",
    [
        "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0\n",  # 15 numbers, ragged rows
        "1 0 0 0 0 1 0 0 0 0 1 0 0 0 0\n",  # 15 numbers on one line
        "1 0 0 0 0\n1 0 0 0 0\n1 0 0 0 0\n",  # 15 numbers, 3 rows of 5
        "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n0 0 0 1\n",  # 20 numbers
        "1 0 0 0\n0 1 0 0\n0 0 one 0\n0 0 0 1\n",  # not a number
        pytest.param("", marks=pytest.mark.filterwarnings("ignore:loadtxt")),  # empty
        "\x00\xff\xfe garbage \x80\x81",  # not text
        "1 0 0 0\n0 1 0 0\n0 0 1 nan\n0 0 0 1\n",  # NaN
        "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 inf\n",  # inf
        "1 0.2 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n",  # not orthonormal
        "2 0 0 0\n0 2 0 0\n0 0 2 0\n0 0 0 1\n",  # scaled
        "-1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n",  # reflection
        "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 1 1\n",  # bad last row
    ],
)
def test_seven_scenes_bad_pose_file(tmp_path, rng, content):
    make_seven_scenes(tmp_path, rng)
    bad = tmp_path / "seq-01" / "frame-000001.pose.txt"
    bad.write_text(content)
    raises_naming(bad, open_dataset, tmp_path)


def test_seven_scenes_pose_path_is_a_directory(tmp_path, rng):
    make_seven_scenes(tmp_path, rng)
    bad = tmp_path / "seq-01" / "frame-000001.pose.txt"
    bad.unlink()
    bad.mkdir()
    raises_naming(bad, open_dataset, tmp_path)


def test_seven_scenes_split_lists_missing_sequence(tmp_path, rng):
    make_seven_scenes(tmp_path, rng)
    split = tmp_path / "TestSplit.txt"
    split.write_text("sequence2\nsequence3\n")
    msg = raises_naming(split, open_dataset, tmp_path)
    assert "seq-03" in msg


@pytest.mark.parametrize("line", ["seq1", "sequence", "sequence 1", "sequence1 sequence2", "sequenceX"])
def test_seven_scenes_malformed_split_line(tmp_path, rng, line):
    make_seven_scenes(tmp_path, rng)
    split = tmp_path / "TrainSplit.txt"
    split.write_text(f"sequence1\n{line}\n")
    msg = raises_naming(split, open_dataset, tmp_path)
    assert ":2" in msg  # the line number


def test_seven_scenes_missing_or_empty_split_file(tmp_path, rng):
    make_seven_scenes(tmp_path, rng)
    (tmp_path / "TestSplit.txt").unlink()
    assert len(open_dataset(tmp_path).frames("train")) > 0  # the train split still maps
    raises_naming(tmp_path / "TestSplit.txt", lambda: open_dataset(tmp_path).frames("test"))
    (tmp_path / "TestSplit.txt").write_text("\n")
    raises_naming(tmp_path / "TestSplit.txt", open_dataset, tmp_path)


def test_seven_scenes_pose_without_image_is_an_error(tmp_path, rng):
    make_seven_scenes(tmp_path, rng)
    (tmp_path / "seq-01" / "frame-000001.color.png").unlink()
    msg = raises_naming(tmp_path / "seq-01", open_dataset, tmp_path)
    assert "frame-000001" in msg and "pose but no colour image" in msg


def test_seven_scenes_unreadable_image(tmp_path, rng):
    make_seven_scenes(tmp_path, rng)
    bad = tmp_path / "seq-01" / "frame-000002.color.png"
    bad.write_bytes(np.random.default_rng(0).bytes(3000))
    ds = open_dataset(tmp_path)  # pixels are read lazily
    frame = next(f for f in ds.frames("train") if f.image_path == bad)
    raises_naming(bad, frame.load_image)


def test_seven_scenes_image_size_mismatch(tmp_path, rng):
    make_seven_scenes(tmp_path, rng)
    bad = tmp_path / "seq-02" / "frame-000000.color.png"
    write_image(bad, 320, 240)
    frame = next(f for f in open_dataset(tmp_path).frames("test") if f.image_path == bad)
    msg = raises_naming(bad, frame.load_image)
    assert "320x240" in msg and "640x480" in msg


# --------------------------------------------------------------------------------------------
# Plain posed folder


def test_posed_folder_flat(tmp_path, rng):
    poses = make_posed_set(tmp_path, rng, ["b", "a", "c"])
    (tmp_path / "intrinsics.txt").write_text("50.5 51.5 23.5 15.5\n")
    depth_mm = np.full((32, 48), 1500, np.uint16)
    (tmp_path / "depth").mkdir()
    cv2.imwrite(str(tmp_path / "depth" / "a.png"), depth_mm)
    ds = open_dataset(tmp_path)
    assert ds.layout == "posed-folder"
    names = [f.name for f in ds.frames("train")]
    assert names == ["a", "b", "c"]
    assert [f.name for f in ds.frames("test")] == names  # a flat folder has no splits
    assert [f.name for f in ds.frames("all")] == names
    for f in ds.frames("train"):
        np.testing.assert_allclose(f.pose, poses[f.name], atol=1e-10)
        c = f.camera
        assert (c.fx, c.fy, c.cx, c.cy, c.width, c.height) == (50.5, 51.5, 23.5, 15.5, 48, 32)  # size from the image
        assert f.load_image().shape == (32, 48, 3)
    a = ds.frames("train")[0]
    np.testing.assert_allclose(a.load_depth(), 1.5)
    assert ds.frames("train")[1].load_depth() is None


def test_posed_folder_splits(tmp_path, rng):
    train_poses = make_posed_set(tmp_path / "train", rng, ["t0", "t1", "t2"])
    test_poses = make_posed_set(tmp_path / "test", rng, ["q0", "q1"])
    (tmp_path / "intrinsics.txt").write_text("40 40 24 16 48 32\n")  # shared, at the root
    (tmp_path / "test" / "intrinsics").mkdir()
    (tmp_path / "test" / "intrinsics" / "q1.txt").write_text("60 61 23 17 48 32\n")  # per frame, wins
    ds = open_dataset(tmp_path)
    assert [f.name for f in ds.frames("train")] == ["t0", "t1", "t2"]
    assert [f.name for f in ds.frames("test")] == ["q0", "q1"]
    for f in ds.frames("train"):
        np.testing.assert_allclose(f.pose, train_poses[f.name], atol=1e-10)
        assert (f.camera.fx, f.camera.cx) == (40.0, 24.0)
    for f in ds.frames("test"):
        np.testing.assert_allclose(f.pose, test_poses[f.name], atol=1e-10)
    q0, q1 = ds.frames("test")
    assert (q0.camera.fx, q0.camera.fy) == (40.0, 40.0)
    assert (q1.camera.fx, q1.camera.fy, q1.camera.cx, q1.camera.cy) == (60.0, 61.0, 23.0, 17.0)


def test_posed_folder_missing_pose(tmp_path, rng):
    make_posed_set(tmp_path, rng, ["a", "b"])
    (tmp_path / "intrinsics.txt").write_text("50 50 24 16\n")
    (tmp_path / "poses" / "b.txt").unlink()
    raises_naming(tmp_path / "poses" / "b.txt", open_dataset, tmp_path)


def test_posed_folder_train_without_test(tmp_path, rng):
    make_posed_set(tmp_path / "train", rng, ["a"])
    (tmp_path / "intrinsics.txt").write_text("50 50 24 16\n")
    raises_naming(tmp_path, open_dataset, tmp_path)


@pytest.mark.parametrize("content", ["50 50 24\n", "50 50 24 16 48\n", "50 nan 24 16\n", "0 50 24 16\n", "a b c d\n"])
def test_posed_folder_bad_intrinsics(tmp_path, rng, content):
    make_posed_set(tmp_path, rng, ["a"])
    (tmp_path / "intrinsics.txt").write_text(content)
    raises_naming(tmp_path / "intrinsics.txt", open_dataset, tmp_path)


def test_posed_folder_without_intrinsics(tmp_path, rng):
    make_posed_set(tmp_path, rng, ["a"])
    raises_naming(tmp_path / "rgb" / "a.png", open_dataset, tmp_path)


def test_posed_folder_image_size_mismatch(tmp_path, rng):
    make_posed_set(tmp_path, rng, ["a"])
    (tmp_path / "intrinsics.txt").write_text("50 50 32 24 64 48\n")  # images are 48x32
    frame = open_dataset(tmp_path).frames("train")[0]
    raises_naming(tmp_path / "rgb" / "a.png", frame.load_image)


def test_posed_folder_garbage_image(tmp_path, rng):
    make_posed_set(tmp_path, rng, ["a", "b"])
    (tmp_path / "intrinsics.txt").write_text("50 50 24 16 48 32\n")
    bad = tmp_path / "rgb" / "b.png"
    bad.write_bytes(b"\x89PNG not really" + bytes(range(256)))
    frame = open_dataset(tmp_path).frames("train")[1]
    raises_naming(bad, frame.load_image)
    # Without the size in intrinsics.txt the first image is decoded when opening.
    (tmp_path / "intrinsics.txt").write_text("50 50 24 16\n")
    (tmp_path / "rgb" / "a.png").write_bytes(b"garbage")
    raises_naming(tmp_path / "rgb" / "a.png", open_dataset, tmp_path)


# --------------------------------------------------------------------------------------------
# Layout detection


def test_unrecognized_layout(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    msg = raises_naming(tmp_path, open_dataset, tmp_path)
    assert "unrecognized" in msg


def test_nonexistent_path(tmp_path):
    raises_naming(tmp_path / "missing", open_dataset, tmp_path / "missing")
    f = tmp_path / "file.txt"
    f.write_text("x")
    raises_naming(f, open_dataset, f)


# --------------------------------------------------------------------------------------------
# RGB-D fragments


def test_fragments(tmp_path, rng):
    K, poses, depths = make_fragments(tmp_path, rng)
    ds = open_dataset(tmp_path)
    assert ds.layout == "rgbd-fragments"
    train = [f.name for f in ds.frames("train")]
    test = [f.name for f in ds.frames("test")]
    a = lambda i: f"frag-a-rgbd-frames/frame-{935 + i:06d}"  # noqa: E731
    b = lambda i: f"frag-b-rgbd-frames/frame-{935 + i:06d}"  # noqa: E731
    # Position i within each fragment: (i // 5) even -> train.
    assert train == [a(i) for i in (0, 1, 2, 3, 4, 10, 11)] + [b(i) for i in (0, 1, 2, 3, 4)]
    assert test == [a(i) for i in (5, 6, 7, 8, 9)] + [b(i) for i in (5, 6)]
    for f in ds.frames("all"):
        np.testing.assert_allclose(f.pose, poses[f.name], atol=1e-10)
        np.testing.assert_allclose(f.camera.K, K)
        assert (f.camera.width, f.camera.height) == (40, 30)
        assert f.depth_path == f.image_path.with_name(f.image_path.name.replace(".color.png", ".depth.png"))
    for f in ds.frames("all")[:3]:
        depth = f.load_depth()
        mm = depths[f.name]
        assert depth.dtype == np.float32 and depth.shape == mm.shape
        np.testing.assert_array_equal(np.isnan(depth), mm == 0)
        np.testing.assert_allclose(depth[mm > 0], mm[mm > 0] / 1000.0, rtol=1e-6)
        assert f.load_image().shape == (30, 40, 3)


def test_fragments_missing_pose_and_bad_intrinsics(tmp_path, rng):
    make_fragments(tmp_path, rng, counts=(("frag-a", 3),))
    bad = tmp_path / "frag-a-rgbd-frames" / "frame-000936.pose.txt"
    bad.write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    raises_naming(bad, open_dataset, tmp_path)
    bad.unlink()
    raises_naming(bad, open_dataset, tmp_path)
    (tmp_path / "camera-intrinsics.txt").write_text("500 0 320\n0 500 240\n")
    raises_naming(tmp_path / "camera-intrinsics.txt", open_dataset, tmp_path)


def test_fragments_garbage_depth(tmp_path, rng):
    make_fragments(tmp_path, rng, counts=(("frag-a", 2),))
    bad = tmp_path / "frag-a-rgbd-frames" / "frame-000935.depth.png"
    bad.write_bytes(b"not a png")
    frame = open_dataset(tmp_path).frames("train")[0]
    raises_naming(bad, frame.load_depth)


# --------------------------------------------------------------------------------------------
# The real SUN3D sample (development data; skipped where absent)

SUN3D = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sun3d"


def test_real_sun3d_sample():
    if not (SUN3D / "camera-intrinsics.txt").is_file():
        pytest.skip(f"SUN3D sample not present at {SUN3D}")
    ds = open_dataset(SUN3D)
    assert ds.layout == "rgbd-fragments"
    train, test = ds.frames("train"), ds.frames("test")
    assert len(train) == 50 and len(test) == 50
    assert not {f.name for f in train} & {f.name for f in test}
    cam = train[0].camera
    assert cam.fx == pytest.approx(570.342, abs=1e-3) and cam.fy == pytest.approx(570.342, abs=1e-3)
    assert (cam.width, cam.height) == (640, 480)
    for f in train + test:
        T = f.pose
        assert T.shape == (4, 4) and np.all(np.isfinite(T))
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-3)
        assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0, abs=1e-3)
        np.testing.assert_array_equal(T[3], [0, 0, 0, 1])
    depth = test[0].load_depth()
    assert depth.shape == (480, 640)
    valid = depth[np.isfinite(depth)]
    assert valid.size > 0.3 * depth.size and 0.2 < np.median(valid) < 10.0  # metres, indoors


# --------------------------------------------------------------------------------------------
# ACE / DSAC* layout (Wayspots)


def test_ace_layout_focal_means_centred_principal_point(tmp_path, rng):
    poses = make_ace_scene(tmp_path, rng)
    ds = open_dataset(tmp_path)
    assert ds.layout == "ace" and len(ds.frames("train")) == 3 and len(ds.frames("test")) == 2
    f = ds.frames("test")[1]
    assert (f.camera.fx, f.camera.fy, f.camera.cx, f.camera.cy, f.camera.width, f.camera.height) == (
        55.5,
        55.5,
        32.0,
        24.0,
        64,
        48,
    )
    # poses are camera-to-world as stored: no conversion
    assert np.allclose(f.pose, poses[("test", f.name)], atol=1e-9)
    assert f.load_image().shape == (48, 64, 3)


def test_ace_layout_calibration_matrix(tmp_path, rng):
    make_ace_scene(tmp_path, rng, focal_as_matrix=True)
    c = open_dataset(tmp_path).frames("train")[0].camera
    assert (c.fx, c.fy, c.cx, c.cy) == (55.5, 56.5, 30.0, 25.0)


def test_ace_layout_names_the_broken_file(tmp_path, rng):
    make_ace_scene(tmp_path, rng)
    calib = tmp_path / "train" / "calibration" / "seq1_frame00001.txt"
    calib.write_text("1 2\n")
    assert "expected 1 or 9 numbers" in raises_naming(calib, open_dataset, tmp_path)
    calib.unlink()
    raises_naming(calib, open_dataset, tmp_path)
    make_ace_scene(tmp_path, rng)
    pose = tmp_path / "test" / "poses" / "seq1_frame00000.txt"
    pose.unlink()
    raises_naming(pose, open_dataset, tmp_path)


def test_half_splits_cut_each_sequence_by_time():
    """first-half / second-half: each fragment cut in two in frame order, together every frame once."""
    if not (SUN3D / "camera-intrinsics.txt").is_file():
        pytest.skip(f"SUN3D sample not present at {SUN3D}")
    ds = open_dataset(SUN3D)
    first, second = ds.frames("first-half"), ds.frames("second-half")
    assert len(first) == len(second) == 50
    assert sorted(f.name for f in first + second) == sorted(f.name for f in ds.frames("all"))
    for fragment in {f.name.split("/")[0] for f in first}:
        a = [f.name for f in first if f.name.startswith(fragment + "/")]
        b = [f.name for f in second if f.name.startswith(fragment + "/")]
        assert len(a) == len(b) == 25 and max(a) < min(b)  # the first 25 frames, then the last 25


def test_half_splits_refused_where_the_splits_are_separate_trajectories(tmp_path):
    from scr_ros.datasets.synthetic import render_to_folder
    from scr_ros.renderer import SceneConfig

    cfg = SceneConfig(
        width=64, height=48, focal=52.5, mapping_frames=4, query_frames=2, num_objects=2, texel_density=40.0
    )
    ds = open_dataset(render_to_folder(cfg, tmp_path / "scene"))
    with pytest.raises(DatasetError, match="cannot split .* into halves.*same frame names"):
        ds.frames("first-half")

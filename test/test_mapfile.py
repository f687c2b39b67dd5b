"""Map files: round trip, verification on load, atomic save."""

import json
import os
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import scr_ros.fileio
from scr_ros.errors import MapFileError
from scr_ros.heads import build_head
from scr_ros.mapfile import FORMAT_VERSION, HEADER_KEY, SceneMap, load_map, read_header, tensors_sha256

ENCODER = {"name": "random", "source": "seed:0", "sha256": "ab" * 32, "out_channels": 512, "stride": 8}
MEAN = [1.25, -2.5, 0.75]


@pytest.fixture
def scene_map():
    torch.manual_seed(0)
    head = build_head("ace", width=64, num_blocks=1)
    head.set_mean(MEAN)
    head.eval()
    return SceneMap(
        head=head,
        encoder=dict(ENCODER),
        image_height=480,
        training={"iterations": 10, "loss": "ace"},
        cameras=[{"fx": 500.0, "fy": 500.0, "cx": 320.0, "cy": 240.0, "width": 640, "height": 480}],
    )


@pytest.fixture
def features():
    return torch.randn(64, 512, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def map_path(tmp_path, scene_map):
    return scene_map.save(tmp_path / "scene.map", weights_dtype="float32")


def rewrite(path, edit_header=None, edit_tensors=None, recompute_checksum=False):
    """Rewrite a map with safetensors' own API, changing the header and/or tensors."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(path))
    header = json.loads(meta[HEADER_KEY])
    if edit_tensors:
        edit_tensors(tensors)
    if edit_header:
        edit_header(header)
    if recompute_checksum:
        header["weights_sha256"] = tensors_sha256(tensors)
    save_file(tensors, str(path), metadata={HEADER_KEY: json.dumps(header)})


def refused(path, *fragments):
    with pytest.raises(MapFileError) as info:
        load_map(path)
    msg = str(info.value)
    assert str(path) in msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


# --------------------------------------------------------------------------------------------
# Round trip


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip(tmp_path, scene_map, features, dtype):
    path = scene_map.save(tmp_path / f"m-{dtype}.map", weights_dtype=dtype)
    assert path.is_file()
    loaded = load_map(path)
    assert loaded.head is not scene_map.head
    assert not loaded.head.training  # eval mode
    with torch.no_grad():
        ref = scene_map.head(features)
        out = loaded.head(features)
        # Independent reference: the original weights rounded to the stored precision.
        rounded = build_head("ace", width=64, num_blocks=1)
        rounded.load_state_dict(
            {k: v.to(getattr(torch, dtype)).float() for k, v in scene_map.head.state_dict().items()}
        )
        rounded.set_mean(MEAN)
        expected = rounded(features)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-5)
    tol = 1e-6 if dtype == "float32" else 1e-2
    spread = float((ref - torch.tensor(MEAN)).abs().max())
    assert float((out - ref).abs().max()) <= tol * max(spread, 1.0)
    # Header fields round trip.
    assert loaded.encoder == ENCODER
    assert loaded.image_height == 480
    assert loaded.training == scene_map.training
    assert loaded.cameras == scene_map.cameras
    assert loaded.created == scene_map.created
    assert loaded.mean == MEAN  # the mean is stored in float32, exactly
    assert loaded.head.config == scene_map.head.config
    header = read_header(path)
    assert header["format_version"] == FORMAT_VERSION
    assert header["weights_dtype"] == dtype
    assert header["head"] == {"type": "ace", "config": scene_map.head.config}


def test_float16_file_is_smaller(tmp_path, scene_map):
    a = scene_map.save(tmp_path / "a.map", weights_dtype="float32")
    b = scene_map.save(tmp_path / "b.map", weights_dtype="float16")
    assert os.path.getsize(b) < 0.6 * os.path.getsize(a)
    with safe_open(str(b), framework="pt") as f:
        assert f.get_tensor("fc1.weight").dtype == torch.float16
        assert f.get_tensor("mean").dtype == torch.float32


def test_save_refuses_unknown_dtype(tmp_path, scene_map):
    with pytest.raises(ValueError):
        scene_map.save(tmp_path / "x.map", weights_dtype="bfloat16")
    assert not (tmp_path / "x.map").exists()


def test_float16_overflow_is_refused_at_save(tmp_path, scene_map):
    path = scene_map.save(tmp_path / "scene.map")
    good = path.read_bytes()
    with torch.no_grad():
        scene_map.head.fc1.weight[0, 0] = 1e5  # finite in float32, inf in float16
    try:
        scene_map.save(path, weights_dtype="float16")
    except (ValueError, MapFileError):
        assert path.read_bytes() == good  # refused, the good map is kept
    else:
        load_map(path)  # or else what was written must load


# --------------------------------------------------------------------------------------------
# Refusals


def test_missing_file(tmp_path):
    refused(tmp_path / "nope.map", "not found")


@pytest.mark.parametrize("keep", [0.5, 0.99, 20])
def test_truncated_file(map_path, keep):
    data = map_path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    map_path.write_bytes(data[:n])
    msg = refused(map_path)
    assert "truncated" in msg or "corrupt" in msg


def test_a_file_rewritten_in_place_while_it_loads_is_refused_not_a_crash(map_path, monkeypatch):
    """``cp`` over a map a node is loading: the header was checked, then the data shrinks. Read
    through a memory map this ended the process with SIGBUS; now it is a clear refusal."""
    import pathlib

    data = map_path.read_bytes()
    real = pathlib.Path.read_bytes

    def rewritten(self):
        if self == map_path:
            map_path.write_bytes(data[: len(data) // 2])  # the copy has only half arrived
        return real(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", rewritten)
    msg = refused(map_path)
    assert "cannot read weights" in msg or "changed while it was read" in msg


def test_flipped_byte_in_tensor_data(map_path):
    data = bytearray(map_path.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    data_start = 8 + header_len
    pos = data_start + (len(data) - data_start) // 2
    data[pos] ^= 0x01
    map_path.write_bytes(bytes(data))
    refused(map_path, "checksum")


def test_garbage_file(tmp_path):
    p = tmp_path / "garbage.map"
    p.write_bytes(os.urandom(1000))
    refused(p)


def test_safetensors_without_header(tmp_path):
    p = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(p))
    refused(p, "not an scr_ros map")
    save_file({"w": torch.zeros(3)}, str(p), metadata={"other": "x"})
    refused(p, "not an scr_ros map")


@pytest.mark.parametrize(
    "edit, fragments",
    [
        (lambda h: h.update(format_version=FORMAT_VERSION + 1), ["newer", str(FORMAT_VERSION + 1)]),
        (lambda h: h.update(format_version=0), ["version"]),
        (lambda h: h.update(format_version="1"), ["format_version"]),
        (lambda h: h.update(format="someone.else"), ["format", "someone.else"]),
        (lambda h: h.pop("format"), ["format"]),
        (lambda h: h["head"].update(type="transformer"), ["unknown", "transformer"]),
        (lambda h: h["head"]["config"].update(bogus=1), ["bogus"]),
        (lambda h: h.pop("encoder"), ["encoder"]),
        (lambda h: h["encoder"].update(out_channels="512"), ["encoder.out_channels"]),
        (lambda h: h["encoder"].update(out_channels=256), ["input channels"]),
        (lambda h: h.update(weights_dtype="int8"), ["int8"]),
        (lambda h: h.update(mean=[0.0, 0.0, 0.0]), ["mean"]),
        (lambda h: h.update(mean=[0.0, 0.0]), ["mean"]),
        (lambda h: h.update(image_height=3), ["image_height"]),
        (lambda h: h.update(image_height=True), ["image_height"]),
    ],
)
def test_tampered_header(map_path, edit, fragments):
    rewrite(map_path, edit_header=edit)
    refused(map_path, *fragments)


def test_tampered_header_non_numeric_mean(map_path):
    rewrite(map_path, edit_header=lambda h: h.update(mean=["a", "b", "c"]))
    refused(map_path, "mean")


@pytest.mark.parametrize("change", [{"width": -1}, {"min_scale": 0}, {"max_scale": 1.0}])
def test_tampered_header_bad_head_config_values(map_path, change):
    rewrite(map_path, edit_header=lambda h: h["head"]["config"].update(change))
    refused(map_path)


def test_header_not_json(map_path):
    tensors = load_file(str(map_path))
    save_file(tensors, str(map_path), metadata={HEADER_KEY: "{not json"})
    refused(map_path, "JSON")


def test_tensor_shape_mismatch_via_header_config(map_path):
    # Header now claims width 32; the stored tensors are width 64 (the checksum covers tensors only).
    rewrite(map_path, edit_header=lambda h: h["head"]["config"].update(width=32))
    refused(map_path, "shape")


def test_tensor_shape_mismatch_via_tensor(map_path):
    def edit(t):
        t["fc1.bias"] = torch.zeros(65)

    rewrite(map_path, edit_tensors=edit, recompute_checksum=True)
    refused(map_path, "fc1.bias", "shape", "(65,)", "(64,)")


def test_tensor_changed_without_checksum_update(map_path):
    def edit(t):
        t["fc1.bias"] = t["fc1.bias"] + 1.0

    rewrite(map_path, edit_tensors=edit)
    refused(map_path, "checksum")


def test_missing_tensor(map_path):
    rewrite(map_path, edit_tensors=lambda t: t.pop("fc2.weight"), recompute_checksum=True)
    refused(map_path, "missing", "fc2.weight")


def test_extra_tensor(map_path):
    rewrite(map_path, edit_tensors=lambda t: t.update(extra=torch.zeros(2)), recompute_checksum=True)
    refused(map_path, "unexpected", "extra")


def test_non_finite_weights(map_path):
    def edit(t):
        t["out.weight"][0, 0] = float("nan")

    rewrite(map_path, edit_tensors=edit, recompute_checksum=True)
    refused(map_path, "out.weight", "NaN")


# --------------------------------------------------------------------------------------------
# Atomic save


def test_save_is_atomic(tmp_path, scene_map, monkeypatch):
    path = scene_map.save(tmp_path / "scene.map")
    good = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(scr_ros.fileio.os, "replace", failing_replace)
    with torch.no_grad():
        scene_map.head.fc1.bias.add_(1.0)
    with pytest.raises(OSError, match="simulated"):
        scene_map.save(path)
    with pytest.raises(OSError, match="simulated"):
        scene_map.save(tmp_path / "new.map")
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.map"]  # no temporary left behind
    load_map(path)  # still a good map


def test_point_cloud_round_trip_and_checksum(tmp_path, scene_map, rng):
    scene_map.cloud_xyz = rng.normal(size=(500, 3)).astype(np.float32)
    scene_map.cloud_rgb = rng.integers(0, 256, size=(500, 3)).astype(np.uint8)
    path = scene_map.save(tmp_path / "cloud.map")
    loaded = load_map(path)
    assert np.array_equal(loaded.cloud_xyz, scene_map.cloud_xyz) and np.array_equal(
        loaded.cloud_rgb, scene_map.cloud_rgb
    )
    # the cloud is covered by the checksum like the weights
    rewrite(path, edit_tensors=lambda t: t["cloud.xyz"].mul_(2.0))
    with pytest.raises(MapFileError, match="checksum"):
        load_map(path)


def test_point_cloud_with_mismatched_colours_is_refused(tmp_path, scene_map, rng):
    scene_map.cloud_xyz = rng.normal(size=(50, 3)).astype(np.float32)
    scene_map.cloud_rgb = np.zeros((50, 3), np.uint8)
    path = scene_map.save(tmp_path / "cloud.map")
    rewrite(path, edit_tensors=lambda t: t.update({"cloud.rgb": t["cloud.rgb"][:40].clone()}), recompute_checksum=True)
    with pytest.raises(MapFileError, match="cloud"):
        load_map(path)


def test_format_1_map_without_cloud_still_loads(map_path):
    rewrite(map_path, edit_header=lambda h: h.update(format_version=1))
    loaded = load_map(map_path)
    assert loaded.cloud_xyz is None and loaded.cloud_rgb is None


def test_mapping_poses_load_at_the_tolerance_datasets_accept_and_a_non_rigid_one_is_refused(tmp_path, scene_map):
    """Mapping poses are stored as given; a dataset accepts rotations orthonormal to 1e-3 (text
    files of real data rarely do better than 1e-5), so a map made from them must load again."""
    from scipy.spatial.transform import Rotation

    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, :3] = Rotation.random(3, random_state=0).as_matrix()
    poses[:, :3, 3] = [[0.0, 0.0, 0.0], [1.0, 2.0, 0.5], [2.0, 1.0, 0.0]]
    poses[1, :3, :3] *= 1.0 + 2e-4  # |RR^T - I| about 4e-4
    scene_map.mapping_poses = poses
    scene_map.mapping_frames = ["a", "b", "c"]
    scene_map.mapping_stamps_ns = [None, 10, 20]
    loaded = load_map(scene_map.save(tmp_path / "ok.map", weights_dtype="float32"))
    np.testing.assert_array_equal(loaded.mapping_poses, poses)
    assert loaded.mapping_frames == ["a", "b", "c"] and loaded.mapping_stamps_ns == [None, 10, 20]
    poses[2, :3, :3] *= 1.01  # scaled: not a rigid transform
    refused(scene_map.save(tmp_path / "bad.map", weights_dtype="float32"), "not rigid transforms")

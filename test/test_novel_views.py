"""Novel views from depth: the warp shows what a moved camera sees, and a buffer of them still maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from scr_ros.errors import SettingsError
from scr_ros.imaging import Augmentation
from scr_ros.mapping.novel_views import moved_camera, novel_view, warp_to
from scr_ros.renderer import SceneConfig, SyntheticScene

ROOM = SceneConfig(
    seed=7, width=320, height=240, focal=262.5, mapping_frames=40, query_frames=10, num_objects=6, texel_density=160.0
)


@pytest.fixture(scope="module")
def room():
    return SyntheticScene(ROOM)


def grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


@pytest.mark.parametrize("frame", [3, 11, 25])
def test_warp_matches_the_renderer_from_the_moved_camera(room, frame):
    T = room.mapping_poses[frame]
    rgb, depth = room.render(T)
    move = moved_camera(float(np.median(depth)), 0.6, np.random.default_rng(frame))
    image, source, filled = warp_to(grey(rgb), depth, room.camera.K, move)
    truth = grey(room.render(T @ move)[0])
    assert filled.mean() > 0.6
    # where the warp shows something it is what the moved camera sees, and not the frame unmoved
    assert np.median(np.abs(image - truth)[filled]) < 0.02
    assert np.abs(image - truth)[filled].mean() < 0.5 * np.abs(grey(rgb) - truth)[filled].mean()
    # the source map points at the recorded pixel of the same surface point
    v, u = np.nonzero(filled)
    pick = np.random.default_rng(0).choice(len(u), 200, replace=False)
    src = source[v[pick], u[pick]]
    assert np.all(np.isfinite(src)) and np.all(src >= 0) and np.all(src[:, 0] <= ROOM.width - 1)


def test_moved_camera_stays_within_its_shift_and_looks_at_the_scene():
    for seed in range(20):
        T = moved_camera(2.0, 0.6, np.random.default_rng(seed))
        assert np.linalg.norm(T[:3, 3]) <= 0.6 + 1e-9
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
        # its optical axis passes through the point the source camera saw at the median depth
        to_target = np.array([0.0, 0.0, 2.0]) - T[:3, 3]
        assert np.dot(T[:3, 2], to_target / np.linalg.norm(to_target)) > 1 - 1e-9
    assert np.linalg.norm(moved_camera(0.5, 0.6, np.random.default_rng(0))[:3, 3]) <= 0.2 + 1e-9  # 40 % of depth


def test_frames_with_little_depth_are_not_warped(room):
    rgb, depth = room.render(room.mapping_poses[0])
    depth = depth.copy()
    depth[: int(0.8 * len(depth))] = np.nan
    assert novel_view(grey(rgb), depth, room.camera.K, 0.6, np.random.default_rng(0)) is None


def test_novel_view_settings_are_checked():
    with pytest.raises(SettingsError, match="novel_views"):
        Augmentation(novel_views=1.5)
    with pytest.raises(SettingsError, match="novel_view_shift_m"):
        Augmentation(novel_view_shift_m=0.0)


def test_a_map_from_novel_views_localizes(tiny, mapped, tmp_path, figure):
    """Every buffer image a novel view (the test preset, the tiny scene): it still maps, within
    reach of the same run's plain map, so the rows' source pixels and depth are right."""
    from scr_ros.mapping_config import PRESETS
    from scr_ros.pipeline import build_map, localize

    aug = {**PRESETS["test"]["augmentation"], "novel_views": 1.0, "novel_view_shift_m": 0.4}
    build_map("synthetic:tiny", tmp_path / "m.safetensors", preset_name="test", device="cpu", augmentation=aug)
    _, report, _, scene_map = localize(tmp_path / "m.safetensors", "synthetic:tiny", "test", "cpu")
    plain = mapped["report"]["accuracy"]["10cm_5deg"]
    figure("novel_views_10cm_5deg", report["accuracy"]["10cm_5deg"])
    figure("plain_10cm_5deg", plain)
    assert scene_map.training["config"]["augmentation"]["novel_views"] == 1.0
    # Measured within 10 cm / 5 deg, against the plain map's: fp32 60.0 % of 96.7 % (2 threads)
    # and 66.7 % (1 thread) on the EPYC AVX2; bf16: no figure recorded (it passed at half). A
    # third leaves fp32 a margin of two; rows with the wrong source pixel or depth map nothing.
    assert report["accuracy"]["10cm_5deg"] >= 0.3 * plain, (report["accuracy"], plain)

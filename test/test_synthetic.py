"""The synthetic scene: deterministic, geometrically consistent across views, options honoured."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from scr_ros.datasets import open_dataset
from scr_ros.datasets.synthetic import render_to_folder
from scr_ros.errors import DatasetError
from scr_ros.geometry import backproject, make_pose, project_world_points, rotation_about_axis
from scr_ros.renderer import SceneConfig, SyntheticScene

SMALL = SceneConfig(
    seed=7, width=160, height=120, focal=131.25, mapping_frames=40, query_frames=10, num_objects=5, texel_density=96.0
)


@pytest.fixture(scope="module")
def scene():
    return SyntheticScene(SMALL)


def test_same_config_renders_the_same_pixels(scene):
    again = SyntheticScene(SMALL)
    for i in (0, 17):
        a, da, Ta = scene.render_frame(i, query=False)
        b, db, Tb = again.render_frame(i, query=False)
        assert np.array_equal(a, b) and np.array_equal(da, db) and np.array_equal(Ta, Tb)
    other = SyntheticScene(dataclasses.replace(SMALL, seed=8)).render_frame(0, query=False)[0]
    assert not np.array_equal(scene.render_frame(0, query=False)[0], other)


def test_depth_and_colour_agree_between_views(scene):
    """A surface point seen in one frame reappears where the other frame's pose and depth put it."""
    T_a = scene.mapping_poses[10]
    T_b = T_a @ make_pose(rotation_about_axis(np.array([0.0, 1.0, 0.0]), 0.08), [0.10, -0.03, 0.05])  # a nearby view
    rgb_a, depth_a = scene.render(T_a)
    rgb_b, depth_b = scene.render(T_b)
    cam = scene.camera
    ys, xs = np.mgrid[4 : cam.height - 4 : 3, 4 : cam.width - 4 : 3]
    px = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    X = backproject(px, depth_a[ys.ravel(), xs.ravel()], cam, T_a)
    pb, zb = project_world_points(X, T_b, cam)
    ok = (
        np.isfinite(pb).all(1)
        & (pb[:, 0] > 1)
        & (pb[:, 0] < cam.width - 2)
        & (pb[:, 1] > 1)
        & (pb[:, 1] < cam.height - 2)
    )
    q = np.round(pb[ok]).astype(int)
    visible = np.abs(depth_b[q[:, 1], q[:, 0]] - zb[ok]) < 0.02 * zb[ok]
    assert ok.sum() > 0.3 * len(px) and visible.mean() > 0.8
    diff = np.abs(
        rgb_b[q[visible, 1], q[visible, 0]].astype(int)
        - rgb_a[ys.ravel()[ok][visible], xs.ravel()[ok][visible]].astype(int)
    )
    assert np.median(diff) < 12  # same texture and lighting; differences from resampling only


def test_depth_is_z_depth_and_valid_everywhere(scene):
    _, depth = scene.render(scene.mapping_poses[0])
    assert depth.dtype == np.float32 and np.all(np.isfinite(depth)) and np.all(depth > 0)
    assert depth.max() < np.linalg.norm(scene.room)


def test_trajectories_stay_inside_the_room_and_outside_furniture(scene):
    for T in scene.mapping_poses + scene.query_poses:
        assert np.all(T[:3, 3] > 0) and np.all(T[:3, 3] < scene.room)
        for box in scene.boxes:
            assert not box.contains(T[:3, 3], 0.3).any()
    maps = np.array([T[:3, 3] for T in scene.mapping_poses])
    queries = np.array([T[:3, 3] for T in scene.query_poses])
    nearest = np.min(np.linalg.norm(queries[:, None] - maps[None], axis=2), axis=1)
    assert nearest.min() > 0.01  # the query path is a different path


def test_lighting_change_changes_query_images_only():
    lit = SyntheticScene(dataclasses.replace(SMALL, lighting_change=True))
    plain = SyntheticScene(SMALL)
    assert lit.query_light != lit.mapping_light and plain.query_light == plain.mapping_light
    T = lit.mapping_poses[3]
    a = lit.render(T, lit.mapping_light)[0].astype(int)
    b = lit.render(T, lit.query_light)[0].astype(int)
    assert np.abs(a - b).mean() > 10


def test_repetitive_texture_repeats_on_walls():
    rep = SyntheticScene(dataclasses.replace(SMALL, repetitive_texture=True, num_objects=0))
    rgb, _ = rep.render(rep.mapping_poses[0])
    grey = rgb.mean(axis=2)
    row = grey[grey.shape[0] // 2] - grey[grey.shape[0] // 2].mean()
    ac = np.correlate(row, row, "full")[len(row) :]
    # a periodic wall gives a strong secondary autocorrelation peak
    assert ac[5:].max() > 0.3 * (row @ row)


def test_room_size_is_honoured():
    big = SyntheticScene(dataclasses.replace(SMALL, room_size=(10.0, 8.0, 3.0)))
    pos = np.array([T[:3, 3] for T in big.mapping_poses])
    assert pos[:, 0].max() - pos[:, 0].min() > 2.5  # the loop scales with the room


def test_render_to_folder_round_trip(tmp_path):
    cfg = dataclasses.replace(SMALL, mapping_frames=6, query_frames=3)
    out = render_to_folder(cfg, tmp_path / "scene")
    ds = open_dataset(out)
    assert len(ds.frames("train")) == 6 and len(ds.frames("test")) == 3
    scene = SyntheticScene(cfg)
    f = ds.frames("test")[2]
    rgb, depth, T = scene.render_frame(2, query=True)
    assert np.array_equal(f.load_image(), rgb)
    assert np.allclose(f.pose, T, atol=1e-8)
    assert np.nanmax(np.abs(f.load_depth() - depth)) < 1e-3  # stored in millimetres
    assert f.camera == scene.camera
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    with pytest.raises(DatasetError, match="already exists"):
        render_to_folder(cfg, out)


def test_unknown_synthetic_scene_is_refused():
    with pytest.raises(DatasetError, match="unknown synthetic scene"):
        open_dataset("synthetic:nope")


def test_cache_key_changes_with_config_and_renderer_version(monkeypatch):
    from scr_ros.datasets import synthetic as syn

    a = syn.config_digest(SMALL)
    assert a == syn.config_digest(dataclasses.replace(SMALL))
    assert a != syn.config_digest(dataclasses.replace(SMALL, seed=SMALL.seed + 1))
    monkeypatch.setattr(syn, "RENDERER_VERSION", syn.RENDERER_VERSION + 1)
    assert a != syn.config_digest(SMALL)  # a renderer change never reuses stale pixels


def _band_counts(config: SceneConfig) -> tuple[np.ndarray, np.ndarray]:
    from scr_ros.evaluation.localization import nearest_view_distances

    scene = SyntheticScene(config)
    return nearest_view_distances(np.stack(scene.query_poses), np.stack(scene.mapping_poses)), scene


@pytest.mark.parametrize("path", ["walk", "robot"])
def test_away_queries_leave_the_mapped_path(path):
    """query_path="away": a third or more of the queries 0.4-1 m from every similar mapping view,
    where the default puts all of them within 0.4 m."""
    base = dataclasses.replace(SMALL, path=path, room_size=(6.0, 5.0, 2.8), mapping_frames=240, query_frames=60)
    between, _ = _band_counts(base)
    away, scene = _band_counts(dataclasses.replace(base, query_path="away"))
    assert np.all(between < 0.4), between.max()
    assert np.mean((away >= 0.4) & (away < 1.0)) > 0.3, np.round(away, 2)
    heights = [T[2, 3] for T in scene.query_poses]
    if path == "walk":  # other heights than the mapping loops' 1.2-1.6 m
        assert min(heights) < 1.1 and max(heights) > 1.7
    for T in scene.query_poses:
        assert np.all(T[:3, 3] > 0) and np.all(T[:3, 3] < scene.room)
        assert not any(box.contains(T[:3, 3], 0.3).any() for box in scene.boxes)


@pytest.mark.slow
def test_rooftop_scene_has_sky_far_buildings_and_a_close_railing(tmp_path):
    cfg = dataclasses.replace(
        SMALL, path="rooftop", room_size=(60.0, 50.0, 22.0), mapping_frames=24, query_frames=6, num_objects=0
    )
    scene = SyntheticScene(cfg)
    depths = [scene.render_frame(i, False)[1] for i in range(0, 24, 3)]
    sky = np.concatenate([(d == 0).ravel() for d in depths])
    assert 0.02 < sky.mean() < 0.5  # sky in view, never depth
    valid = np.concatenate([d[d > 0] for d in depths])
    assert np.percentile(valid, 90) > 15.0  # most content is tens of metres away ...
    assert min(d[d > 0].min() for d in depths) < 2.0  # ... behind a railing within reach
    rgb, depth = scene.render(scene.mapping_poses[0])
    assert np.all(rgb[depth == 0].astype(int)[:, 2] > rgb[depth == 0].astype(int)[:, 0])  # blue-ish, plain
    # the camera walks the roof, about 1.6 m above it
    for T in scene.mapping_poses + scene.query_poses:
        assert 11.0 < T[2, 3] < 12.3
    # stored, the sky is invalid depth (NaN when read back), not a distance
    ds = open_dataset(render_to_folder(dataclasses.replace(cfg, mapping_frames=2, query_frames=1), tmp_path / "s"))
    stored = ds.frames("train")[0].load_depth()
    assert np.isnan(stored).mean() == pytest.approx((scene.render_frame(0, False)[1] == 0).mean(), abs=1e-3)

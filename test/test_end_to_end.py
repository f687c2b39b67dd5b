"""End to end on the tiny synthetic scene: map with the `scr` CLI, relocalize, check accuracy.

The scene is rendered once per session into a temporary cache (a few seconds); mapping uses the
`test` preset (well under a minute on two CPU cores).
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from scr_ros.cli import main
from scr_ros.encoders import load_encoder
from scr_ros.errors import MappingCancelled, ScrError
from scr_ros.mapfile import load_map, read_header
from scr_ros.mapping import MapBuilder
from scr_ros.mapping_config import preset
from scr_ros.relocalize import Relocalizer


@pytest.mark.slow
def test_tiny_scene_is_relocalized_accurately(mapped, tiny, figure):
    report = mapped["report"]
    figure("10cm_5deg", report["accuracy"]["10cm_5deg"])
    figure("lost", report["lost"])
    figure("median_translation_cm", report["median_translation_cm"])
    figure("median_rotation_deg", report["median_rotation_deg"])
    figure("wrong_fixes", report["wrong_fixes"])
    assert report["frames"] == len(tiny.frames("test"))
    # Measured with the test preset on this 320x240 scene, 2 threads: bf16 (Xeon) 86.7 % within
    # 10 cm / 5 deg, none lost, median 5.5 cm / 2.0 deg; fp32 (EPYC AVX2) 96.7 %, none lost,
    # 6.0 cm / 2.46 deg (a random encoder: 0 %) -- before max_position_std. With it (0.2, the
    # default), fp32: 66.7 %, 10 of 30 refused as "position not constrained" (this weak map's
    # published position std is 0.2-0.3 m on them), 0 wrong fixes, median 7.7 cm / 3.1 deg; bf16:
    # no figure recorded. The bounds are at least twice as far off.
    assert report["accuracy"]["10cm_5deg"] >= 30.0, report
    assert report["lost"] <= 0.6 * report["frames"], report
    assert report["wrong_fixes"] <= 1, report
    assert report["median_translation_cm"] < 12.0, report
    assert report["median_rotation_deg"] < 5.0, report


def test_report_has_the_promised_fields(mapped):
    r = mapped["report"]
    for key in ("frames", "lost", "accuracy", "median_translation_cm", "median_rotation_deg", "timing_ms"):
        assert key in r
    assert set(r["accuracy"]) == {"25cm_2deg", "10cm_5deg", "5cm_5deg", "2cm_2deg", "1cm_1deg"}
    assert (
        r["accuracy"]["1cm_1deg"]
        <= r["accuracy"]["2cm_2deg"]
        <= r["accuracy"]["5cm_5deg"]
        <= r["accuracy"]["10cm_5deg"]
    )
    assert r["accuracy"]["2cm_2deg"] <= r["accuracy"]["25cm_2deg"]
    for stage in ("encoder", "head", "ransac", "total"):
        assert r["timing_ms"][stage] > 0
    assert r["timing_ms"]["total"] >= r["timing_ms"]["encoder"] + r["timing_ms"]["ransac"]


def test_poses_file_matches_ground_truth(mapped, tiny, figure):
    gt = {f.name: f.pose for f in tiny.frames("test")}
    rows = [line.split() for line in mapped["poses"].read_text().splitlines() if not line.startswith("#")]
    figure("poses_fraction", len(rows) / len(gt))
    # bf16 and fp32: every frame before max_position_std; with it, fp32 (EPYC AVX2) 20 of 30 (the
    # rest refused as "position not constrained"; bf16: no figure recorded).
    assert len(rows) >= 0.4 * len(gt)
    from scr_ros.geometry import pose_from_position_quaternion

    errors = [
        np.linalg.norm(
            pose_from_position_quaternion(np.array(r[1:4], float), np.array(r[4:8], float))[:3, 3] - gt[r[0]][:3, 3]
        )
        for r in rows
    ]
    figure("median_error_m", float(np.median(errors)))
    assert np.median(errors) < 0.12  # measured bf16 5.5 cm (Xeon), fp32 6.0 cm (EPYC AVX2), both before the check


def test_map_header_records_mapping_and_encoder(mapped):
    header = read_header(mapped["map"])
    assert header["encoder"]["name"] == "xfeat" and header["encoder"]["pixel_offset"] == 3.5
    assert header["head"]["type"] == "ace"
    assert header["training"]["seconds"] > 0 and header["training"]["iterations"] > 0
    assert header["training"]["preset"] == "test"
    assert header["image_height"] == 240


def test_map_carries_a_reconstruction_on_the_scene_surfaces(mapped, tiny, figure):
    """The stored cloud must lie on the true surfaces: compare with a mapping frame's depth."""
    from scr_ros.geometry import project_world_points

    scene_map = load_map(mapped["map"])
    xyz = scene_map.cloud_xyz.astype(np.float64)
    figure("cloud_points", len(xyz))
    assert len(xyz) > 1000 and scene_map.cloud_rgb.shape == xyz.shape
    frame = tiny.frames("train")[0]
    depth = frame.load_depth()
    px, z = project_world_points(xyz, frame.pose, frame.camera)
    ok = (z > 0) & np.all(np.isfinite(px), axis=1)
    q = np.round(px[ok]).astype(int)
    seen = (q[:, 0] >= 0) & (q[:, 0] < frame.camera.width) & (q[:, 1] >= 0) & (q[:, 1] < frame.camera.height)
    d = depth[q[seen, 1], q[seen, 0]]
    zs = z[ok][seen]
    front = np.isfinite(d) & (zs < d + 0.10)  # points not hidden behind the visible surface
    figure("front_points", int(front.sum()))
    figure("median_depth_error_m", float(np.median(np.abs(zs[front] - d[front]))))
    # fp32 (EPYC AVX2, 2 threads): 4144 points in front, 0.6 cm median depth error; bf16: no
    # figure recorded (the suite has not run on a bf16 CPU since figures carry the precision).
    assert front.sum() > 200
    assert np.median(np.abs(zs[front] - d[front])) < 0.05


def test_localize_refuses_a_map_for_another_encoder(mapped, tiny, tmp_path, capsys):
    code = main(
        ["localize", str(mapped["map"]), "synthetic:tiny", "--report", str(tmp_path / "r.json"), "--encoder", "random"]
    )
    assert code == 2
    assert "map was built with" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_cli_reports_bad_dataset_clearly(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["map", str(tmp_path / "empty"), "--out", str(tmp_path / "m.safetensors"), "--preset", "test"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized dataset layout" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_cli_reports_missing_map(tmp_path, capsys):
    assert (
        main(["localize", str(tmp_path / "nope.safetensors"), "synthetic:tiny", "--report", str(tmp_path / "r.json")])
        == 2
    )
    assert "map file not found" in capsys.readouterr().err


def _small(**kw):
    return preset("test", buffer_size=4000, samples_per_image=256, epochs=1.0, batch_size=512, **kw)


def test_mapping_is_deterministic_and_reports_progress(tiny):
    frames = tiny.frames("train")[:12]
    encoder = load_encoder("dsift")
    events = []
    a = MapBuilder(encoder, _small(), device="cpu", progress=events.append).build(frames)
    b = MapBuilder(encoder, _small(), device="cpu").build(frames)
    for (ka, va), (kb, vb) in zip(a.head.state_dict().items(), b.head.state_dict().items()):
        assert ka == kb and bool((va == vb).all()), ka
    stages = {e.stage for e in events}
    assert stages == {"buffer", "train", "cloud"}
    last_train = [e for e in events if e.stage == "train"][-1]
    assert last_train.step == last_train.total and last_train.loss is not None
    assert (
        np.array_equal(a.cloud_xyz, b.cloud_xyz)
        and a.cloud_rgb.dtype == np.uint8
        and len(a.cloud_rgb) == len(a.cloud_xyz)
    )


def test_training_reads_its_loss_every_few_iterations_and_names_the_iteration_it_diverged_at(tiny, monkeypatch):
    """The loop leaves each loss on the device and reads them in blocks (a read waits for the
    device); a non-finite loss inside a block is still reported at its own iteration."""
    from scr_ros.mapping import training

    monkeypatch.setattr(training, "LOSS_READ_EVERY", 3)
    frames, encoder = tiny.frames("train")[:12], load_encoder("dsift")
    events = []
    MapBuilder(encoder, _small(), device="cpu", progress=events.append).build(frames)
    steps = [e.step for e in events if e.stage == "train"]
    total = events[-1 - [e.stage for e in reversed(events)].index("train")].total
    assert total > 6 and steps == [*range(3, total + 1, 3), *([total] if total % 3 else [])]

    real = training.build_loss
    calls = []

    def poisoned(name, **kw):
        fn = real(name, **kw)

        def loss(*args, **kwargs):
            out = fn(*args, **kwargs)
            calls.append(1)
            return (out[0] * float("nan"), *out[1:]) if len(calls) == 5 else out

        return loss

    monkeypatch.setattr(training, "build_loss", poisoned)
    with pytest.raises(ScrError, match=r"training diverged at iteration 4 \(loss nan\).*--precision fp32"):
        MapBuilder(encoder, _small(), device="cpu").build(frames)


def test_mapping_can_be_cancelled(tiny):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(MappingCancelled):
        MapBuilder(load_encoder("dsift"), _small(), device="cpu", cancel=cancel).build(tiny.frames("train")[:4])


def test_relocalizer_declares_lost_frames(mapped, tiny, figure):
    """An image of noise has no consistent correspondences: lost, with a reason, no pose."""
    scene_map = load_map(mapped["map"])
    reloc = Relocalizer(scene_map, device="cpu")
    # RANSAC finds chance inliers in noise and many in the query frame, 2 threads: bf16 62 and
    # 560 (Xeon), fp32 92 and 529 (EPYC AVX2); a threshold of 200 leaves each a margin of two.
    reloc.config.min_inliers = 200
    frame = tiny.frames("test")[0]
    noise = np.random.default_rng(0).integers(0, 256, (frame.camera.height, frame.camera.width, 3), dtype=np.uint8)
    result = reloc.localize(noise, frame.camera)
    figure("noise_inliers", result.num_inliers)
    assert not result.success and result.T_world_cam is None and result.reason
    reloc.config.max_position_std = 0.0  # this frame's fix is right, its std on the test map 0.24 m
    good = reloc.localize(frame.load_image(), frame.camera)
    figure("good_inliers", good.num_inliers)
    assert good.success and good.num_inliers >= reloc.config.min_inliers


def test_demo_quick(mapped):
    """`scr demo --quick` made the shared map (conftest): everything it promises is there."""
    demo, report = mapped["demo"], mapped["demo_report"]
    for name in ("report.json", "frames.csv", "poses.txt", "plot.png", "map.safetensors", "scene/scene.json"):
        assert (demo / name).is_file(), name
    saved = json.loads((demo / "report.json").read_text())
    assert saved["mapping_seconds"] > 0 and saved["preset"] == "test" and saved["scene"] == "tiny"
    assert saved["accuracy"] == report["accuracy"]
    # The demo relocalized the same frames with the same map as scr localize did.
    assert saved["accuracy"] == mapped["report"]["accuracy"] and saved["frames"] == mapped["report"]["frames"]
    assert (demo / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_depth_loss_buffer_holds_measured_depth_at_each_sample(tiny):
    frames = tiny.frames("train")[:3]
    builder = MapBuilder(load_encoder("dsift"), _small(loss="ace-depth"), device="cpu")
    assert builder.uses_depth
    buf = builder.fill_buffer(frames)
    depths = [f.load_depth() for f in frames]
    rows = np.random.default_rng(0).choice(buf.size, 200, replace=False)
    for r in rows:
        x, y = np.round(buf.pixels[r].numpy()).astype(int)
        assert buf.depth[r].item() == pytest.approx(float(depths[int(buf.frame_index[r])][y, x]), abs=1e-6)
    plain = MapBuilder(load_encoder("dsift"), _small(loss="ace", loss_config={}), device="cpu")
    assert not plain.uses_depth and plain.fill_buffer(frames).depth is None


def test_naming_the_presets_own_loss_keeps_its_settings():
    from scr_ros.pipeline import mapping_config

    tuned = preset("cpu").loss_config
    assert tuned["depth_weight"] != preset("ace", loss="ace-depth").loss_config.get("depth_weight")
    assert mapping_config("cpu", loss="ace-depth").loss_config == tuned
    assert mapping_config("cpu", loss="ace").loss_config == {}
    assert mapping_config("cpu", head="ace").head_config == preset("cpu").head_config

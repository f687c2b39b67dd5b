"""Classification before regression: HSCNet++'s hierarchical classification head (labels, FiLM,
transformer conditioning, label propagation, symmetric cross-entropy, angle reprojection loss)
and SS-DVR's semantic-structural partitions with partition-aware feature fusion."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from scr_ros.cli import main
from scr_ros.errors import ScrError
from scr_ros.heads import build_head
from scr_ros.heads.hscnet import FiLM, GroupedLinearAttention
from scr_ros.labels import assign_hierarchy, hierarchical_kmeans, minibatch_kmeans, propagate_labels
from scr_ros.losses import build_loss
from scr_ros.losses.hscnet import angle_reprojection_error, symmetric_cross_entropy
from scr_ros.mapfile import load_map
from scr_ros.messages import make_point_cloud, read_point_cloud, read_point_labels
from scr_ros.node_logic.params import MAPPING_PARAMS, mapping_methods, validate
from scr_ros.pipeline import build_map
from scr_ros.relocalize import Relocalizer, RelocalizerConfig

# ----------------------------------------------------------------------------- labels


def _blobs(rng, centres, spread, n):
    return np.concatenate([c + spread * rng.standard_normal((n, 3)) for c in centres]).astype(np.float32)


def test_hierarchical_labels_split_rooms_then_corners():
    rng = np.random.default_rng(0)
    rooms = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0]])
    corners = np.array([[-1.0, 0, 0], [1, 0, 0]])
    centres = [room + corner for room in rooms for corner in corners]
    points = _blobs(rng, centres, 0.05, 200)
    top, sub = hierarchical_kmeans(points, regions=3, subregions=2, seed=0)
    assert top.shape == (3, 3) and sub.shape == (3, 2, 3)
    region, subregion = assign_hierarchy(torch.from_numpy(points), torch.from_numpy(top), torch.from_numpy(sub))
    blob = np.repeat(np.arange(6), 200)
    # Each room is one region, each corner of a room one of its sub-regions, and no two blobs share a label pair.
    pairs = {(int(r), int(s)) for r, s in zip(region, subregion)}
    assert len(pairs) == 6
    for b in range(6):
        assert len(set(zip(region[blob == b].tolist(), subregion[blob == b].tolist()))) == 1
        assert len(set(region[blob // 2 == b // 2].tolist())) == 1
    # Residuals to the sub-region centres are the blob noise, not metres.
    residual = points - sub[region.numpy(), subregion.numpy()]
    assert np.abs(residual).max() < 0.3


def test_minibatch_kmeans_finds_the_two_feature_classes():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3000, 16)) * 0.1 + 1.0
    b = rng.standard_normal((1000, 16)) * 0.1 - 1.0
    feats = torch.from_numpy(np.concatenate([a, b]).astype(np.float16))
    centres = minibatch_kmeans(feats, 2, batch_size=256, iterations=50, seed=0)
    means = sorted(centres.mean(dim=1).tolist())
    assert means[0] == pytest.approx(-1.0, abs=0.05) and means[1] == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="at least 3 rows"):
        minibatch_kmeans(feats[:2], 3)


def test_propagation_fills_the_window_from_the_nearest_labelled_row_of_the_same_image():
    # One image: labelled rows at x = 0 and x = 100 on y = 0; a 40-pixel radius.
    pixels = np.array([[0, 0], [100, 0], [30, 30], [60, 0], [41, 0], [0, 45], [30, 30], [75, 10]], float)
    frame = np.array([0, 0, 0, 0, 0, 0, 1, 0])
    known = np.array([True, True, False, False, False, False, False, False])
    source = propagate_labels(pixels, frame, known, radius=40.0)
    assert source[0] == 0 and source[1] == 1  # labelled rows keep their own
    assert source[2] == 0  # (30, 30): Chebyshev 30 from row 0, the window is square
    assert source[3] == 1  # (60, 0): 40 from row 1, 60 from row 0: the nearer wins, the border counts
    assert source[4] == -1  # (41, 0): 41 from row 0 and 59 from row 1, both outside
    assert source[5] == -1  # (0, 45): outside every window
    assert source[6] == -1  # same pixel as row 2 but another image: nothing to take
    assert source[7] == 1  # (75, 10): 25 from row 1


def test_propagation_radius_zero_spreads_nothing():
    pixels = np.array([[0, 0], [1, 0]], float)
    assert propagate_labels(pixels, np.zeros(2), np.array([True, False]), 0.0).tolist() == [0, -1]


# ----------------------------------------------------------------------------- layers


def test_film_modulates_each_row_by_its_own_condition():
    film = FiLM(cond=5, width=16)
    z, w = torch.randn(7, 16), torch.randn(7, 5)
    assert torch.equal(film(z, w), z)  # an untrained layer passes features through
    torch.nn.init.normal_(film.generator[-1].weight)
    out = film(z, w)
    assert out.shape == (7, 16)
    # Per position: a row's output depends on its own condition only.
    w2 = w.clone()
    w2[3] += 1.0
    changed = (film(z, w2) - out).abs().sum(dim=1) > 1e-6
    assert changed.tolist() == [False, False, False, True, False, False, False]


def test_attention_stays_within_each_image():
    torch.manual_seed(0)
    att = GroupedLinearAttention(width=16, heads=4)
    x = torch.randn(10, 16)
    groups = torch.tensor([0] * 4 + [7] * 6)
    out = att(x, groups)
    assert out.shape == (10, 16)
    y = x.clone()
    y[4:] = torch.randn(6, 16)  # another image's rows change
    assert torch.allclose(att(y, groups)[:4], out[:4], atol=1e-6)
    assert not torch.allclose(att(y, groups)[4:], out[4:])
    # Without groups every row is one image: the same as one group holding them all.
    assert torch.allclose(att(x), att(x, torch.zeros(10, dtype=torch.int64)), atol=1e-6)


def test_hscnet_head_adds_the_residual_to_the_chosen_sub_region_centre():
    head = build_head("hscnet", in_channels=8, width=16, regions=3, subregions=2)
    head.subregion_centres.copy_(torch.arange(18, dtype=torch.float32).reshape(3, 2, 3))
    torch.nn.init.zeros_(head.xyz_out.weight)
    torch.nn.init.zeros_(head.xyz_out.bias)
    x = torch.randn(5, 8)
    targets = {
        "valid": torch.tensor([True, True, True, False, True]),
        "region": torch.tensor([0, 1, 2, 0, 2]),
        "subregion": torch.tensor([1, 0, 1, 0, 0]),
        "xyz": torch.zeros(5, 3),
    }
    coords, score, logits = head.training_outputs(x, targets)
    assert score is None and logits["region"].shape == (5, 3) and logits["subregion"].shape == (5, 2)
    # Training conditions on the true labels where a row has them, on the prediction elsewhere.
    expected = head.subregion_centres[targets["region"], targets["subregion"]]
    for i in (0, 1, 2, 4):
        assert torch.equal(coords[0][i], expected[i])
    r, s = logits["region"][3].argmax(), logits["subregion"][3].argmax()
    assert torch.equal(coords[0][3], head.subregion_centres[r, s])
    _, _, labels = head.predict_labels(x)
    assert labels.tolist() == logits["region"].argmax(dim=1).tolist()  # the region is the published label
    txf = build_head("hscnet-txf", in_channels=8, width=16, regions=3, subregions=2)
    assert txf.config["attention"] == 1 and len(txf.xyz_branch.attention) == 1 and len(txf.sub_branch.attention) == 1
    with pytest.raises(ValueError, match="multiple of heads"):
        build_head("hscnet-txf", in_channels=8, width=18, regions=3, subregions=2)
    with pytest.raises(ValueError, match="regions"):
        build_head("hscnet", regions=0)


def test_first_level_scales_with_the_rooms():
    from scr_ros.heads.hscnet import HscnetHead

    one_room = np.random.default_rng(0).uniform(0, 3, (50, 3))
    four_rooms = np.concatenate([one_room + [10 * k, 0, 0] for k in range(4)])
    assert HscnetHead.scene_defaults(one_room) == {"regions": 25}
    assert HscnetHead.scene_defaults(four_rooms) == {"regions": 100}


# ----------------------------------------------------------------------------- losses


def test_symmetric_cross_entropy_on_hand_made_cases():
    labels = torch.tensor([2])
    confident_right = torch.tensor([[0.0, 0.0, 50.0, 0.0]])
    uniform = torch.zeros(1, 4)
    confident_wrong = torch.tensor([[50.0, 0.0, 0.0, 0.0]])
    assert symmetric_cross_entropy(confident_right, labels).item() == pytest.approx(0.0, abs=1e-6)
    # CE = log 4; RCE = -A (1 - p_y) = 4 * 3/4 = 3.
    assert symmetric_cross_entropy(uniform, labels).item() == pytest.approx(0.1 * math.log(4) + 3.0, rel=1e-5)
    assert symmetric_cross_entropy(uniform, labels, ce_weight=1.0, rce_weight=0.0).item() == pytest.approx(
        math.log(4), rel=1e-5
    )
    # A confidently wrong (noisy) label: CE grows without bound, RCE stops at -A = 4.
    wrong = symmetric_cross_entropy(confident_wrong, labels, ce_weight=0.0, rce_weight=1.0).item()
    assert wrong == pytest.approx(4.0, abs=1e-5)
    assert symmetric_cross_entropy(confident_wrong, labels, ce_weight=1.0, rce_weight=0.0).item() == pytest.approx(
        50.0, abs=1e-3
    )


def test_angle_reprojection_error():
    T = torch.eye(4)[:3][None]  # camera at the origin looking down +z
    K = torch.tensor([[100.0, 100.0, 50.0, 50.0]])
    pixel = torch.tensor([[70.0, 50.0]])  # ray (20, 0, 100) in focal units
    on_ray = torch.tensor([[0.4, 0.0, 2.0]])
    assert angle_reprojection_error(on_ray, pixel, T, K).item() == pytest.approx(0.0, abs=1e-4)
    # Rotated by a small angle about the camera: error ~ |ray| * angle (a chord).
    angle = 0.01
    ray = torch.tensor([20.0, 0.0, 100.0])
    c, s = math.cos(angle), math.sin(angle)
    turned = torch.tensor([[c * 0.4 + s * 2.0, 0.0, -s * 0.4 + c * 2.0]])
    assert angle_reprojection_error(turned, pixel, T, K).item() == pytest.approx(float(ray.norm()) * angle, rel=1e-2)
    behind = torch.tensor([[-0.4, 0.0, -2.0]])
    assert angle_reprojection_error(behind, pixel, T, K).item() == pytest.approx(2 * float(ray.norm()), rel=1e-4)


def test_hscnet_loss_ignores_unlabelled_rows_and_adds_reprojection_late():
    loss = build_loss("hscnet", total_iterations=100)
    n = 6
    coords = torch.randn(n, 3, requires_grad=True)
    logits = {"region": torch.randn(n, 4, requires_grad=True), "subregion": torch.randn(n, 3, requires_grad=True)}
    targets = {
        "valid": torch.tensor([True, True, False, True, False, True]),
        "region": torch.randint(0, 4, (n,)),
        "subregion": torch.randint(0, 3, (n,)),
        "xyz": torch.randn(n, 3),
    }
    args = (
        torch.rand(n, 2) * 100,
        torch.eye(4)[:3].expand(n, 3, 4),
        torch.tensor([[100.0, 100.0, 50.0, 50.0]]).expand(n, 4),
    )
    early, stats = loss(coords, *args, 10, logits=logits, targets=targets)
    assert stats["reprojection"] is False
    early.backward()
    assert coords.grad[~targets["valid"]].abs().sum() == 0 and coords.grad[targets["valid"]].abs().sum() > 0
    assert logits["region"].grad[~targets["valid"]].abs().sum() == 0
    late, stats = loss(coords, *args, 30, logits=logits, targets=targets)
    assert stats["reprojection"] is True and late.item() > early.item()
    with pytest.raises(ValueError, match="logits"):
        loss(coords, *args, 0)
    with pytest.raises(ValueError, match="reprojection_start"):
        build_loss("hscnet", total_iterations=10, reprojection_start=2.0)


def test_point_cloud_carries_labels():
    from test_messages import F, roundtrip  # the message factory the message tests use

    xyz = np.array([[0, 0, 1], [np.nan, 0, 0], [1, 2, 3]], float)
    rgb = np.zeros((3, 3), np.uint8)
    msg = roundtrip(make_point_cloud(F, xyz, rgb, 5, "map", labels=np.array([7, 8, 9])))
    out_xyz, _ = read_point_cloud(msg)
    assert len(out_xyz) == 2 and read_point_labels(msg).tolist() == [7, 9]
    assert read_point_labels(roundtrip(make_point_cloud(F, xyz, rgb, 5, "map"))) is None
    with pytest.raises(Exception, match="labels"):
        make_point_cloud(F, xyz, rgb, 5, "map", labels=np.array([1, 2]))


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def hscnet_map(tiny, tmp_path_factory):
    """HSCNet++ (transformer conditioning) on the tiny scene, test preset: labels from depth."""
    path = tmp_path_factory.mktemp("hscnet") / "hscnet.safetensors"
    assert (
        main(
            [
                "map",
                "synthetic:tiny",
                "--out",
                str(path),
                "--preset",
                "test",
                "--device",
                "cpu",
                "--head",
                "hscnet-txf",
                "--head-config",
                '{"regions": 8, "subregions": 8}',
            ]
        )
        == 0
    )
    return path


@pytest.fixture(scope="module")
def partition_map(tiny, tmp_path_factory):
    """SS-DVR's partitions and score on the tiny scene, test preset (structural labels from depth)."""
    path = tmp_path_factory.mktemp("ssdvr") / "ssdvr.safetensors"
    parts = json.dumps({"structural": 16})
    assert (
        main(
            [
                "map",
                "synthetic:tiny",
                "--out",
                str(path),
                "--preset",
                "test",
                "--device",
                "cpu",
                "--score",
                "--part",
                f"partitions={parts}",
            ]
        )
        == 0
    )
    return path


@pytest.mark.slow
def test_rgb_only_scene_points_come_from_a_first_ace_stage(tiny, figure):
    from scr_ros.encoders import load_encoder
    from scr_ros.mapping import MapBuilder
    from scr_ros.mapping_config import preset

    cfg = preset("test", loss="ace", loss_config={}, buffer_size=100_000, samples_per_image=256, max_buffer_passes=2)
    builder = MapBuilder(load_encoder(None), cfg, device="cpu")
    frames = tiny.frames("train")
    buffer = builder.fill_buffer(frames)
    assert buffer.depth is None  # RGB-only: nothing measured
    assert len(buffer.features) > buffer.size  # a buffer not filled to capacity (as on SUN3D)
    points, known, source = builder.scene_points(buffer, epochs=16, max_error_px=10.0)
    assert source == "triangulated" and points.shape == (buffer.size, 3)
    figure("known_fraction", float(known.float().mean()))
    assert 0.01 < float(known.float().mean()) < 1.0  # fp32 0.064 (EPYC AVX2); bf16: no figure recorded
    # Labelled points reproject within the threshold under their frame's pose.
    rows = torch.nonzero(known).squeeze(1)[:200]
    for i in rows.tolist():
        f = frames[int(buffer.frame_index[i])]
        cam = np.linalg.inv(f.pose) @ np.append(points[i].numpy(), 1.0)
        px = np.array([f.camera.fx * cam[0] / cam[2] + f.camera.cx, f.camera.fy * cam[1] / cam[2] + f.camera.cy])
        assert np.linalg.norm(px - buffer.pixels[i].numpy()) < 10.0 + 1e-3
    assert builder.scene_points(buffer, epochs=16, max_error_px=10.0)[0] is points  # once per build


def test_hscnet_map_localizes_and_labels_its_points(hscnet_map, tiny, figure):
    scene_map = load_map(hscnet_map)
    assert scene_map.head.head_type == "hscnet-txf" and scene_map.head.regions == 8
    labels = scene_map.training["labels"]
    assert labels["label_source"] == "depth" and labels["labelled_rows"] > 0.9
    assert 0 < scene_map.training["label_seconds"] < scene_map.training["seconds"]
    assert scene_map.head.subregion_centres.dtype == torch.float32
    # The tiny scene's test-preset map is a smoke test of the head, not of its accuracy, and its
    # inliers depend on the training precision: bf16 328-618 (Xeon, 2 threads), fp32 103-182
    # (EPYC AVX2, 2 threads). Half the lower figure is the threshold here, not the node's 100.
    # max_position_std off: decimetre fixes of this weak map have published stds above the
    # default 0.2 m, and what is tested here is the head, not which fixes a robot should trust.
    reloc = Relocalizer(scene_map, device="cpu", config=RelocalizerConfig(min_inliers=50, max_position_std=0.0))
    errors = []
    for f in tiny.frames("test")[:6]:
        loc = reloc.localize(f.load_image(), f.camera)
        figure("inliers", loc.num_inliers)
        assert loc.success, loc.reason
        assert loc.labels_name == "region" and loc.labels.shape == (len(loc.scene_coords),)
        assert 0 <= loc.labels.min() and loc.labels.max() < 8
        errors.append(np.linalg.norm(loc.T_world_cam[:3, 3] - f.pose[:3, 3]))
    figure("median_error_m", float(np.median(errors)))
    # Measured: bf16 16.2 cm (Xeon, 2 threads), fp32 38.5 cm (EPYC AVX2, 2 threads). The bound is
    # twice the larger; a head that predicts nothing useful is metres off or finds no pose.
    assert np.median(errors) < 0.8


def test_partition_map_localizes_with_fused_features(partition_map, tiny, figure):
    scene_map = load_map(partition_map)
    info = scene_map.training["partitions"]
    figure("semantic_accuracy", info["classifier_accuracy"]["semantic"])
    assert info["label_source"] == "depth" and info["labelled_rows"] > 0.9
    assert info["classifier_accuracy"]["semantic"] > 0.8  # fp32 0.995 (EPYC AVX2); bf16: no figure recorded
    part = scene_map.parts["partitions"]
    assert part.module.config["structural"] == 16 and scene_map.head.predicts_score
    reloc = Relocalizer(scene_map, device="cpu", config=RelocalizerConfig(max_position_std=0.0))  # as above
    assert reloc.selector.name == "score"
    errors = []
    for f in tiny.frames("test")[:6]:
        loc = reloc.localize(f.load_image(), f.camera)
        figure("inliers", loc.num_inliers)
        assert loc.success, loc.reason
        assert loc.labels_name == "partition" and loc.labels.max() < 2 * 16
        errors.append(np.linalg.norm(loc.T_world_cam[:3, 3] - f.pose[:3, 3]))
    figure("median_error_m", float(np.median(errors)))
    # Measured, 2 threads: bf16 6.4 cm, inliers 495-750 (Xeon); fp32 8.0 cm, 492-778 (EPYC AVX2).
    assert np.median(errors) < 0.16
    # The fusion trained: it no longer passes features through unchanged.
    x = torch.randn(4, part.module.config["in_channels"])
    assert not torch.allclose(part.transform(x), x)


def test_relocalizer_node_logic_and_replay_publish_labels(hscnet_map, tiny, tiny_bag, tmp_path, figure):
    from scr_ros.node_logic.relocalizer_core import CameraFrame, RelocalizerCore

    # The threshold of the test above (this map's inliers depend on the precision): frame 1 had
    # 182 in fp32 (EPYC AVX2, 2 threads); bf16 between 328 and 618 for the first six frames.
    core = RelocalizerCore(
        {
            "map_path": str(hscnet_map),
            "device": "cpu",
            "max_image_age": 1.0,
            "min_inliers": 50,
            "max_position_std": 0.0,  # as in the test above
        }
    )
    assert "predicted region" in core.load_map(str(hscnet_map))
    f = tiny.frames("test")[1]
    out = core.process(CameraFrame(f.load_image(), f.camera, 10**9, "camera_optical"), 10**9)
    figure("inliers", out.localization.num_inliers)
    assert out.status == "ok", out.reason
    xyz, rgb, labels = out.scene_points()
    assert len(labels) == len(xyz)
    # The bag tool's estimates bag carries the same field.
    from test_bag import read_all

    est = tmp_path / "estimates"
    assert (
        main(
            [
                "bag",
                "replay",
                str(tiny_bag),
                "--map",
                str(hscnet_map),
                "--report",
                str(tmp_path / "r.json"),
                "--out-bag",
                str(est),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    clouds = read_all(est)["/relocalizer/scene_points"]
    assert clouds and read_point_labels(clouds[0][2]) is not None


def test_switches_refuse_what_cannot_work(tmp_path):
    out = str(tmp_path / "m.safetensors")
    with pytest.raises(ScrError, match="unknown settings bogus"):
        build_map("synthetic:tiny", out, preset_name="test", device="cpu", parts={"partitions": {"bogus": 1}})
    with pytest.raises(ScrError, match="cannot be combined"):
        build_map(
            "synthetic:tiny",
            out,
            preset_name="test",
            device="cpu",
            parts={"classifier": {}, "partitions": {}},
        )
    with pytest.raises(ScrError, match="cannot be combined"):
        build_map(
            "synthetic:tiny",
            out,
            preset_name="test",
            device="cpu",
            head="hscnet",
            parts={"global-descriptor": {}},
        )
    with pytest.raises(ScrError, match="partitions': classifier_layers = 1 is outside"):
        build_map(
            "synthetic:tiny",
            out,
            preset_name="test",
            device="cpu",
            parts={"partitions": {"classifier_layers": 1}},
        )
    assert not (tmp_path / "m.safetensors").exists()


def test_node_parameters_reach_the_hscnet_head_and_the_partitions():
    p = validate(
        MAPPING_PARAMS,
        {
            "head": "hscnet-txf",
            "head_config": '{"regions": 50}',
            "map_parts": '{"partitions": {"structural": 32}}',
            "score": True,
        },
    )
    methods = mapping_methods(p)
    assert methods["head_config"] == {"regions": 50} and methods["parts"] == {"partitions": {"structural": 32}}
    with pytest.raises(Exception, match="head"):
        validate(MAPPING_PARAMS, {"head": "hscnet-bogus"})

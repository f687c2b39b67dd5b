"""Every registered encoder's forward pass: the grid it returns for any image size, finite and
deterministic output, and features that follow the image when it moves by one cell (which is
what lets a head learn one 3D point per feature). Encoder-specific checks live in
test_xfeat.py (alignment, weights) and test_encoder_files.py (weights files)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scr_ros.encoders import ENCODERS, DenseSiftEncoder, load_encoder
from scr_ros.renderer.textures import decorated_surface


@pytest.fixture(scope="module")
def textured() -> np.ndarray:
    """A 240 x 320 grey image with texture at every scale (the synthetic walls' decoration)."""
    rgb = decorated_surface(np.random.default_rng(3), 240, 320, texel_density=200.0)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0


@pytest.fixture(scope="module", params=sorted(ENCODERS))
def encoder(request):
    return load_encoder(request.param)


def _forward(enc, gray: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return enc(torch.from_numpy(np.ascontiguousarray(gray))[None, None])[0].float()


def test_grid_channels_and_determinism_at_an_odd_size(encoder, textured):
    gray = textured[:203, :301]  # neither side a multiple of 8 or 32
    out = _forward(encoder, gray)
    assert out.shape == (encoder.out_channels, -(-203 // 8), -(-301 // 8))
    assert torch.isfinite(out).all()
    assert encoder.describe()["out_channels"] == encoder.out_channels
    assert encoder.feature_pixels(*out.shape[1:]).shape == (out.shape[1] * out.shape[2], 2)
    torch.testing.assert_close(_forward(encoder, gray), out)  # same image, same features
    assert out.std(dim=(1, 2)).mean() > 1e-3  # the features vary over a textured image


def test_features_move_with_the_image(encoder, textured):
    """Shift the image right and down by one 8-px cell: for (nearly) every interior cell (i, j),
    the most similar feature of the shifted image within three cells must be (i + 1, j + 1)."""
    shifted = np.zeros_like(textured)
    shifted[8:, 8:] = textured[:-8, :-8]
    a = F.normalize(_forward(encoder, textured), dim=0)
    b = F.normalize(_forward(encoder, shifted), dim=0)
    _, h, w = a.shape
    r, m = 3, 5  # search radius; margin kept from the border, which sees the padding
    hits = total = 0
    for i in range(m, h - m - 1):
        for j in range(m, w - m - 1):
            window = b[:, i - r + 1 : i + r + 2, j - r + 1 : j + r + 2]  # centred on (i + 1, j + 1)
            sim = (window * a[:, i, j, None, None]).sum(0)
            best = divmod(int(sim.argmax()), sim.shape[1])
            hits += best == (r, r)
            total += 1
    assert hits / total > 0.9, f"{hits} of {total} cells found their feature one cell down and right"


def test_dense_sift_is_zero_on_a_flat_image_and_blind_to_brightness(textured):
    enc = DenseSiftEncoder()
    flat = _forward(enc, np.full((64, 96), 0.5, np.float32))
    assert torch.count_nonzero(flat) == 0  # no gradient, no descriptor
    # SIFT describes gradients: adding a constant changes no gradient, so nothing changes.
    torch.testing.assert_close(
        _forward(enc, textured + 0.25), _forward(enc, textured), atol=1e-4, rtol=0
    )  # float rounding only
    # Doubling the contrast doubles every gradient; the normalized descriptor barely moves.
    a, b = _forward(enc, textured), _forward(enc, 2.0 * textured)
    assert F.cosine_similarity(a, b, dim=0).min() > 0.99

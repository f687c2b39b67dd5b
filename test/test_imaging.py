"""Image preparation: grey conversion, resizing / augmentation affines, feature positions."""

import cv2
import numpy as np
import pytest

from scr_ros.imaging import Augmentation, apply_affine, augment, feature_pixels, inside, invert_affine, prepare, to_gray


def texture(h: int, w: int) -> np.ndarray:
    """A smooth, non-periodic-looking grey image in [0.23, 0.83] (no clipping under small jitter)."""
    ys, xs = np.mgrid[:h, :w].astype(np.float64)
    f = (
        0.5
        + 0.15 * np.sin(2 * np.pi * xs / 37 + 0.3) * np.cos(2 * np.pi * ys / 29 + 1.1)
        + 0.1 * np.sin(2 * np.pi * (xs + 2 * ys) / 53)
        + 0.1 * (xs / w - 0.5)
        + 0.05 * (ys / h)
    )
    return f.astype(np.float32)


def sample(img: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``img`` at points (N, 2) (x, y); -1 outside."""
    m = pts.astype(np.float32)
    out = cv2.remap(img, m[:, :1], m[:, 1:2], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-1)
    return out.ravel()


H0, W0 = 150, 200


@pytest.fixture
def original():
    return texture(H0, W0)


@pytest.fixture
def points(rng):
    # Keep a margin so bilinear sampling never blends with the border.
    return np.c_[rng.uniform(3, W0 - 4, 2000), rng.uniform(3, H0 - 4, 2000)]


# --------------------------------------------------------------------------------------------
# to_gray


def test_to_gray_rgb_uses_rgb_order():
    red = np.zeros((4, 5, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((4, 5, 3), np.uint8)
    blue[..., 2] = 255
    g_red, g_blue = to_gray(red), to_gray(blue)
    assert g_red.dtype == np.float32 and g_red.shape == (4, 5)
    # ITU-R 601 luma: R weighs 0.299, B 0.114 (a BGR mix-up would swap them).
    np.testing.assert_allclose(g_red, 0.299, atol=1.5 / 255)
    np.testing.assert_allclose(g_blue, 0.114, atol=1.5 / 255)


def test_to_gray_rgb_random(rng):
    rgb = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    expected = (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) / 255.0
    np.testing.assert_allclose(to_gray(rgb), expected, atol=1.0 / 255)


def test_to_gray_single_channel_types(rng):
    g8 = rng.integers(0, 256, size=(6, 7), dtype=np.uint8)
    np.testing.assert_allclose(to_gray(g8), g8 / 255.0, atol=1e-7)
    np.testing.assert_allclose(to_gray(g8[..., None]), g8 / 255.0, atol=1e-7)
    g16 = rng.integers(0, 65536, size=(6, 7), dtype=np.uint16)
    out16 = to_gray(g16)
    assert out16.dtype == np.float32
    np.testing.assert_allclose(out16, g16 / 65535.0, atol=1e-6)
    f = np.array([[-0.5, 0.0, 0.25], [0.75, 1.0, 3.0]], dtype=np.float64)
    out = to_gray(f)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.25], [0.75, 1.0, 1.0]])


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 5, 4), np.uint8),  # RGBA
        np.zeros((4, 5, 2), np.uint8),
        np.zeros((4, 5, 3), np.uint16),  # 16-bit colour
        np.zeros((4, 5, 3), np.float32),
        np.zeros((20,), np.uint8),
        np.zeros((1, 4, 5, 3), np.uint8),
        np.zeros((4, 5), np.int32),
        np.zeros((4, 5), bool),
    ],
)
def test_to_gray_refuses_bad_shape_or_dtype(bad):
    with pytest.raises(ValueError):
        to_gray(bad)


# --------------------------------------------------------------------------------------------
# prepare


def test_affine_inverse(rng):
    A = np.array([[1.3, -0.2, 4.0], [0.25, 0.9, -3.0]])
    p = rng.normal(size=(10, 2)) * 50
    np.testing.assert_allclose(apply_affine(invert_affine(A), apply_affine(A, p)), p, atol=1e-9)
    np.testing.assert_allclose(apply_affine(A, p), p @ A[:, :2].T + A[:, 2])


@pytest.mark.parametrize("height", [480, 113, 100, 75])
def test_prepare_affine_maps_content(original, points, height):
    img, A = prepare(original, height)
    assert img.shape[0] == height
    assert img.shape[1] == int(round(W0 * height / H0))  # aspect kept
    assert A.shape == (2, 3)
    ref = sample(original, points)
    got = sample(img, apply_affine(A, points))
    err = np.abs(got - ref)
    # A half-pixel (cv2 pixel-centre) mistake would give a mean error > 0.004 on this image.
    assert err.mean() < 0.003, err.mean()
    assert err.max() < 0.015, err.max()
    # Going back through the inverse lands on the same original points.
    np.testing.assert_allclose(apply_affine(invert_affine(A), apply_affine(A, points)), points, atol=1e-9)


def test_prepare_same_height_is_identity(original):
    img, A = prepare(original, H0)
    np.testing.assert_array_equal(img, original)
    np.testing.assert_allclose(A, [[1, 0, 0], [0, 1, 0]], atol=1e-12)


# --------------------------------------------------------------------------------------------
# augment


def _similarity_parts(A):
    """Scale and rotation angle (deg) of the linear part of a similarity 2x3 affine."""
    M = A[:, :2]
    scale = np.sqrt(abs(np.linalg.det(M)))
    angle = np.degrees(np.arctan2(M[1, 0], M[0, 0]))
    return scale, angle


@pytest.mark.parametrize("seed", range(6))
def test_augment_geometry_without_photometric_change(original, points, seed):
    aug = Augmentation(brightness=0.0, contrast=0.0)
    img, A = augment(original, 120, np.random.default_rng(seed), aug)
    assert img.dtype == np.float32
    scale, angle = _similarity_parts(A)
    assert abs(angle) <= aug.rotation_deg + 1e-6
    assert aug.scale_min * 120 / H0 * 0.98 <= scale <= aug.scale_max * 120 / H0 * 1.02
    assert aug.scale_min * 120 - 1 <= img.shape[0] <= aug.scale_max * 120 + 1
    q = apply_affine(A, points)
    ok = inside(q, img.shape[1], img.shape[0])
    assert ok.mean() > 0.5
    err = np.abs(sample(img, q[ok]) - sample(original, points[ok]))
    # A 0.5 px offset would give a mean error > 0.01 here.
    assert err.mean() < 0.004, err.mean()
    assert err.max() < 0.02, err.max()


def test_augment_rotates_sometimes(original):
    angles = [
        _similarity_parts(augment(original, 60, np.random.default_rng(s), Augmentation())[1])[1] for s in range(10)
    ]
    assert max(abs(a) for a in angles) > 2.0


def test_augment_without_changes_equals_prepare(original):
    aug = Augmentation(scale_min=1.0, scale_max=1.0, rotation_deg=0.0, brightness=0.0, contrast=0.0)
    img, A = augment(original, 100, np.random.default_rng(0), aug)
    ref, A_ref = prepare(original, 100)
    np.testing.assert_allclose(A, A_ref, atol=1e-12)
    np.testing.assert_allclose(img, ref, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_augment_geometry_with_photometric_change(original, points, seed):
    aug = Augmentation(brightness=0.1, contrast=0.1)
    img, A = augment(original, 120, np.random.default_rng(seed), aug)
    q = apply_affine(A, points)
    ok = inside(q, img.shape[1], img.shape[0])
    ref = sample(original, points[ok]).astype(np.float64)
    got = sample(img, q[ok]).astype(np.float64)
    # Brightness and contrast are an affine change of grey levels: fit it, then compare.
    gain, offset = np.polyfit(ref, got, 1)
    assert 0.9 * 0.9 - 1e-3 <= gain <= 1.1 * 1.1 + 1e-3
    resid = np.abs(got - (gain * ref + offset))
    assert resid.mean() < 0.004 * max(gain, 1.0), resid.mean()
    assert np.corrcoef(ref, got)[0, 1] > 0.99


def test_augment_black_outside_original_after_rotation(original):
    aug = Augmentation(scale_min=1.0, scale_max=1.0, rotation_deg=15.0, brightness=0.0, contrast=0.0)
    for seed in range(10):
        img, A = augment(original, H0, np.random.default_rng(seed), aug)
        if abs(_similarity_parts(A)[1]) > 5:
            break
    else:
        pytest.fail("no rotation above 5 degrees drawn in 10 seeds")
    # Augmented pixels whose preimage is well outside the original are black.
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    pix = np.c_[xs.ravel(), ys.ravel()].astype(np.float64)
    back = apply_affine(invert_affine(A), pix)
    far_out = (back[:, 0] < -2) | (back[:, 0] > W0 + 1) | (back[:, 1] < -2) | (back[:, 1] > H0 + 1)
    assert far_out.any()
    assert np.all(img.ravel()[far_out] == 0.0)


# --------------------------------------------------------------------------------------------
# feature positions


def test_feature_pixels_row_major():
    fh, fw, stride = 3, 4, 8
    px = feature_pixels(fh, fw, stride)
    assert px.shape == (fh * fw, 2) and px.dtype == np.float64
    for i in range(fh):
        for j in range(fw):
            np.testing.assert_array_equal(px[i * fw + j], [stride * j, stride * i])
    # Matches numpy's row-major flattening of a (fh, fw) feature map.
    feat = np.arange(fh * fw).reshape(fh, fw)
    k = feat[2, 1]
    np.testing.assert_array_equal(px[k], [stride * 1, stride * 2])


def test_feature_pixels_offset_shifts_every_position():
    plain, centred = feature_pixels(2, 3, 8), feature_pixels(2, 3, 8, offset=3.5)
    np.testing.assert_array_equal(centred - plain, np.full((6, 2), 3.5))
    np.testing.assert_array_equal(centred[4], [8 * 1 + 3.5, 8 * 1 + 3.5])


def test_inside_bounds():
    pts = np.array([[0, 0], [9, 4], [9.01, 0], [-0.01, 2], [3, 4.5], [5, 2]], dtype=np.float64)
    np.testing.assert_array_equal(inside(pts, 10, 5), [True, True, False, False, False, True])

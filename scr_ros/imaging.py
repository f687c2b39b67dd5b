"""Image preparation shared by mapping and relocalization.

The encoder sees a grey image, resized so its height is ``image_height`` (ACE: 480 px). Every
resize / augmentation is described by a 2x3 affine ``A`` that maps a pixel of the *original*
image to the prepared one; feature positions are mapped back through ``A^-1`` so that the head
is always supervised and evaluated in the original image with the original intrinsics. This is
exact for any similarity warp and removes the need to adjust poses or intrinsics per augment.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .errors import SettingsError


def to_gray(image: np.ndarray) -> np.ndarray:
    """Grey image in [0, 1], float32 (H, W).

    Accepts (H, W) uint8 / uint16 / float in [0, 1], or (H, W, 3) uint8 **RGB** (not BGR).
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3:
        if image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"RGB images must be uint8, got {image.dtype}")
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    if image.ndim != 2:
        raise ValueError(f"expected an image of shape (H, W) or (H, W, 3), got {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image.astype(np.float32), 0.0, 1.0)
    raise ValueError(f"unsupported image dtype {image.dtype}")


def invert_affine(A: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine map."""
    return cv2.invertAffineTransform(np.asarray(A, np.float64))


def apply_affine(A: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (N, 2) through a 2x3 affine ``A``."""
    return points @ A[:, :2].T + A[:, 2]


def _resize_affine(h0: int, w0: int, h1: int, w1: int) -> np.ndarray:
    # cv2.resize maps pixel centres: x1 = (x0 + 0.5) * s - 0.5
    sx, sy = w1 / w0, h1 / h0
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def _resize(gray: np.ndarray, h1: int, w1: int) -> np.ndarray:
    h0, w0 = gray.shape
    interp = cv2.INTER_AREA if h1 < h0 else cv2.INTER_LINEAR
    return cv2.resize(gray, (w1, h1), interpolation=interp)


def prepare(gray: np.ndarray, image_height: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize so the height is ``image_height`` (aspect kept). Returns (image, A original->prepared)."""
    h0, w0 = gray.shape
    h1 = int(image_height)
    w1 = max(8, int(round(w0 * h1 / h0)))
    if (h1, w1) == (h0, w0):
        return gray, _resize_affine(h0, w0, h0, w0)
    return _resize(gray, h1, w1), _resize_affine(h0, w0, h1, w1)


@dataclass(frozen=True)
class Augmentation:
    """Random photometric and geometric changes applied while filling the training buffer (ACE)."""

    scale_min: float = 2.0 / 3.0
    scale_max: float = 3.0 / 2.0
    rotation_deg: float = 15.0
    brightness: float = 0.1
    contrast: float = 0.1
    # Share of the buffer's images shown from a camera moved by up to novel_view_shift_m metres,
    # re-projected with the frame's depth (scr_ros.mapping.novel_views); frames without depth
    # are shown as recorded.
    novel_views: float = 0.0
    novel_view_shift_m: float = 0.6
    # Out-of-plane turns: the frame shown from its camera turned by up to perspective_deg about
    # its x and y axes (a homography; frames shown as novel views are not turned). 0: off.
    perspective_deg: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.novel_views <= 1.0:
            raise SettingsError(f"augmentation: novel_views must be a share in [0, 1], got {self.novel_views!r}")
        if not 0.0 < self.novel_view_shift_m <= 10.0:
            raise SettingsError(
                f"augmentation: novel_view_shift_m must be in (0, 10] metres, got {self.novel_view_shift_m!r}"
            )
        if not 0.0 <= self.perspective_deg <= 45.0:
            raise SettingsError(
                f"augmentation: perspective_deg must be in [0, 45] degrees, got {self.perspective_deg!r}"
            )


def turned_view(
    gray: np.ndarray, K: np.ndarray, max_deg: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The frame as its camera would see it turned (not moved) by up to ``max_deg`` about its x
    and y axes: a perspective warp with the rotation's homography ``H = K R K^-1``.

    A turn keeps the camera centre, so every pixel of the turned view shows the 3D point the
    frame's pixel ``H^-1 p`` shows: rows taken from the turned view keep the recorded frame's
    pixel, pose and depth as their targets, exactly.

    Args:
        gray: (H, W) image.
        K: (3, 3) the frame's intrinsics.
    Returns:
        the turned view (H, W) (black where it sees outside the frame), ``H`` (3, 3) frame
        pixels -> turned view pixels, and ``R`` (3, 3) frame camera -> turned camera
        coordinates (``x_turned = R x_frame``).
    """
    angles = np.radians(rng.uniform(-max_deg, max_deg, size=2))
    R = cv2.Rodrigues(np.array([angles[0], angles[1], 0.0]))[0]
    K = np.asarray(K, np.float64)
    H = K @ R @ np.linalg.inv(K)
    h, w = gray.shape
    view = cv2.warpPerspective(gray, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return view, H, R


def apply_homography(H: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points (N, 2) through a 3x3 homography ``H``."""
    return cv2.perspectiveTransform(np.asarray(points, np.float64).reshape(-1, 1, 2), np.asarray(H, np.float64))[:, 0]


def augment(
    gray: np.ndarray, image_height: int, rng: np.random.Generator, aug: Augmentation
) -> tuple[np.ndarray, np.ndarray]:
    """Prepare ``gray`` with a random scale, in-plane rotation, brightness and contrast.

    Returns:
        image (h, w) float32 and ``A`` (2, 3) original->augmented. Pixels rotated in from outside
        the original image are black; callers keep only features whose position maps back inside
        the original image (:func:`inside`).
    """
    h0, w0 = gray.shape
    s = rng.uniform(aug.scale_min, aug.scale_max)
    h1 = max(8, int(round(image_height * s)))
    w1 = max(8, int(round(w0 * h1 / h0)))
    img = _resize(gray, h1, w1)
    A = _resize_affine(h0, w0, h1, w1)
    angle = rng.uniform(-aug.rotation_deg, aug.rotation_deg)
    if angle:
        R = cv2.getRotationMatrix2D(((w1 - 1) / 2.0, (h1 - 1) / 2.0), angle, 1.0)
        img = cv2.warpAffine(img, R, (w1, h1), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        A = R @ np.vstack([A, [0.0, 0.0, 1.0]])
    # Brightness (a gain), then contrast around the mean grey level.
    b = rng.uniform(1.0 - aug.brightness, 1.0 + aug.brightness)
    c = rng.uniform(1.0 - aug.contrast, 1.0 + aug.contrast)
    img = np.clip(img * b, 0.0, 1.0)
    img = np.clip((img - img.mean()) * c + img.mean(), 0.0, 1.0).astype(np.float32)
    return img, A


def feature_pixels(feat_h: int, feat_w: int, stride: int, offset: float = 0.0) -> np.ndarray:
    """Pixel position (x, y) of every feature of a (feat_h, feat_w) map, row-major, (N, 2):
    feature (i, j) sits at (stride * j + offset, stride * i + offset).

    The offset is the encoder's ``pixel_offset``: 0 for stride-2 convolutions of kernel 3 and
    padding 1 (the ACE architecture), whose receptive field of feature (i, j) is centred on
    pixel (stride * j, stride * i); 3.5 for XFeat, whose features describe the centre of their
    8x8 cell.
    """
    ys, xs = np.meshgrid(np.arange(feat_h), np.arange(feat_w), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64) * stride + offset


def inside(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Which points (N, 2) lie inside an image of ``width`` x ``height`` (pixel centres 0..W-1)."""
    return (points[:, 0] >= 0) & (points[:, 0] <= width - 1) & (points[:, 1] >= 0) & (points[:, 1] <= height - 1)

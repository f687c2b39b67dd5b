"""Novel views from depth: a mapping frame seen from a camera moved away from where it was.

A map learns the views it is given. A robot that later drives 0.5 m beside its mapping path sees
every surface from another place: other perspective distortion, other scale, other surfaces
hiding each other. Where a frame has depth, its pixels can be re-projected into a camera moved
by up to ``max_shift_m`` (and turned to keep looking at the same scene), which shows the encoder
and head such a view without recording it.

The warp is a forward splat with a z-buffer, one source pixel per target pixel, cracks of one
pixel closed from the nearest neighbour; what no source pixel reaches (disocclusions, the image's
edges) is a hole: black in the image, and no training row comes from a cell that is mostly hole.
Every kept row keeps its *source* pixel and frame, so the loss and its targets (reprojection into
the recorded camera, the measured depth) are those of the recorded frame.

Shapes: gray (H, W) float32 in [0, 1] or uint8; depth (H, W) float32 metres, NaN where invalid;
K (3, 3); the returned source map (H, W, 2) float32 holds, per target pixel, the source pixel
(x, y) it shows, NaN in holes.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_VALID_DEPTH = 0.3  # fraction of pixels with depth below which a frame is not warped
CELL = 16  # pixels: the neighbourhood (about a feature's footprint) that must be mostly filled
MIN_FILLED = 0.8  # of a cell, for the feature at its centre to become a training row


def moved_camera(depth_median: float, max_shift_m: float, rng: np.random.Generator) -> np.ndarray:
    """T_src_new (4, 4): a camera moved from the source camera by up to ``max_shift_m`` (and at
    most 40 % of the median depth), sideways more than up or forward, turned to look at the
    point the source camera's optical axis meets at the median depth."""
    direction = rng.normal(size=3) * np.array([1.0, 0.5, 0.7])
    direction /= max(np.linalg.norm(direction), 1e-9)
    t = direction * rng.uniform(0.3, 1.0) * min(max_shift_m, 0.4 * depth_median)
    z = np.array([0.0, 0.0, depth_median]) - t
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)  # image right stays level with the source's
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    roll = rng.normal(scale=np.radians(3.0))
    c, s = np.cos(roll), np.sin(roll)
    R = np.stack([x, y, z], axis=1) @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def warp_to(gray: np.ndarray, depth: np.ndarray, K: np.ndarray, T_src_new: np.ndarray):
    """The source frame as the camera ``T_src_new`` (same intrinsics) sees it.

    Returns (image like ``gray``, source map (H, W, 2) float32 with NaN in holes, filled (H, W)
    bool: which pixels show something)."""
    H, W = depth.shape
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    z = depth[v, u].astype(np.float64)
    Kinv = np.linalg.inv(K)
    X = (np.stack([u, v, np.ones_like(u)], axis=1).astype(np.float64) @ Kinv.T) * z[:, None]
    R, t = T_src_new[:3, :3], T_src_new[:3, 3]
    Xn = (X - t) @ R  # R^T (X - t), row-wise
    front = Xn[:, 2] > 0.05
    Xn, u, v = Xn[front], u[front], v[front]
    p = Xn @ K.T
    x, y = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
    # Each source pixel covers the 2 x 2 target pixels around where it lands, so a surface the
    # move magnifies up to twice leaves no cracks.
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    tx = np.concatenate([x0, x0 + 1, x0, x0 + 1])
    ty = np.concatenate([y0, y0, y0 + 1, y0 + 1])
    zn, u, v = np.tile(Xn[:, 2], 4), np.tile(u, 4), np.tile(v, 4)
    ok = (tx >= 0) & (tx < W) & (ty >= 0) & (ty < H)
    target, zn, u, v = ty[ok] * W + tx[ok], zn[ok], u[ok], v[ok]
    # Z-buffer: of the source pixels landing on one target pixel, the nearest wins.
    order = np.lexsort((zn, target))
    first = np.unique(target[order], return_index=True)[1]
    win = order[first]
    zbuf = np.full(H * W, np.inf)
    src = np.full((H * W, 2), np.nan, np.float32)
    zbuf[target[win]] = zn[win]
    src[target[win]] = np.stack([u[win], v[win]], axis=1)
    zbuf, src = zbuf.reshape(H, W), src.reshape(H, W, 2)
    # Cracks of one pixel (a surface magnified by the move) take their nearest neighbour's source.
    hole = ~np.isfinite(zbuf)
    best_z, best_src = np.full((H, W), np.inf), src.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dx == 0 and dy == 0:
                continue
            zs = np.full((H, W), np.inf)
            ss = np.full((H, W, 2), np.nan, np.float32)
            ys, yd = slice(max(dy, 0), H + min(dy, 0)), slice(max(-dy, 0), H + min(-dy, 0))
            xs, xd = slice(max(dx, 0), W + min(dx, 0)), slice(max(-dx, 0), W + min(-dx, 0))
            zs[yd, xd], ss[yd, xd] = zbuf[ys, xs], src[ys, xs]
            take = hole & (zs < best_z)
            best_z[take], best_src[take] = zs[take], ss[take]
    neighbours = sum(np.roll(np.roll(~hole, dy, 0), dx, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dx or dy)
    crack = hole & (neighbours >= 5)  # mostly surrounded: a crack, not the edge of a hole
    src[crack] = best_src[crack]
    filled = np.isfinite(src[..., 0])
    mapx = np.where(filled, src[..., 0], -1.0).astype(np.float32)
    mapy = np.where(filled, src[..., 1], -1.0).astype(np.float32)
    image = cv2.remap(gray, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    image[~filled] = 0
    return image, src, filled


def novel_view(gray: np.ndarray, depth: np.ndarray, K: np.ndarray, max_shift_m: float, rng: np.random.Generator):
    """A random moved view of a frame (:func:`moved_camera`, :func:`warp_to`), or None where too
    little of the frame has depth. Returns (image, source map, keep (H, W) bool: pixels whose
    cell is filled enough for a training row)."""
    valid = np.isfinite(depth) & (depth > 0)
    if valid.mean() < MIN_VALID_DEPTH:
        return None
    T = moved_camera(float(np.median(depth[valid])), max_shift_m, rng)
    image, src, filled = warp_to(gray, depth, K, T)
    share = cv2.blur(filled.astype(np.float32), (CELL, CELL), borderType=cv2.BORDER_CONSTANT)
    return image, src, filled & (share >= MIN_FILLED)

"""Procedural textures and the texture atlas the renderer samples from.

Every planar face of the scene gets its own texture, drawn with OpenCV from one of a few
families (coloured noise, posters of shapes, tiles, stripes, text-like blocks), so that local
image patches are distinctive the way real indoor surfaces are. All textures are packed into one
atlas so that a frame is textured with a single ``cv2.remap`` per level of detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FAMILIES = ("noise", "shapes", "tiles", "stripes", "text")
# More materials for domain-randomized scenes (encoder pretraining); the named scenes keep
# FAMILIES so that their pixels do not change.
EXTRA_FAMILIES = ("wood", "marble", "checker", "dots")
MARGIN = 8  # texels drawn around each face so that blurred levels do not bleed between faces
LOD_SIGMAS = (0.0, 1.0, 2.0, 4.0)  # Gaussian blur of each level; level k suits ~2^k texels/pixel


def _random_color(rng: np.random.Generator, lo: int = 20, hi: int = 235) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(lo, hi, size=3))


def value_noise(rng: np.random.Generator, h: int, w: int, cell_sizes=(64, 32, 16, 8, 4)) -> np.ndarray:
    """Multi-octave value noise in [0, 1], float32 (h, w)."""
    acc = np.zeros((h, w), np.float32)
    total = 0.0
    for i, cell in enumerate(cell_sizes):
        amp = 0.75**i
        gh, gw = h // cell + 3, w // cell + 3
        grid = rng.random((gh, gw), dtype=np.float32)
        up = cv2.resize(grid, (gw * cell, gh * cell), interpolation=cv2.INTER_CUBIC)
        oy, ox = rng.integers(0, cell, size=2)
        acc += amp * up[oy : oy + h, ox : ox + w]
        total += amp
    acc /= total
    lo, hi = np.percentile(acc, [1, 99])
    return np.clip((acc - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _palette(rng: np.random.Generator, t: np.ndarray, n_colors: int = 3) -> np.ndarray:
    """Map a scalar field t in [0, 1] (h, w) through a random colour ramp -> uint8 (h, w, 3)."""
    stops = np.linspace(0.0, 1.0, n_colors)
    colors = np.array([_random_color(rng) for _ in range(n_colors)], np.float32)
    out = np.stack([np.interp(t, stops, colors[:, c]) for c in range(3)], axis=-1)
    return out.astype(np.uint8)


def _noise_texture(rng, h, w):
    return _palette(rng, value_noise(rng, h, w), n_colors=int(rng.integers(2, 5)))


def _shapes_texture(rng, h, w):
    img = _noise_texture(rng, h, w)
    img = (img.astype(np.float32) * 0.6 + 0.4 * np.array(_random_color(rng), np.float32)).astype(np.uint8)
    n = max(8, int(h * w / 1200))
    for _ in range(n):
        color = _random_color(rng, 0, 256)
        kind = rng.integers(0, 4)
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(4, max(6, min(h, w, 200) // 3)))
        if kind == 0:
            cv2.rectangle(img, (cx, cy), (cx + size, cy + int(size * rng.uniform(0.3, 2))), color, -1)
        elif kind == 1:
            cv2.circle(img, (cx, cy), size // 2, color, -1, lineType=cv2.LINE_AA)
        elif kind == 2:
            p2 = (cx + int(rng.integers(-size, size)), cy + int(rng.integers(-size, size)))
            cv2.line(img, (cx, cy), p2, color, int(rng.integers(1, 5)), lineType=cv2.LINE_AA)
        else:
            pts = np.array(
                [[cx + rng.integers(-size, size), cy + rng.integers(-size, size)] for _ in range(3)], np.int32
            )
            cv2.fillPoly(img, [pts], color, lineType=cv2.LINE_AA)
    return img


def _tiles_texture(rng, h, w, cell=None, periodic=False):
    cell = cell or int(rng.integers(16, 64))
    grout = max(1, cell // 12)
    base = np.array(_random_color(rng), np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = np.array(_random_color(rng, 60, 200), np.float32)  # grout colour
    offset_rows = rng.random() < 0.5  # brick bond
    for r, y in enumerate(range(0, h, cell)):
        shift = (cell // 2) * (r % 2) if offset_rows else 0
        for x in range(-shift, w, cell):
            c = base if periodic else np.clip(base + rng.normal(0, 25, 3), 0, 255)
            img[y + grout : y + cell, max(0, x + grout) : max(0, x + cell)] = c
    if not periodic:
        img += (value_noise(rng, h, w)[..., None] - 0.5) * 40
    return np.clip(img, 0, 255).astype(np.uint8)


def _stripes_texture(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    freq = rng.uniform(0.05, 0.3)
    warp = value_noise(rng, h, w, cell_sizes=(128, 64, 32)) * rng.uniform(5, 30)
    t = 0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + warp)
    return _palette(rng, t * 0.7 + 0.3 * value_noise(rng, h, w), n_colors=3)


def _text_texture(rng, h, w):
    img = np.empty((h, w, 3), np.uint8)
    img[:] = _random_color(rng, 150, 250)
    ink = _random_color(rng, 0, 90)
    line_h = int(rng.integers(6, 14))
    for y in range(int(rng.integers(2, 10)), h - line_h, int(line_h * 1.6)):
        x = int(rng.integers(2, 12))
        while x < w - 4:
            word = int(rng.integers(line_h, line_h * 5))
            if rng.random() < 0.85:
                cv2.rectangle(img, (x, y), (min(w - 1, x + word), y + int(line_h * rng.uniform(0.5, 1))), ink, -1)
            x += word + int(rng.integers(3, 10))
    return img


def _wood_texture(rng, h, w):
    # Growth rings: distance from an off-texture axis, wobbled by low-frequency noise.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(-2 * w, 3 * w), rng.uniform(-2 * h, 3 * h)
    stretch = rng.uniform(3, 10)
    r = np.sqrt(((xx - cx) / stretch) ** 2 + (yy - cy) ** 2)
    r += value_noise(rng, h, w, cell_sizes=(64, 32)) * rng.uniform(5, 20)
    t = 0.5 + 0.5 * np.sin(r * rng.uniform(0.15, 0.6))
    return _palette(rng, t**2 * 0.8 + 0.2 * value_noise(rng, h, w, cell_sizes=(8, 4)), n_colors=2)


def _marble_texture(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    turbulence = value_noise(rng, h, w, cell_sizes=(128, 64, 32, 16)) * rng.uniform(8, 25)
    angle = rng.uniform(0, np.pi)
    t = np.abs(np.sin(rng.uniform(0.02, 0.08) * (np.cos(angle) * xx + np.sin(angle) * yy) + turbulence))
    return _palette(rng, t ** rng.uniform(0.3, 3.0), n_colors=3)


def _checker_texture(rng, h, w):
    cell = int(rng.integers(8, 48))
    yy, xx = np.mgrid[0:h, 0:w]
    t = (((yy // cell) + (xx // cell)) % 2).astype(np.float32)
    t = 0.15 + 0.7 * t + 0.15 * value_noise(rng, h, w)
    return _palette(rng, t, n_colors=2)


def _dots_texture(rng, h, w):
    img = _noise_texture(rng, h, w)
    img = (img.astype(np.float32) * 0.4 + 0.6 * np.array(_random_color(rng), np.float32)).astype(np.uint8)
    step = int(rng.integers(10, 40))
    radius = max(2, int(step * rng.uniform(0.15, 0.4)))
    color = _random_color(rng, 0, 256)
    for y in range(step // 2, h, step):
        for x in range(step // 2, w, step):
            jitter = rng.integers(-step // 5, step // 5 + 1, size=2)
            cv2.circle(img, (int(x + jitter[0]), int(y + jitter[1])), radius, color, -1, lineType=cv2.LINE_AA)
    return img


_MAKERS = {
    "noise": _noise_texture,
    "shapes": _shapes_texture,
    "tiles": _tiles_texture,
    "stripes": _stripes_texture,
    "text": _text_texture,
    "wood": _wood_texture,
    "marble": _marble_texture,
    "checker": _checker_texture,
    "dots": _dots_texture,
}


def make_texture(rng: np.random.Generator, h: int, w: int, family: str) -> np.ndarray:
    """One texture of ``family`` as uint8 RGB (h, w, 3), with fine grain like real materials."""
    if family not in _MAKERS:
        raise ValueError(f"unknown texture family {family!r}; known: {tuple(_MAKERS)}")
    img = _MAKERS[family](rng, h, w).astype(np.float32)
    grain = value_noise(rng, h, w, cell_sizes=(8, 4, 2))
    img *= (0.8 + 0.4 * grain)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def decorated_surface(
    rng: np.random.Generator, h: int, w: int, texel_density: float, materials: tuple[str, ...] | None = None
) -> np.ndarray:
    """A wall, floor or ceiling: a plain material with posters, notices and pictures on it.

    Real rooms are mostly plain surfaces with scattered distinctive things; the decals (about one
    per 0.7 m^2, 0.25-0.9 m across, with a frame) give every view several of them.
    """
    base = make_texture(rng, h, w, str(rng.choice(list(materials) if materials else ["noise", "tiles", "stripes"])))
    area_m2 = h * w / texel_density**2
    for _ in range(max(2, int(area_m2 / 0.7))):
        dh = int(rng.uniform(0.25, 0.9) * texel_density)
        dw = int(rng.uniform(0.25, 0.9) * texel_density)
        dh, dw = min(dh, h - 2), min(dw, w - 2)
        y, x = int(rng.integers(0, h - dh)), int(rng.integers(0, w - dw))
        decal = make_texture(rng, dh, dw, str(rng.choice(["shapes", "text", "noise", "stripes"])))
        border = max(1, int(0.015 * texel_density))
        cv2.rectangle(decal, (0, 0), (dw - 1, dh - 1), _random_color(rng, 0, 120), border)
        base[y : y + dh, x : x + dw] = decal
    return base


def periodic_texture(rng: np.random.Generator, h: int, w: int, period: int) -> np.ndarray:
    """A texture that repeats exactly every ``period`` texels (for ambiguous scenes)."""
    tile = make_texture(rng, period, period, "shapes")
    reps = (h // period + 1, w // period + 1, 1)
    return np.tile(tile, reps)[:h, :w]


@dataclass
class Atlas:
    """All face textures packed into one image, with pre-blurred levels of detail.

    ``levels[k]`` is the atlas blurred with ``LOD_SIGMAS[k]``; a face's interior starts at
    ``offsets[i]`` (x, y) in atlas pixels.
    """

    levels: list[np.ndarray]
    offsets: list[tuple[int, int]]


def pack_atlas(textures: list[np.ndarray], max_width: int = 8192) -> Atlas:
    """Shelf-pack textures (each already including ``MARGIN`` on every side) into an atlas."""
    order = sorted(range(len(textures)), key=lambda i: -textures[i].shape[0])
    positions: dict[int, tuple[int, int]] = {}
    x = y = shelf_h = 0
    width = min(max_width, max(t.shape[1] for t in textures))
    for i in order:
        th, tw = textures[i].shape[:2]
        if tw > width:
            raise ValueError(f"texture {i} is {tw} texels wide, more than the atlas width {width}")
        if x + tw > width:
            x, y, shelf_h = 0, y + shelf_h, 0
        positions[i] = (x, y)
        x += tw
        shelf_h = max(shelf_h, th)
    height = y + shelf_h
    if height >= 32767:
        raise ValueError("scene textures do not fit in one atlas; lower the texel density")
    atlas = np.zeros((height, width, 3), np.uint8)
    for i, (px, py) in positions.items():
        th, tw = textures[i].shape[:2]
        atlas[py : py + th, px : px + tw] = textures[i]
    levels = [atlas if s == 0 else cv2.GaussianBlur(atlas, (0, 0), s) for s in LOD_SIGMAS]
    offsets = [(positions[i][0] + MARGIN, positions[i][1] + MARGIN) for i in range(len(textures))]
    return Atlas(levels, offsets)

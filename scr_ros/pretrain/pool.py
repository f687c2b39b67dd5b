"""The pool of training windows: rendered, augmented views with the scene coordinate of every cell."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import MappingCancelled
from ..geometry import PinholeCamera, backproject
from ..imaging import Augmentation, apply_affine, augment, invert_affine, to_gray
from ..progress import Progress
from ..renderer import SyntheticScene
from .config import PretrainConfig
from .inits import INITS
from .scenes import RANDOMIZATION, photometric, random_light, scene_config


@dataclass
class Pool:
    """Windows of every augmented view with their scene coordinates (NaN where unknown)."""

    inputs: torch.Tensor  # (N, C, w*p, w*p) float16: stem features (dsift-ctx, p=1) or pixels (xfeat, p=8)
    coords: torch.Tensor  # (N, 3, w, w) float32, world frame of the window's scene
    scene: np.ndarray  # (N,) scene index of each window
    centres: torch.Tensor  # (S, 3) mean camera position of each scene (the heads' mean)


def _window_coords(
    depth: np.ndarray, pose: np.ndarray, camera: PinholeCamera, A: np.ndarray, cells: np.ndarray
) -> np.ndarray:
    """World points (n, 3) seen at augmented pixels ``cells`` (n, 2); NaN outside the view."""
    px = apply_affine(invert_affine(A), cells)
    h, w = depth.shape
    q = np.round(px).astype(int)
    ok = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
    out = np.full((len(cells), 3), np.nan, np.float32)
    z = depth[q[ok, 1], q[ok, 0]]
    world = backproject(px[ok], z, camera, pose)
    world[~(np.isfinite(z) & (z > 0))] = np.nan
    out[ok] = world
    return out


def build_pool(cfg: PretrainConfig, progress: Callable[[Progress], None] | None = None, cancel=None) -> Pool:
    """Render, augment and describe every scene's views (deterministic for ``cfg``)."""
    init = INITS[cfg.init]()
    geo = RANDOMIZATION["geometric"]
    aug = Augmentation(
        scale_min=geo["scale"][0],
        scale_max=geo["scale"][1],
        rotation_deg=geo["rotation_deg"],
        brightness=0.0,
        contrast=0.0,
    )
    win, p = cfg.window, init.pixels_per_cell
    total = cfg.scenes * cfg.frames_per_scene
    n = total * cfg.crops_per_frame
    inputs = torch.empty((n, init.pool_channels, win * p, win * p), dtype=torch.float16)
    coords = torch.empty((n, 3, win, win), dtype=torch.float32)
    scene_of = np.empty(n, np.int64)
    centres = torch.empty((cfg.scenes, 3), dtype=torch.float32)
    t0, k, done = time.perf_counter(), 0, 0
    for s in range(cfg.scenes):
        scene = SyntheticScene(scene_config(cfg.seed, s, cfg.frames_per_scene))
        centres[s] = torch.as_tensor(np.mean([T[:3, 3] for T in scene.mapping_poses], axis=0), dtype=torch.float32)
        for f in range(cfg.frames_per_scene):
            if cancel is not None and cancel.is_set():
                raise MappingCancelled("pretraining cancelled while building the training pool")
            rng = np.random.default_rng([cfg.seed, 11, s, f])
            pose = scene.mapping_poses[f]
            rgb, depth = scene.render(pose, random_light(rng, scene.room), noise_seed=int(rng.integers(2**31)))
            gray = to_gray(rgb)
            for _ in range(cfg.crops_per_frame):
                img, A = augment(gray, cfg.image_height, rng, aug)
                img = photometric(img, rng)
                view, fh, fw = init.view(img)
                y0 = int(rng.integers(0, max(1, fh - win + 1)))
                x0 = int(rng.integers(0, max(1, fw - win + 1)))
                window = view[:, y0 * p : (y0 + win) * p, x0 * p : (x0 + win) * p]
                cells = init.feature_pixels(fh, fw).reshape(fh, fw, 2)[y0 : y0 + win, x0 : x0 + win]
                ch, cw = cells.shape[:2]
                xyz = _window_coords(depth, pose, scene.camera, A, cells.reshape(-1, 2)).reshape(ch, cw, 3)
                inputs[k].zero_()
                coords[k].fill_(float("nan"))
                inputs[k, :, : window.shape[1], : window.shape[2]] = window.to(torch.float16)
                coords[k, :, :ch, :cw] = torch.from_numpy(xyz).permute(2, 0, 1)
                scene_of[k] = s
                k += 1
            done += 1
            if progress:
                progress(Progress("pool", done, total, time.perf_counter() - t0, message=f"scene {s + 1}/{cfg.scenes}"))
    return Pool(inputs, coords, scene_of, centres)

"""The map's implicit reconstruction, shown as the map cloud in rviz: the head's scene
coordinates on up to ``cloud_frames`` evenly spaced mapping frames, kept where they reproject
within ``cloud_max_error_px`` under the frame's known pose, at most ``cloud_max_points``."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch

from ..datasets.base import Frame
from ..device import autocast
from ..geometry import project_world_points
from ..imaging import apply_affine, inside, invert_affine
from ..mapping_config import MappingConfig
from ..progress import Progress


@torch.no_grad()
def reconstruct(
    head: torch.nn.Module,
    frames: Sequence[Frame],
    config: MappingConfig,
    encode: Callable[[Frame], tuple | None],
    head_input: Callable[[torch.Tensor, int], torch.Tensor],
    feature_pixels: Callable[[int, int], np.ndarray],
    device: torch.device,
    amp_dtype,
    report: Callable[[Progress], None],
    check_cancel: Callable[[], None],
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Points (N, 3) float32 and their colours (N, 3) uint8, or (None, None).

    ``encode(frame)``: (features (1, C, h, w), RGB image, the affine map from the image to the
    encoder's input) or None for an unreadable frame; ``head_input(features (h*w, C), frame
    index)``: what the head reads for them; ``feature_pixels(h, w)``: the encoder-input pixels
    (h*w, 2) the features stand for."""
    cfg = config
    if cfg.cloud_frames <= 0 or cfg.cloud_max_points <= 0:
        return None, None
    picks = np.unique(np.linspace(0, len(frames) - 1, min(cfg.cloud_frames, len(frames))).round().astype(int))
    per_frame = max(1, cfg.cloud_max_points // len(picks))
    rng = np.random.default_rng(cfg.seed)
    xyz_all, rgb_all = [], []
    t0 = time.perf_counter()
    for k, i in enumerate(picks):
        check_cancel()
        frame = frames[i]
        encoded = encode(frame)
        if encoded is None:
            continue
        feats, rgb, A = encoded
        with autocast(device, amp_dtype):
            _, C, fh, fw = feats.shape
            coords = head(head_input(feats[0].reshape(C, -1).T, int(i)))
        coords = coords.float().cpu().numpy().astype(np.float64)
        px = apply_affine(invert_affine(A), feature_pixels(fh, fw))
        proj, z = project_world_points(coords, frame.pose, frame.camera)
        with np.errstate(invalid="ignore"):
            err = np.linalg.norm(proj - px, axis=1)
            good = np.flatnonzero(
                (z > 0) & (err < cfg.cloud_max_error_px) & inside(px, frame.camera.width, frame.camera.height)
            )
        if len(good) > per_frame:
            good = np.sort(rng.choice(good, per_frame, replace=False))
        q = np.clip(np.round(px[good]).astype(int), 0, [frame.camera.width - 1, frame.camera.height - 1])
        xyz_all.append(coords[good].astype(np.float32))
        rgb_all.append(rgb[q[:, 1], q[:, 0]].astype(np.uint8))
        report(
            Progress("cloud", k + 1, len(picks), time.perf_counter() - t0, message=f"{sum(map(len, xyz_all))} points")
        )
    if not xyz_all:
        return None, None
    return np.concatenate(xyz_all), np.concatenate(rgb_all)

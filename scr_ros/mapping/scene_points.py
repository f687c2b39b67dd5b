"""Scene points of the training rows, for the heads and parts that label points (HSCNet's
regions, SS-DVR's structural partitions).

Measured depth gives them where the buffer holds depth for at least half of its rows: the
paper's dense ground truth. RGB-only mapping has no other 3D points, so otherwise a first
ACE-style stage trains an ACE head on the buffer with the mapping loss, and the rows whose
prediction then reprojects within ``max_error_px`` of their pixel under the frame's pose become
known points: the points ACE itself would localize with.
"""

from __future__ import annotations

from typing import Callable

import torch

from .. import distributed
from ..device import autocast
from ..fit_context import TrainingBuffer
from ..geometry import camera_to_world, pixel_rays, project_camera_points, world_to_camera
from ..heads import SceneHead, build_head


def scene_points(
    buffer: TrainingBuffer,
    max_error_px: float,
    first_stage: Callable[[], SceneHead],
    train: Callable[[SceneHead], None],
    device: torch.device,
    amp_dtype,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(points (N, 3) in the map frame, known (N,) bool, source ``depth`` or ``triangulated``)
    for the buffer's N filled rows. ``first_stage()`` makes the ACE head of the first stage
    and ``train(head)`` trains it on the buffer, only when depth does not cover the rows."""
    n = buffer.size
    T, K = buffer.row_cameras()
    px = buffer.pixels[:n]
    ray = pixel_rays(px, K)
    depth = buffer.depth[:n] if buffer.depth is not None else None
    known = None if depth is None else torch.isfinite(depth) & (depth > 0)
    if known is not None and distributed.all_sum(float(known.sum())) >= 0.5 * distributed.all_sum(n):
        return camera_to_world(torch.nan_to_num(depth)[:, None] * ray, T), known, "depth"
    head = first_stage()
    train(head)
    head.eval()
    points = torch.empty((n, 3), device=device)
    with torch.no_grad(), autocast(device, amp_dtype):
        for s in range(0, n, 65536):
            e = min(s + 65536, n)  # the buffer's tensors may hold more rows than it filled
            points[s:e] = head(buffer.features[s:e].float()).float()
    cam = world_to_camera(points, T)
    z = cam[:, 2]
    proj = project_camera_points(cam, K, min_depth=1e-6)
    known = (z > 0.1) & ((proj - px).norm(dim=1) < max_error_px)
    return points, known, "triangulated"


def first_stage_head(buffer: TrainingBuffer, in_channels: int, width: int, seed: int) -> SceneHead:
    """The ACE head of the first stage, fitted to the mapping camera positions."""
    positions = -torch.einsum("nji,nj->ni", buffer.T_cam_world[:, :, :3], buffer.T_cam_world[:, :, 3]).cpu().numpy()
    head = build_head("ace", in_channels=in_channels, width=width)
    head.fit_to_cameras(positions, seed=seed)
    return head

"""The loss registry, :func:`build_loss` and the geometry losses share (see the package
docstring for the batch tensors every loss is called with)."""

from __future__ import annotations

import torch

from ..registry import Registry

LOSSES = Registry("loss")
register_loss = LOSSES.register


def build_loss(name: str, total_iterations: int, **config):
    return LOSSES.lookup(name)(total_iterations=total_iterations, **config)


def world_to_camera(coords: torch.Tensor, T_cam_world: torch.Tensor) -> torch.Tensor:
    """(N, 3) world points -> (N, 3) camera-frame points with per-row transforms (N, 3, 4)."""
    return torch.einsum("nij,nj->ni", T_cam_world[:, :, :3], coords) + T_cam_world[:, :, 3]



"""Generalized-mean pooling (Radenovic et al. 2018) over the encoder's dense features."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ImageDescriptor, register_descriptor


@register_descriptor("gem")
class GeM(ImageDescriptor):
    """``(mean over the image of x^p)^(1/p)`` per channel. GeM is defined for non-negative
    activations; learned descriptors such as XFeat's are signed, so the positive and negative
    parts are pooled separately (2 C entries)."""

    def __init__(self, channels: int, dim: int = 256, p: float = 3.0) -> None:
        if not isinstance(p, (int, float)) or not 1.0 <= p <= 16.0:
            raise ValueError(f"p must be a number in [1, 16], got {p!r}")
        super().__init__(channels, dim, p=float(p))
        self.p = float(p)
        self._init_projection()

    def raw_dim(self) -> int:
        return 2 * self.channels

    def aggregate(self, features: torch.Tensor) -> torch.Tensor:
        x = F.normalize(features, dim=1)
        parts = [x.clamp(min=0), (-x).clamp(min=0)]
        pooled = [part.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p) for part in parts]
        return torch.cat(pooled, dim=1)

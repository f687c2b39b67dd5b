"""The image-descriptor registry, the :class:`ImageDescriptor` base class and :func:`retrieve`."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import Registry

DESCRIPTORS = Registry("image descriptor", name_attribute="descriptor_type")
register_descriptor = DESCRIPTORS.register


class ImageDescriptor(nn.Module):
    """Base class: dense features (B, C, h, w) -> unit descriptors (B, dim).

    A subclass computes a raw descriptor of ``raw_dim(C)`` entries (:meth:`aggregate`); when
    that is more than ``dim``, a fixed random orthonormal projection (seeded, stored with the
    map) brings it to ``dim``, which keeps cosine similarities close (Johnson-Lindenstrauss)
    without needing more mapping images than dimensions, as a PCA would. Constructor keywords
    are kept in ``config`` so a map can rebuild the descriptor exactly.
    """

    descriptor_type = "base"

    def __init__(self, channels: int, dim: int = 256, **config) -> None:
        super().__init__()
        if not isinstance(channels, int) or not 1 <= channels <= 8192:
            raise ValueError(f"channels must be an integer in [1, 8192], got {channels!r}")
        if not isinstance(dim, int) or not 1 <= dim <= 8192:
            raise ValueError(f"dim must be an integer in [1, 8192], got {dim!r}")
        self.channels = channels
        self.config = {"channels": channels, "dim": dim, **config}

    def _init_projection(self) -> None:
        raw = self.raw_dim()
        self.dim = min(self.config["dim"], raw)
        self.register_buffer("projection", torch.zeros(self.dim, raw) if raw > self.dim else torch.zeros(0, raw))

    def raw_dim(self) -> int:
        raise NotImplementedError

    def aggregate(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, C, h, w) -> raw descriptors (B, raw_dim)."""
        raise NotImplementedError

    def fit(self, feature_rows: torch.Tensor, seed: int = 0) -> None:
        """Fit on local feature rows (N, C) sampled from the mapping images; the base class only
        draws the projection."""
        if self.projection.numel():
            gen = torch.Generator().manual_seed(seed)
            q, _ = torch.linalg.qr(torch.randn(self.projection.shape[1], self.dim, generator=gen))
            self.projection.copy_(q.T)

    @torch.no_grad()
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        d = F.normalize(self.aggregate(features.float()), dim=1)
        if self.projection.numel():
            d = F.normalize(d @ self.projection.T.to(d.dtype), dim=1)
        return d


def build_descriptor(name: str, **config) -> ImageDescriptor:
    """Instantiate a registered descriptor; unknown names or keywords raise ``ValueError``."""
    return DESCRIPTORS.build(name, **config)


def retrieve(query: torch.Tensor, database: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` database rows most similar to each query.

    Args:
        query: (Q, D) or (D,) unit descriptors.
        database: (F, D) unit descriptors.
        n: how many to return (at most F).

    Returns:
        indices (Q, n) int64, most similar first, and their cosine similarities (Q, n).
    """
    q = query.reshape(-1, database.shape[1]).float()
    sims = q @ database.float().T
    top = torch.topk(sims, k=min(n, database.shape[0]), dim=1)
    return top.indices, top.values

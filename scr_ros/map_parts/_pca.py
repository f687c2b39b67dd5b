"""Compact maps (R-SCoRe, appendix A.1 and A.5): PCA of the local encodings.

The PCA is fitted on the mapping frames' features (the training buffer) and stored in the map;
the head then reads ``dim`` channels instead of the encoder's ``C``. That shrinks the training
buffer by ``C / dim`` (it holds projected features) and the head's input layers, and together
with fp16 weights (the map default) keeps maps small. Relocalization applies the same
projection before the head.

Shapes: features (N, C) -> (N, dim). The projection is ``(x - mean) @ components.T`` with
``components`` (dim, C) orthonormal rows, the leading eigenvectors of the feature covariance.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ScrError


class PcaProjection(nn.Module):
    """A fixed linear map (N, C) -> (N, dim); not trained with the head."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        if not 1 <= dim <= in_channels:
            raise ScrError(f"PCA dimension must be between 1 and the encoder's {in_channels} channels, got {dim}")
        self.in_channels, self.dim = int(in_channels), int(dim)
        self.register_buffer("mean", torch.zeros(in_channels))
        self.register_buffer("components", torch.zeros(dim, in_channels))
        self.explained_variance = float("nan")  # fraction of the feature variance kept (set by fit)

    @classmethod
    def fit(cls, features: torch.Tensor, dim: int, max_samples: int = 200_000, seed: int = 0) -> "PcaProjection":
        """Fit on up to ``max_samples`` rows of ``features`` (N, C), any float dtype and device."""
        n, c = features.shape
        proj = cls(c, dim)
        gen = torch.Generator().manual_seed(seed)
        rows = torch.randperm(n, generator=gen)[:max_samples].to(features.device)
        x = features[rows].double()
        mean = x.mean(dim=0)
        cov = (x - mean).T @ (x - mean) / max(len(x) - 1, 1)
        eigval, eigvec = torch.linalg.eigh(cov)  # ascending
        order = torch.argsort(eigval, descending=True)[:dim]
        proj.mean.copy_(mean.float().cpu())
        proj.components.copy_(eigvec[:, order].T.float().cpu())
        total = float(eigval.clamp(min=0).sum())
        proj.explained_variance = float(eigval[order].clamp(min=0).sum()) / total if total > 0 else float("nan")
        return proj.to(features.device)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, dim), in the input's dtype."""
        return ((features - self.mean.to(features.dtype)) @ self.components.T.to(features.dtype)).to(features.dtype)

    def describe(self) -> dict:
        return {"type": "pca", "in_channels": self.in_channels, "dim": self.dim}

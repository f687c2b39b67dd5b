"""VLAD (Jegou et al. 2010) over the encoder's dense features."""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .base import ImageDescriptor, register_descriptor


@register_descriptor("vlad")
class Vlad(ImageDescriptor):
    """Per visual word (k-means centre of unit local features), the sum of the residuals of the
    features assigned to it; each word's sum normalized (intra-normalization), then the whole.

    ``clusters`` defaults to ``dim // C`` (at least 1), so that with XFeat's 64 channels VLAD
    gives 4 x 64 = 256 entries, R-SCoRe's and GLACE's global encoding size, with no projection.
    """

    def __init__(self, channels: int, dim: int = 256, clusters: int | None = None) -> None:
        clusters = clusters if clusters is not None else max(1, dim // channels)
        if not isinstance(clusters, int) or not 1 <= clusters <= 1024:
            raise ValueError(f"clusters must be an integer in [1, 1024], got {clusters!r}")
        super().__init__(channels, dim, clusters=clusters)
        self.clusters = clusters
        self.register_buffer("centres", torch.zeros(clusters, channels))
        self._init_projection()

    def raw_dim(self) -> int:
        return self.clusters * self.channels

    def fit(self, feature_rows: torch.Tensor, seed: int = 0) -> None:
        rows = F.normalize(feature_rows.float(), dim=1).cpu().numpy().astype(np.float32)
        if len(rows) <= self.clusters:
            centres = np.resize(rows, (self.clusters, self.channels))
        else:
            cv2.setRNGSeed(seed)
            criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-4)
            _, _, centres = cv2.kmeans(rows, self.clusters, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
        self.centres.copy_(torch.from_numpy(np.ascontiguousarray(centres, np.float32)))
        super().fit(feature_rows, seed)

    def aggregate(self, features: torch.Tensor) -> torch.Tensor:
        B, C, h, w = features.shape
        x = F.normalize(features.reshape(B, C, h * w).transpose(1, 2), dim=2)  # (B, hw, C)
        centres = self.centres.to(x.dtype)
        words = torch.cdist(x, centres[None].expand(B, -1, -1)).argmin(dim=2)  # (B, hw)
        assign = F.one_hot(words, self.clusters).to(x.dtype)  # (B, hw, k)
        residuals = assign.transpose(1, 2) @ x - assign.sum(1)[..., None] * centres  # (B, k, C)
        return F.normalize(residuals, dim=2).reshape(B, -1)

"""R-SCoRe's compact map: a PCA of the encoder features before the head."""

from __future__ import annotations

import torch

from ..errors import ScrError
from ..pca import PcaProjection
from .base import MapPart, register_map_part


@register_map_part("projection")
class PcaPart(MapPart):
    """R-SCoRe's compact map: a PCA of the encoder features, fitted on ``pca_samples`` mapping
    features before the buffer fills; the buffer and the head then hold ``pca_dim`` channels."""

    stage = "features"
    switch = "--pca DIM"

    @classmethod
    def wanted(cls, config) -> bool:
        return bool(config.pca_dim)

    @classmethod
    def check(cls, config, encoder_channels: int) -> None:
        if not 1 <= config.pca_dim <= encoder_channels:
            raise ScrError(f"pca_dim {config.pca_dim} must be between 1 and the encoder's {encoder_channels} channels")

    @classmethod
    def fit(cls, builder, frames=None, head=None, buffer=None) -> "PcaPart":
        cfg = builder.config
        sample = builder.fill_buffer(frames, size=min(cfg.pca_samples, cfg.buffer_size), stage="pca")
        return cls(PcaProjection.fit(builder.all_features(sample), cfg.pca_dim, seed=cfg.seed))

    def training_figures(self) -> dict:
        return {"pca_explained_variance": round(self.module.explained_variance, 4)}

    def header(self) -> dict:
        return self.module.describe()

    @classmethod
    def from_header(cls, entry: dict, in_channels: int) -> "PcaPart":
        if entry.get("type") != "pca" or entry.get("in_channels") != in_channels:
            raise ValueError(f"projection {entry} does not read the encoder's {in_channels} channels")
        return cls(PcaProjection(in_channels, entry["dim"]))

    def out_channels(self, in_channels: int) -> int:
        return self.module.dim

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        return self.module(features)

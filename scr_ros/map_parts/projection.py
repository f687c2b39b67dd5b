"""R-SCoRe's compact map: a PCA of the encoder features before the head."""

from __future__ import annotations

import torch

from ..errors import ScrError
from ..settings import Setting
from ._pca import PcaProjection
from .base import FitContext, MapPart, register_map_part


@register_map_part("pca")
class PcaPart(MapPart):
    """R-SCoRe's compact map: a PCA of the encoder features, fitted on ``samples`` mapping
    features before the buffer fills; the buffer and the head then hold ``dim`` channels.
    ``scr map --pca DIM`` and the mapping node's ``pca_dim`` switch it on. Map files call it
    ``projection``, as they always have."""

    file_key = "projection"
    stage = "features"
    progress_stages = (("pca", 0.02),)
    settings = (
        Setting(
            "dim",
            0,
            "channels the features are reduced to (R-SCoRe: 128); at most the encoder's; a positive value switches "
            "the PCA on",
            0,
            8192,
        ),
        Setting("samples", 100_000, "feature rows the PCA is fitted on (at most the buffer size)", 1, 100_000_000),
    )

    @classmethod
    def switched_on(cls, given: dict) -> bool:
        return given.get("dim", 0) > 0

    @classmethod
    def check(cls, settings: dict, in_channels: int) -> None:
        if not 1 <= settings["dim"] <= in_channels:
            raise ScrError(f"pca_dim {settings['dim']} must be between 1 and the encoder's {in_channels} channels")

    @classmethod
    def planned_channels(cls, settings: dict, in_channels: int) -> int:
        return settings["dim"]

    @classmethod
    def fit(cls, context: FitContext, settings: dict, frames=None, head=None, buffer=None) -> "PcaPart":
        sample = context.sample_features(frames, settings["samples"], stage="pca")
        return cls(PcaProjection.fit(sample, settings["dim"], seed=context.seed))

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

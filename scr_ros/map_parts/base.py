"""The map-part registry and the :class:`MapPart` base class (see the package docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..registry import Registry

if TYPE_CHECKING:
    from ..datasets.base import Frame

MAP_PARTS = Registry("map part", name_attribute="key")
register_map_part = MAP_PARTS.register

STAGES = ("features", "buffer", "trained")


def transform_features(parts: Iterable["MapPart"], features: torch.Tensor) -> torch.Tensor:
    """Encoder features (N, C) -> what the head reads: every part's transform in turn."""
    for part in parts:
        features = part.transform(features)
    return features


def head_input(features: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """Local rows (N, C) and one image's encoding (D,) or per-row encodings (N, D) -> (N, C + D)."""
    if context is None:
        return features
    context = context.to(features.dtype)
    return torch.cat([features, context.expand(len(features), -1) if context.dim() == 1 else context], dim=1)


def ordered() -> list[type["MapPart"]]:
    """The registered parts in the order they are fitted, applied and rebuilt: ``features``
    parts first (what they output is what later parts read), then ``trained`` ones."""
    return sorted(MAP_PARTS.values(), key=lambda cls: STAGES.index(cls.stage))


class MapPart:
    """Base class: a module (tensors stored in the map) plus the figures its header records.

    Subclasses set ``stage`` and, when they give selectors a per-correspondence signal,
    ``provides`` (the signal's name, e.g. ``"probability"``).
    """

    key = ""
    stage = "trained"
    provides: str | None = None
    # The scr map option of a part with a MappingConfig field of its own (e.g. "--pca DIM");
    # None: the part is switched on by ``MappingConfig.parts`` (``scr map --part KEY[=JSON]``).
    switch: str | None = None

    # A part whose module trains together with the head (SS-DVR's feature fusion): the buffer
    # holds rows before it, and training passes them through ``module`` (its ``transform``).
    trains_with_head = False
    # The name of the label the part gives each point (published with the scene points), if any.
    labels_name: str | None = None

    def __init__(self, module: nn.Module, info: dict | None = None) -> None:
        self.module = module
        self.info = dict(info or {})

    # -------------------------------------------------------------- mapping
    @classmethod
    def wanted(cls, config) -> bool:
        """Whether a :class:`~scr_ros.mapping_config.MappingConfig` asks for this part (by
        default: its key is in ``config.parts``)."""
        return cls.key in config.parts

    @classmethod
    def settings(cls, config) -> dict:
        """This part's settings from ``config.parts`` (empty when it has none)."""
        return dict(config.parts.get(cls.key) or {})

    @classmethod
    def check(cls, config, encoder_channels: int) -> None:
        """Refuse settings that cannot work, before mapping starts (raise ScrError)."""

    @classmethod
    def fit(cls, builder, frames: Sequence["Frame"] | None = None, head: nn.Module | None = None, buffer=None) -> "MapPart":
        """Fit on ``frames`` (stage ``features``), on the training ``buffer`` before the head
        trains (stage ``buffer``), or on the trained ``head`` and ``buffer`` (stage ``trained``);
        ``builder`` is the MapBuilder (device, progress, cancel, scene points)."""
        raise NotImplementedError

    def training_figures(self) -> dict:
        """Entries for the map's ``training`` block."""
        return {}

    # -------------------------------------------------------------- map file
    def header(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_header(cls, entry: dict, in_channels: int) -> "MapPart":
        """Rebuild from the header ``entry`` for features of ``in_channels`` (weights not loaded);
        raise ValueError when the entry does not fit."""
        raise NotImplementedError

    # -------------------------------------------------------------- relocalization
    def out_channels(self, in_channels: int) -> int:
        return in_channels

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, C) -> (N, out_channels(C)); what the head and later parts read."""
        return features

    # ------------------------------------------------------------- global context
    # A part with ``gives_context`` (GLACE's and R-SCoRe's global encodings) gives each image an
    # encoding that is appended to every feature the head reads: from the mapping frame's own
    # entry while training (with the part's augmentation), and from hypotheses at query time.
    gives_context = False

    def context_channels(self) -> int:
        return 0

    def training_context(self, frame_index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Mapping frame indices (B,) -> augmented encodings (B, D) for training rows."""
        raise NotImplementedError(f"map part {self.key!r} gives no context")

    def frame_context(self, frame_index: int) -> torch.Tensor:
        """The encoding (D,) of mapping frame ``frame_index``, without augmentation."""
        raise NotImplementedError(f"map part {self.key!r} gives no context")

    def query_contexts(self, features: torch.Tensor, hypotheses: int) -> torch.Tensor:
        """Encoder features (1, C, h, w) of a query -> up to ``hypotheses`` encodings (H, D), the
        most promising first (0: the part's own default)."""
        raise NotImplementedError(f"map part {self.key!r} gives no context")

    def point_labels(self, features: torch.Tensor) -> torch.Tensor:
        """The ``labels_name`` label (N,) int64 of each feature this part reads."""
        raise NotImplementedError(f"map part {self.key!r} gives no labels")

    def signal(self, features: torch.Tensor) -> np.ndarray:
        """The ``provides`` signal (N,) for the features the head reads."""
        raise NotImplementedError(f"map part {self.key!r} provides no signal")

    def to(self, device) -> "MapPart":
        self.module = self.module.to(device).eval()
        return self

"""The base class of scene heads, their registry and :func:`build_head`.

A head maps encoder features (N, C) to scene coordinates (N, 3) in the map frame, metres.
It is a per-pixel MLP: applying it to every feature of a (B, C, h, w) map is the same as ACE's
1x1 convolutions, and working on (N, C) rows lets training sample features freely from the
buffer. Heads are registered by name; a map stores the name and the constructor keywords
(``head.config``) so it can be rebuilt exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..fit_context import FitContext, TrainingBuffer
from ..registry import Registry

HEADS = Registry("head", name_attribute="head_type")
register_head = HEADS.register


class SceneHead(nn.Module):
    """Base class: ``forward(features (N, C)) -> scene coordinates (N, 3)``.

    Subclasses store their constructor keywords in ``self.config`` (JSON-serializable) and keep
    the mean mapping camera position in the ``mean`` buffer (predictions are offsets from it).
    A head built with ``score=True`` also predicts SS-DVR's discriminability ``s_hat`` (N,)
    per feature; :meth:`predict` returns it (``None`` for heads without it).
    """

    head_type = "base"
    predicts_score = False
    # Buffers in map-frame metres, stored as float32 even in an fp16 map.
    full_precision: tuple[str, ...] = ("mean",)

    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """features (N, C) -> (scene coordinates (N, 3), s_hat (N,) or None)."""
        return self(features), None

    def __init__(self, **config) -> None:
        super().__init__()
        self.config = dict(config)
        self.register_buffer("mean", torch.zeros(3))

    def set_mean(self, mean) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(3))

    @classmethod
    def scene_defaults(cls, positions: np.ndarray) -> dict:
        """Constructor keywords this head picks from the mapping camera positions (F, 3), e.g.
        GLACE's depth by scene size; the mapping config's head settings override them."""
        return {}

    def fit_to_cameras(self, positions: np.ndarray, seed: int = 0) -> None:
        """Set what the head derives from the mapping camera positions (F, 3) before training:
        the mean they are predicted around (GLACE's head adds its cluster centres)."""
        self.set_mean(np.mean(positions, axis=0))

    def training_outputs(
        self, features: torch.Tensor, targets: dict | None = None, groups: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, dict]:
        """features (N, C) -> (every coordinate output the loss supervises, each (N, 3); s_hat;
        logits by label name).

        One output and no logits for most heads; R-SCoRe's head also supervises its coarse
        output, HSCNet's returns its region and sub-region logits. ``targets``: the per-row
        targets :meth:`fit_to_rows` gave (HSCNet conditions on the true labels while training);
        ``groups`` (N,): which image each row comes from, for heads that attend within an image."""
        coords, score = self.predict(features)
        return [coords], score, {}

    # A head that classifies before it regresses names the loss that trains it (its labels come
    # from :meth:`fit_to_rows`) and the label it gives each point (published with scene points).
    labels_loss: str | None = None
    labels_name: str | None = None

    # A head that attends among the rows of one image (HSCNet++) trains on batches of this many
    # rows from each of several images, as it sees them at query time (0: rows drawn freely).
    rows_per_image = 0

    def fit_to_rows(self, context: FitContext, buffer: TrainingBuffer) -> dict | None:
        """Fit what the head derives from the training rows before training (HSCNet's label
        hierarchy) and return per-row targets (name -> tensor (N, ...)), or None. ``context``
        is all of mapping the head may use."""
        return None

    def training_figures(self) -> dict:
        """Entries for the map's ``training`` block."""
        return {}

    def predict_labels(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """features (N, C) of one image -> (scene coordinates (N, 3), s_hat (N,) or None, label
        (N,) int64 or None)."""
        return (*self.predict(features), None)


class Dehomogenize:
    """ACE's homogeneous output (N, 4) -> offsets (N, 3): ``(x, y, z) / h`` with
    ``h = softplus(w) + 1/max_scale`` clamped to ``1/min_scale``; softplus's beta is chosen so
    that w = 0 gives h = 1."""

    def __init__(self, min_scale: float, max_scale: float) -> None:
        if not (
            isinstance(min_scale, (int, float))
            and isinstance(max_scale, (int, float))
            and 0 < min_scale < max_scale
            and max_scale > 1
        ):
            raise ValueError(
                f"need 0 < min_scale < max_scale and max_scale > 1, got min_scale={min_scale}, max_scale={max_scale}"
            )
        self.max_inv_scale = 1.0 / max_scale
        self.min_inv_scale = 1.0 / min_scale
        self.beta = math.log(2.0) / (1.0 - self.max_inv_scale)

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        h = F.softplus(out[:, 3:4], beta=self.beta) + self.max_inv_scale
        return out[:, :3] / h.clamp(max=self.min_inv_scale)


def check_int(name: str, value, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def build_head(name: str, **config) -> SceneHead:
    """Instantiate a registered head; an unknown name or bad settings raise
    :class:`~scr_ros.errors.SettingsError` (a ValueError)."""
    return HEADS.build(name, **config)

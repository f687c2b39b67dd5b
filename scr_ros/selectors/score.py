"""SS-DVR's selection by the head's discriminability score."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ScrError
from .base import register_selector


@register_selector("score")
@dataclass
class ScoreSelector:
    """Drop the correspondences whose discriminability score is below the ``percentile``-th
    percentile of this frame's scores (SS-DVR section 4: "the 0.51 percentile of all
    discriminability scores is used as the threshold", so 0.51 % of the points go; their Fig. 4
    shows accuracy first rising, then falling as the percentile grows).
    """

    percentile: float = 0.51
    needs = "score"
    auto_priority = 1
    requires = "a map whose head predicts a discriminability score (scr map --score)"

    def __post_init__(self) -> None:
        if not 0.0 <= self.percentile < 100.0:
            raise ScrError(f"score selector: percentile must be in [0, 100), got {self.percentile}")

    def __call__(self, n: int, score=None, probability=None, pixels=None) -> np.ndarray:
        if score is None:
            raise ScrError(f"the score selector needs {self.requires}")
        order = np.argsort(-score, kind="stable")
        return order[: n - int(np.floor(self.percentile / 100.0 * n))]

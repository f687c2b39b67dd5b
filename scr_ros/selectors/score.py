"""SS-DVR's selection by the head's discriminability score."""

from __future__ import annotations

import numpy as np

from ..errors import ScrError
from ..settings import Setting
from .base import Selector, register_selector


@register_selector("score")
class ScoreSelector(Selector):
    """Drop the correspondences whose discriminability score is below the ``percentile``-th
    percentile of this frame's scores (SS-DVR section 4: "the 0.51 percentile of all
    discriminability scores is used as the threshold", so 0.51 % of the points go; their Fig. 4
    shows accuracy first rising, then falling as the percentile grows).
    """

    settings = (
        Setting(
            "percentile",
            0.51,
            "correspondences scoring below this percentile of the frame's scores are dropped before RANSAC "
            "(SS-DVR: 0.51)",
            0.0,
            99.0,
        ),
    )
    needs = "score"
    auto_priority = 1
    requires = "a map whose head predicts a discriminability score (scr map --score)"

    def __call__(self, n: int, score=None, probability=None, pixels=None) -> np.ndarray:
        if score is None:
            raise ScrError(f"the score selector needs {self.requires}")
        order = np.argsort(-score, kind="stable")
        return order[: n - int(np.floor(self.percentile / 100.0 * n))]

"""A fixed number of correspondences spread over the image, for a cheaper RANSAC."""

from __future__ import annotations

import numpy as np

from ..settings import Setting
from .base import Selector, register_selector


@register_selector("subsample")
class SubsampleSelector(Selector):
    """``count`` correspondences taken at even steps through the frame's raster order, so they
    cover the whole image; every one of them when there are fewer.

    RANSAC's cost grows with the correspondences it scores every hypothesis on, while a few
    hundred well-spread ones decide the pose as surely as 4,800: the final pose is refined on
    every finite correspondence that agrees with it (:func:`scr_ros.ransac.refine_pose`), so the
    subsample only speeds up the search. The choice does not depend on the frame's content, so
    it is the same for every frame of one size (no randomness).
    """

    settings = (
        Setting(
            "count",
            1200,
            "how many correspondences RANSAC sees, spread evenly over the image (the pose is then refined on all)",
            50,
            1_000_000,
        ),
    )
    auto_priority = -1  # never what auto means: it trades a little accuracy for speed, by choice

    def __call__(self, n: int, score=None, probability=None, pixels=None) -> np.ndarray:
        if n <= self.count:
            return np.arange(n)
        return np.unique(np.linspace(0, n - 1, self.count).round().astype(np.int64))

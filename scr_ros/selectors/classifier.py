"""Matching Rates' selection by the keypoint classifier, spread over the image."""

from __future__ import annotations

import numpy as np

from ..errors import ScrError
from ..settings import Setting
from .base import Selector, register_selector


@register_selector("classifier")
class ClassifierSelector(Selector):
    """Correspondences ranked by the keypoint classifier's P(inlier).

    Keeps those with probability >= ``min_probability``, at most ``top_k`` of them (0: no cap)
    and at least the ``min_keep`` most likely ones (so a hard frame is still tried rather than
    thrown away). When the cap leaves some out, the kept ones are spread over a ``grid`` x ``grid``
    partition of the image: every cell's most likely candidate first, then every cell's second,
    and so on. The classifier favours some image regions (textured, near, well-mapped), and a
    pose fitted to points crowded into a few of them is poorly conditioned (docs/ablation.md
    measures both). ``grid`` 0 keeps the plain ranking.
    """

    settings = (
        Setting("min_probability", 0.5, "keep correspondences whose inlier probability is at least this", 0.0, 1.0),
        Setting("top_k", 1024, "keep at most this many of the most likely inliers (0: no cap)", 0, 1_000_000),
        Setting(
            "min_keep",
            200,
            "keep at least this many of the most likely, even below min_probability (a hard frame is tried, not "
            "thrown away)",
            0,
            1_000_000,
        ),
        Setting(
            "grid",
            8,
            "when the cap leaves candidates out, spread the kept ones over a grid of this many cells per image "
            "side (0: the plain most-likely ranking)",
            0,
            64,
        ),
    )
    needs = "probability"
    auto_priority = 2
    requires = "a map with a keypoint classifier (scr map --classifier)"

    def __call__(self, n: int, score=None, probability=None, pixels=None) -> np.ndarray:
        if probability is None:
            raise ScrError(f"the classifier selector needs {self.requires}")
        order = np.argsort(-probability, kind="stable")
        passing = int((probability >= self.min_probability).sum())
        keep = min(passing, self.top_k) if self.top_k else passing
        keep = min(max(keep, self.min_keep), n)
        if keep >= passing or self.grid <= 1:
            return order[:keep]
        if pixels is None:
            raise ScrError("the classifier selector spreads its pick over the image and needs the pixels (or grid=0)")
        candidates = order[:passing]
        return candidates[_spread_order(np.asarray(pixels, dtype=np.float64)[candidates], self.grid)[:keep]]


def _spread_order(pixels: np.ndarray, grid: int) -> np.ndarray:
    """Round-robin over image cells: indices into ``pixels`` (M, 2), already sorted best first,
    ordered by their rank within their cell (ties keep the given order)."""
    lo, hi = pixels.min(axis=0), pixels.max(axis=0)
    ij = np.minimum(((pixels - lo) / np.maximum(hi - lo, 1e-9) * grid).astype(np.int64), grid - 1)
    cell = ij[:, 1] * grid + ij[:, 0]
    by_cell = np.argsort(cell, kind="stable")
    sorted_cells = cell[by_cell]
    rank = np.empty(len(cell), dtype=np.int64)
    rank[by_cell] = np.arange(len(cell)) - np.searchsorted(sorted_cells, sorted_cells)
    return np.argsort(rank, kind="stable")

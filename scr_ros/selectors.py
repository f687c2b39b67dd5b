"""Correspondence selectors: which of a frame's 2D-3D matches RANSAC gets to see.

A selector is registered by name and called with the per-correspondence signals the map can
produce; it returns the indices to keep, best first. Signals (all (N,) numpy arrays or None):

* ``score``: the head's discriminability ``s_hat`` (SS-DVR; heads built with ``score=True``);
* ``probability``: the keypoint classifier's P(inlier) (Matching Rates; maps with a classifier);
* ``pixels``: (N, 2) the correspondences' pixel positions, for selectors that spread their pick
  over the image.

Only finite correspondences are passed in. ``auto`` (the default of ``scr localize`` and the
relocalizer node) uses the classifier when the map has one, else the score when the head has
one, else everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ScrError
from .registry import Registry

SELECTORS = Registry("selector", name_attribute="name")
register_selector = SELECTORS.register


@register_selector("all")
@dataclass
class AllSelector:
    """Every correspondence (ACE)."""

    needs = None

    def __call__(self, n: int, score=None, probability=None, pixels=None) -> np.ndarray:
        return np.arange(n)


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

    def __post_init__(self) -> None:
        if not 0.0 <= self.percentile < 100.0:
            raise ScrError(f"score selector: percentile must be in [0, 100), got {self.percentile}")

    def __call__(self, n: int, score=None, probability=None, pixels=None) -> np.ndarray:
        if score is None:
            raise ScrError("the score selector needs a map whose head predicts a discriminability score (scr map --score)")
        order = np.argsort(-score, kind="stable")
        return order[: n - int(np.floor(self.percentile / 100.0 * n))]


@register_selector("classifier")
@dataclass
class ClassifierSelector:
    """Correspondences ranked by the keypoint classifier's P(inlier).

    Keeps those with probability >= ``min_probability``, at most ``top_k`` of them (0: no cap)
    and at least the ``min_keep`` most likely ones (so a hard frame is still tried rather than
    thrown away). When the cap leaves some out, the kept ones are spread over a ``grid`` x ``grid``
    partition of the image: every cell's most likely candidate first, then every cell's second,
    and so on. The classifier favours some image regions (textured, near, well-mapped), and a
    pose fitted to points crowded into a few of them is poorly conditioned (docs/ablation.md
    measures both). ``grid`` 0 keeps the plain ranking.
    """

    min_probability: float = 0.5
    top_k: int = 1024
    min_keep: int = 200
    grid: int = 8
    needs = "probability"

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_probability <= 1.0:
            raise ScrError(f"classifier selector: min_probability must be in [0, 1], got {self.min_probability}")
        if self.top_k < 0 or self.min_keep < 0 or self.grid < 0:
            raise ScrError("classifier selector: top_k, min_keep and grid must not be negative")

    def __call__(self, n: int, score=None, probability=None, pixels=None) -> np.ndarray:
        if probability is None:
            raise ScrError("the classifier selector needs a map with a keypoint classifier (scr map --classifier)")
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


def build_selector(name: str, **config):
    cls = SELECTORS.lookup(name, ScrError, also=("auto",))
    try:
        return cls(**config)
    except TypeError as exc:
        raise ScrError(f"bad settings for selector {name!r}: {exc}") from None


def auto_selector_name(has_classifier: bool, has_score: bool) -> str:
    return "classifier" if has_classifier else "score" if has_score else "all"

"""Correspondence selectors: which of a frame's 2D-3D matches RANSAC gets to see.

A selector is registered by name and called with the per-correspondence signals the map can
produce; it returns the indices to keep, best first. Signals (all (N,) numpy arrays or None):

* ``score``: the head's discriminability ``s_hat`` (SS-DVR; heads built with ``score=True``);
* ``probability``: the keypoint classifier's P(inlier) (Matching Rates; maps with a classifier).

Only finite correspondences are passed in. ``auto`` (the default of ``scr localize`` and the
relocalizer node) uses the classifier when the map has one, else the score when the head has
one, else everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import ScrError

SELECTORS: dict[str, type] = {}


def register_selector(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        if name in SELECTORS:
            raise ValueError(f"selector {name!r} is already registered")
        SELECTORS[name] = cls
        cls.name = name
        return cls

    return wrap


@register_selector("all")
@dataclass
class AllSelector:
    """Every correspondence (ACE)."""

    needs = None

    def __call__(self, n: int, score=None, probability=None) -> np.ndarray:
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

    def __call__(self, n: int, score=None, probability=None) -> np.ndarray:
        if score is None:
            raise ScrError("the score selector needs a map whose head predicts a discriminability score (scr map --score)")
        order = np.argsort(-score, kind="stable")
        return order[: n - int(np.floor(self.percentile / 100.0 * n))]


@register_selector("classifier")
@dataclass
class ClassifierSelector:
    """Correspondences ranked by the keypoint classifier's P(inlier).

    Keeps those with probability >= ``min_probability``, best first, at most ``top_k`` of them
    (0: no cap) and at least ``min_keep`` (the best ones even when the classifier doubts them,
    so a hard frame is still tried rather than thrown away).
    """

    min_probability: float = 0.5
    top_k: int = 1024
    min_keep: int = 200
    needs = "probability"

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_probability <= 1.0:
            raise ScrError(f"classifier selector: min_probability must be in [0, 1], got {self.min_probability}")
        if self.top_k < 0 or self.min_keep < 0:
            raise ScrError("classifier selector: top_k and min_keep must not be negative")

    def __call__(self, n: int, score=None, probability=None) -> np.ndarray:
        if probability is None:
            raise ScrError("the classifier selector needs a map with a keypoint classifier (scr map --classifier)")
        order = np.argsort(-probability, kind="stable")
        keep = int((probability >= self.min_probability).sum())
        if self.top_k:
            keep = min(keep, self.top_k)
        keep = min(max(keep, self.min_keep), n)
        return order[:keep]


def build_selector(name: str, **config):
    if name not in SELECTORS:
        raise ScrError(f"unknown selector {name!r}; registered: auto, {', '.join(sorted(SELECTORS))}")
    try:
        return SELECTORS[name](**config)
    except TypeError as exc:
        raise ScrError(f"bad settings for selector {name!r}: {exc}") from None


def auto_selector_name(has_classifier: bool, has_score: bool) -> str:
    return "classifier" if has_classifier else "score" if has_score else "all"

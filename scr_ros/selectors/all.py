"""Every correspondence, as ACE hands them to RANSAC."""

from __future__ import annotations

import numpy as np

from .base import Selector, register_selector


@register_selector("all")
class AllSelector(Selector):
    """Every correspondence (ACE)."""

    def __call__(self, n: int, score=None, probability=None, pixels=None) -> np.ndarray:
        return np.arange(n)

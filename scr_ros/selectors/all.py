"""Every correspondence, as ACE hands them to RANSAC."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import register_selector


@register_selector("all")
@dataclass
class AllSelector:
    """Every correspondence (ACE)."""

    needs = None
    auto_priority = 0

    def __call__(self, n: int, score=None, probability=None, pixels=None) -> np.ndarray:
        return np.arange(n)

"""Correspondence selectors: which of a frame's 2D-3D matches RANSAC gets to see.

A selector is registered by name and called with the per-correspondence signals the map can
produce; it returns the indices to keep, best first. Signals (all (N,) numpy arrays or None):

* ``score``: the head's discriminability ``s_hat`` (SS-DVR; heads built with ``score=True``);
* ``probability``: the keypoint classifier's P(inlier) (Matching Rates; maps with a classifier);
* ``pixels``: (N, 2) the correspondences' pixel positions, for selectors that spread their pick
  over the image.

Only finite correspondences are passed in. ``auto`` (the default of ``scr localize`` and the
relocalizer node) uses the classifier when the map has one, else the score when the head has
one, else everything (each selector's ``auto_priority``). Adding a selector is adding a module
to this folder with a :class:`Selector` subclass that registers itself and declares its settings.
"""

from ..registry import import_parts
from .base import SELECTORS, Selector, auto_selector_name, build_selector, register_selector

import_parts(__name__, __path__)

from .all import AllSelector  # noqa: E402 - the built-in selectors, for direct use
from .classifier import ClassifierSelector  # noqa: E402
from .score import ScoreSelector  # noqa: E402
from .subsample import SubsampleSelector  # noqa: E402

__all__ = [
    "SELECTORS",
    "AllSelector",
    "ClassifierSelector",
    "ScoreSelector",
    "SubsampleSelector",
    "Selector",
    "auto_selector_name",
    "build_selector",
    "register_selector",
]

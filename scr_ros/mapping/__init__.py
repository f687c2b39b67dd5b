"""Mapping: posed frames -> a trained scene head and its map parts (:class:`MapBuilder`).

Rooms: :mod:`.builder` (the order of the steps), :mod:`.buffer` (the training buffer),
:mod:`.training` (the training loop), :mod:`.scene_points` (label points from depth or a first
stage), :mod:`.cloud` (the map cloud), :mod:`.rules` (what combines).
"""

from ..fit_context import TrainingBuffer
from .builder import MapBuilder
from .training import Schedule

__all__ = ["MapBuilder", "Schedule", "TrainingBuffer"]

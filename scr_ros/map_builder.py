"""Where :class:`MapBuilder` lived before mapping became a package (:mod:`scr_ros.mapping`); kept
so that code importing it from here keeps working."""

from .mapping import MapBuilder, TrainingBuffer

__all__ = ["MapBuilder", "TrainingBuffer"]

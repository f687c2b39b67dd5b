"""The loss registry, :func:`build_loss` and the geometry losses share (see the package
docstring for the batch tensors every loss is called with)."""

from __future__ import annotations

from ..registry import Registry

LOSSES = Registry("loss")
register_loss = LOSSES.register


def build_loss(name: str, total_iterations: int, **config):
    """A registered loss for a run of ``total_iterations``; an unknown name or bad settings raise
    :class:`~scr_ros.errors.SettingsError`. A loss class says whether it reads depth with the
    class attribute ``uses_depth`` (the buffer then holds depth)."""
    return LOSSES.build(name, total_iterations=total_iterations, **config)

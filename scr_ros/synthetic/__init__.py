"""Synthetic textured rooms rendered on the CPU: the demo scene and every end-to-end test's fixture."""

from .scene import Light, SceneConfig, SyntheticScene

__all__ = ["Light", "SceneConfig", "SyntheticScene"]

"""Synthetic textured rooms rendered on the CPU: the demo scene and every end-to-end test's fixture."""

from .scene import RENDERER_VERSION, Light, SceneConfig, SyntheticScene

__all__ = ["RENDERER_VERSION", "Light", "SceneConfig", "SyntheticScene"]

"""Synthetic textured rooms rendered on the CPU: the demo scene, every end-to-end test's fixture,
and integrated scenes of several rooms in one map."""

from .integrated import IntegratedConfig, IntegratedScene, integrated_rooms
from .scene import RENDERER_VERSION, Light, SceneConfig, SyntheticScene

__all__ = [
    "RENDERER_VERSION",
    "IntegratedConfig",
    "IntegratedScene",
    "Light",
    "SceneConfig",
    "SyntheticScene",
    "integrated_rooms",
]

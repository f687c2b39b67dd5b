"""Integrated scenes: several rooms mapped into one map, as 12-Scenes' i19 joins real rooms.

Each room is a :class:`~.scene.SyntheticScene` of its own; room ``r`` sits ``r * (Lx + gap)``
metres along the world x axis, so the rooms never overlap and every pose stays inside its room.
Rooms built with the same ``wall_seed`` or ``furniture_seed`` repeat each other's walls or
furniture: local appearance alone cannot tell those rooms apart, which is what global encodings
and GLACE's position decoder are for. Frames are numbered room after room.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..geometry import PinholeCamera
from .scene import SceneConfig, SyntheticScene


@dataclass(frozen=True)
class IntegratedConfig:
    """Rooms (all with the same camera) placed side by side along world x, ``gap`` metres apart."""

    rooms: tuple[SceneConfig, ...]
    gap: float = 1.0

    def __post_init__(self) -> None:
        if not self.rooms:
            raise ValueError("an integrated scene needs at least one room")
        if len({r.camera() for r in self.rooms}) != 1:
            raise ValueError("the rooms of an integrated scene must share one camera (width, height, focal)")

    @property
    def mapping_frames(self) -> int:
        return sum(r.mapping_frames for r in self.rooms)

    @property
    def query_frames(self) -> int:
        return sum(r.query_frames for r in self.rooms)

    def camera(self) -> PinholeCamera:
        return self.rooms[0].camera()

    def to_dict(self) -> dict:
        return {"rooms": [r.to_dict() for r in self.rooms], "gap": self.gap}

    def build(self) -> "IntegratedScene":
        return IntegratedScene(self)


class IntegratedScene:
    """Renders the frames of an :class:`IntegratedConfig` in world coordinates."""

    def __init__(self, config: IntegratedConfig) -> None:
        self.config = config
        self.camera = config.camera()
        self.rooms = [SyntheticScene(r) for r in config.rooms]
        self.offsets = np.cumsum([0.0] + [r.room_size[0] + config.gap for r in config.rooms[:-1]])

    def _locate(self, index: int, query: bool) -> tuple[int, int]:
        for r, room in enumerate(self.config.rooms):
            n = room.query_frames if query else room.mapping_frames
            if index < n:
                return r, index
            index -= n
        raise IndexError(f"frame {index} is beyond the scene's {'query' if query else 'mapping'} frames")

    def room_of(self, index: int, query: bool) -> int:
        """Which room frame ``index`` of the mapping (or query) trajectory is in."""
        return self._locate(index, query)[0]

    def render_frame(self, index: int, query: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """rgb, depth and T_world_cam of frame ``index``, in the integrated scene's world frame."""
        r, local = self._locate(index, query)
        rgb, depth, T = self.rooms[r].render_frame(local, query)
        T = T.copy()
        T[0, 3] += self.offsets[r]
        return rgb, depth, T


def integrated_rooms(
    base: SceneConfig, seeds: list[int], wall_seeds: list[int | None], furniture_seeds: list[int | None]
) -> tuple[SceneConfig, ...]:
    """Rooms like ``base`` with their own seeds and, where given, shared wall / furniture seeds."""
    return tuple(
        dataclasses.replace(base, seed=s, wall_seed=w, furniture_seed=f)
        for s, w, f in zip(seeds, wall_seeds, furniture_seeds)
    )

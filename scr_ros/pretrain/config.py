"""What defines a pretraining run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ScrError
from .inits import INITS

# Seeds of pretraining scenes start here, far from the named scenes (0-4) and from the
# benchmark's unseen scenes, so no evaluation room is ever a training room.

SCENE_SEED_BASE = 1_000_000


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (recorded in checkpoints and the model card)."""

    init: str = "dsift-ctx"  # what is trained: a key of INITS
    scenes: int = 12
    steps: int = 2500
    seed: int = 0
    frames_per_scene: int = 48
    crops_per_frame: int = 2
    window: int = 32  # feature cells per side of a pool window (x 8 px)
    image_height: int = 480
    batch_scenes: int = 4  # scenes per step
    windows_per_scene: int = 4  # windows of each of those scenes per step (from different views)
    head_samples: int = 4096  # per scene and step: random pool cells with cached context features
    refresh_every: int = 250  # steps between recomputing the cached context features of the pool
    lr_encoder: float | None = None  # None: the init's own (INITS[init].lr_encoder)
    lr_head: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    head_width: int = 256
    width: int = 128
    context_channels: int = 128
    precision: str = "auto"
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        if self.init in INITS and self.lr_encoder is None:
            self.lr_encoder = INITS[self.init].lr_encoder

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ScrError(f"unknown pretraining settings: {', '.join(sorted(unknown))}")
        return cls(**d)

    def validate(self) -> None:
        if self.init not in INITS:
            raise ScrError(f"unknown --init {self.init!r}: one of {', '.join(INITS)}")
        if self.scenes < 1 or self.steps < 1 or self.frames_per_scene < 1 or self.crops_per_frame < 1:
            raise ScrError("scenes, steps, frames_per_scene and crops_per_frame must be at least 1")
        if not 4 <= self.window <= self.image_height // 8:
            raise ScrError(f"window must be 4..{self.image_height // 8} feature cells, got {self.window}")

"""What mapping hands the heads and map parts it fits: the training rows and a narrow context.

A head's :meth:`~scr_ros.heads.SceneHead.fit_to_rows` and a map part's
:meth:`~scr_ros.map_parts.MapPart.fit` receive a :class:`FitContext` and a
:class:`TrainingBuffer`, never the map builder: they may use what the protocol offers and
nothing else (``test/test_architecture.py`` checks every attribute they read on it), so the
builder's internals can change without a part noticing.

Shapes: buffer rows are features (N, C) float16, pixels (N, 2) float32 in the original image,
frame_index (N,) int64 into the per-frame tables T_cam_world (F, 3, 4) and intrinsics (F, 4)
(fx, fy, cx, cy).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

import torch

if TYPE_CHECKING:
    from .datasets.base import Frame
    from .progress import Progress


@dataclass
class TrainingBuffer:
    """Rows of (feature, original pixel, frame index) plus per-frame pose and intrinsics tables."""

    features: torch.Tensor  # (N, C) float16
    pixels: torch.Tensor  # (N, 2) float32
    frame_index: torch.Tensor  # (N,) int64
    depth: torch.Tensor | None  # (N,) float32 metres, NaN where unknown; only for depth losses
    T_cam_world: torch.Tensor  # (F, 3, 4) float32
    intrinsics: torch.Tensor  # (F, 4) float32: fx, fy, cx, cy
    size: int = 0  # rows filled (the tensors may hold more)
    passes: int = 0
    # Under several workers: each row's number in the buffer one worker would have filled.
    global_index: torch.Tensor | None = None
    # Per-row targets of heads that classify (HSCNet: label point, region, sub-region, valid).
    targets: dict | None = None

    def row_cameras(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each filled row's world-to-camera transform (N, 3, 4) and intrinsics (N, 4)."""
        rows = self.frame_index[: self.size]
        return self.T_cam_world[rows], self.intrinsics[rows]


class FitContext(Protocol):
    """What a head or map part may use while it is fitted during mapping."""

    seed: int  # the mapping run's seed
    device: torch.device  # where the buffer and the networks are
    encoder_channels: int  # channels of the encoder's features
    feature_cell_px: float  # one feature cell in original-image pixels

    def autocast(self) -> AbstractContextManager:
        """The autocast context mapping runs its networks under (for parts that train their own)."""

    def report(self, progress: "Progress") -> None:
        """Report progress of the part's own stage (its name is ``progress.stage``)."""

    def check_cancel(self) -> None:
        """Raise MappingCancelled when the build was cancelled (call between steps)."""

    def encode_frame(self, frame: "Frame") -> torch.Tensor | None:
        """Encoder features (1, C, h, w) of a mapping frame without augmentation (None: its image
        could not be read; the build records it)."""

    def sample_features(self, frames: Sequence["Frame"], rows: int, stage: str) -> torch.Tensor:
        """Up to ``rows`` encoder feature rows (N, C) drawn from augmented mapping frames as the
        buffer draws them, all workers' rows together (for fits that need a whole sample)."""

    def scene_points(
        self, buffer: TrainingBuffer, epochs: float | None, max_error_px: float
    ) -> tuple[torch.Tensor, torch.Tensor, str]:
        """A scene point (N, 3) for each buffer row, whether it is known (N,) bool, and where the
        points come from (``depth`` or ``triangulated``); computed once per build and shared."""

    def fine_tune(
        self,
        head: torch.nn.Module,
        buffer: TrainingBuffer,
        rows: torch.Tensor,
        epochs: float,
        lr: tuple[float, float],
        stage: str,
    ) -> tuple[int, float]:
        """Train the head further on the buffer ``rows`` (M,) at the loss's final inlier threshold;
        returns (iterations, final loss)."""

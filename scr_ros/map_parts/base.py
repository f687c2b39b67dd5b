"""The map-part registry and the :class:`MapPart` base class (see the package docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..fit_context import FitContext, TrainingBuffer
from ..registry import Registry
from ..settings import Setting, resolve

if TYPE_CHECKING:
    from ..datasets.base import Frame

MAP_PARTS = Registry("map part", name_attribute="key")
register_map_part = MAP_PARTS.register

STAGES = ("features", "buffer", "trained")

__all__ = [
    "FitContext",
    "MAP_PARTS",
    "MapPart",
    "STAGES",
    "TrainingBuffer",
    "append_encoding",
    "ordered",
    "register_map_part",
    "transform_features",
]


def transform_features(parts: Iterable["MapPart"], features: torch.Tensor) -> torch.Tensor:
    """Encoder features (N, C) -> the local rows the head reads (N, C'): every part's transform
    in turn (the identity for parts without one)."""
    for part in parts:
        features = part.transform(features)
    return features


def append_encoding(rows: torch.Tensor, encoding: torch.Tensor | None) -> torch.Tensor:
    """Local rows (N, C) and one image's global encoding (D,) or per-row encodings (N, D) ->
    the head's input (N, C + D); the rows unchanged for maps without a global encoding."""
    if encoding is None:
        return rows
    encoding = encoding.to(rows.dtype)
    return torch.cat([rows, encoding.expand(len(rows), -1) if encoding.dim() == 1 else encoding], dim=1)


def ordered() -> list[type["MapPart"]]:
    """The registered parts in the order they are fitted, applied and rebuilt: ``features``
    parts first (what they output is what later parts read), then ``buffer``, then ``trained``
    ones; within a stage, a part that ``corrects_poses`` first (the others read the poses), then
    in registration order."""
    return sorted(MAP_PARTS.values(), key=lambda cls: (STAGES.index(cls.stage), not cls.corrects_poses))


class MapPart:
    """Base class: a module (tensors stored in the map) plus the figures its header records.

    A subclass declares, once:

    - ``key``: its name (``@register_map_part("key")``): ``--part KEY``, ``map_parts``, and, with
      ``_`` for ``-``, the prefix of its node parameters; ``file_key``: its name in the map file
      when that differs (a part renamed after maps were written with it);
    - ``stage``: when it is fitted (``features``, ``buffer`` or ``trained``);
    - ``settings``: a tuple of :class:`~scr_ros.settings.Setting` (default, type, range, help),
      which ``scr map --part KEY=JSON``, the mapping node's ``NAME_SETTING`` parameters, the docs
      table and the map header all read;
    - ``progress_stages``: the progress stages its :meth:`fit` reports, with their share of a
      build's time (the mapping node's percent counts them in);
    - optionally ``provides`` (a per-correspondence signal for selectors, e.g.
      ``"probability"``), ``labels_name`` (a label per point), ``trains_with_head`` or
      ``gives_global_encoding`` (see below).
    """

    key = ""
    file_key = ""
    stage = "trained"
    # Names in the module's state dict stored at their own precision, not the map's weights
    # dtype (poses, metres).
    full_precision: tuple[str, ...] = ()
    settings: tuple[Setting, ...] = ()
    progress_stages: tuple[tuple[str, float], ...] = ()
    provides: str | None = None

    # A part whose module trains together with the head (SS-DVR's feature fusion): the buffer
    # holds rows before it, and training passes them through ``module`` (its ``transform``).
    trains_with_head = False
    # The name of the label the part gives each point (published with the scene points), if any.
    labels_name: str | None = None
    # A part that labels the training rows' scene points (SS-DVR's structural partitions): it
    # asks its context for them, which may run a first ACE-style stage.
    uses_scene_points = False
    # A part that corrects the mapping cameras while the head trains (pose refinement): its
    # ``module`` is called on each batch's cameras, ``module(frame_index (B,), T_cam_world
    # (B, 3, 4), intrinsics (B, 4), fraction of training) -> (T_cam_world, intrinsics, prior)``
    # (prior: a scalar the loss adds, what the adjustment itself costs), and trained by its own
    # AdamW at ``training_lr``; after training :meth:`settle` gives the
    # corrected cameras everything after uses.
    adjusts_cameras = False
    training_lr = 1e-3
    # A ``features`` part that corrects the mapping poses before anything reads them (the pose
    # graph): after :meth:`fit`, :meth:`corrected_poses` gives them, and the build uses them in
    # place of the recorded ones from then on; its module keeps the recorded ones (``recorded``).
    corrects_poses = False

    def __init__(self, module: nn.Module, info: dict | None = None) -> None:
        self.module = module
        self.info = dict(info or {})

    @classmethod
    def option_name(cls) -> str:
        """The prefix of the part's node parameters."""
        return cls.key.replace("-", "_")

    @classmethod
    def header_key(cls) -> str:
        """The part's header entry and tensor prefix in map files."""
        return cls.file_key or cls.key

    # -------------------------------------------------------------- mapping
    @classmethod
    def resolve(cls, given: dict | None) -> dict:
        """The part's settings: its defaults updated by ``given`` (``scr map --part KEY=JSON``),
        each checked against its declaration; unknown names refused."""
        return resolve(cls.settings, given, f"map part {cls.key!r}")

    @classmethod
    def switched_on(cls, given: dict) -> bool:
        """Whether settings given without the part's key (the mapping node's NAME_SETTING
        parameters) switch the part on by themselves, as the PCA's ``dim`` does."""
        return False

    @classmethod
    def check(cls, settings: dict, in_channels: int) -> None:
        """Refuse resolved ``settings`` that cannot work for features of ``in_channels``, before
        mapping starts (raise ScrError). The declared ranges are checked already."""

    @classmethod
    def planned_channels(cls, settings: dict, in_channels: int) -> int:
        """The channels of a buffer row after this part, before it is fitted (for the buffer's
        memory estimate and for the parts after it)."""
        return in_channels

    @classmethod
    def fit(
        cls,
        context: FitContext,
        settings: dict,
        frames: Sequence["Frame"] | None = None,
        head: nn.Module | None = None,
        buffer: TrainingBuffer | None = None,
    ) -> "MapPart":
        """Fit with the resolved ``settings``: on ``frames`` (stage ``features``), on the training
        ``buffer`` before the head trains (stage ``buffer``), or on the trained ``head`` and the
        ``buffer`` (stage ``trained``). ``context`` is all of mapping a part may use."""
        raise NotImplementedError

    def settle(self) -> tuple[np.ndarray, float]:
        """A part that ``adjusts_cameras``, after training: the corrected camera-to-world poses
        (F, 4, 4) of the mapping frames and the focal-length scale."""
        raise NotImplementedError(f"map part {self.key!r} does not adjust the cameras")

    def corrected_poses(self) -> np.ndarray:
        """A part that ``corrects_poses``, once fitted: the mapping frames' camera-to-world poses
        (F, 4, 4) float64 the build goes on with."""
        raise NotImplementedError(f"map part {self.key!r} does not correct the poses")

    def training_figures(self) -> dict:
        """Entries for the map's ``training`` block."""
        return {}

    # -------------------------------------------------------------- map file
    def header(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_header(cls, entry: dict, in_channels: int) -> "MapPart":
        """Rebuild from the header ``entry`` for features of ``in_channels`` (weights not loaded);
        raise ValueError when the entry does not fit."""
        raise NotImplementedError

    # -------------------------------------------------------------- relocalization
    def out_channels(self, in_channels: int) -> int:
        return in_channels

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, C) -> (N, out_channels(C)); what the head and later parts read."""
        return features

    # ------------------------------------------------------------- global encoding
    # A part with ``gives_global_encoding`` (GLACE's and R-SCoRe's) gives each image an encoding
    # that is appended to every feature the head reads: from the mapping frame's own entry while
    # training (with the part's augmentation), and from hypotheses at query time.
    gives_global_encoding = False

    def encoding_channels(self) -> int:
        return 0

    def training_encodings(self, frame_index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Mapping frame indices (B,) -> augmented encodings (B, D) for training rows."""
        raise NotImplementedError(f"map part {self.key!r} gives no global encoding")

    def frame_encoding(self, frame_index: int) -> torch.Tensor:
        """The encoding (D,) of mapping frame ``frame_index``, without augmentation."""
        raise NotImplementedError(f"map part {self.key!r} gives no global encoding")

    def query_encodings(self, features: torch.Tensor, hypotheses: int) -> torch.Tensor:
        """Encoder features (1, C, h, w) of a query -> up to ``hypotheses`` encodings (H, D), the
        most promising first (0: the part's own default)."""
        raise NotImplementedError(f"map part {self.key!r} gives no global encoding")

    def point_labels(self, features: torch.Tensor) -> torch.Tensor:
        """The ``labels_name`` label (N,) int64 of each feature this part reads."""
        raise NotImplementedError(f"map part {self.key!r} gives no labels")

    def signal(self, features: torch.Tensor) -> np.ndarray:
        """The ``provides`` signal (N,) for the features the head reads."""
        raise NotImplementedError(f"map part {self.key!r} provides no signal")

    def to(self, device) -> "MapPart":
        self.module = self.module.to(device).eval()
        return self

"""MapBuilder: posed mapping frames -> training buffer -> trained scene head -> a SceneMap.

The builder orchestrates; each step is a room of its own in this package: the buffer
(:mod:`.buffer`), the training loop (:mod:`.training`), the scene points that label rows
(:mod:`.scene_points`), the map cloud (:mod:`.cloud`) and the rules for what combines
(:mod:`.rules`). A build runs:

1. the map parts of stage ``features`` (the pose graph, which corrects the mapping poses first;
   R-SCoRe's PCA, the global encodings), on the frames;
2. the training buffer, of rows the fitted parts transform;
3. the parts of stage ``buffer`` (SS-DVR's partitions), on the buffer;
4. the head: built for the rows, fitted to the cameras and to the rows (HSCNet's labels), and
   trained on the buffer with the registered loss, AdamW and a one-cycle schedule, under
   autocast (fp16 on CUDA, bf16 on CPUs that have it);
5. the parts of stage ``trained`` (Matching Rates' keypoint classifier);
6. the map cloud.

Heads and parts see a :class:`~scr_ros.fit_context.FitContext`, never the builder. Progress goes
to an optional callback (each report carries the whole build's ``overall`` fraction); a
``threading.Event`` (or anything with ``is_set()``) cancels between images / iterations. With
the same seed, device and precision the result is the same.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import AbstractContextManager
from typing import Callable, Sequence

import numpy as np
import torch

from .. import __version__, distributed
from ..datasets.base import Frame
from ..device import autocast, autocast_dtype, resolve_device
from ..encoders import Encoder
from ..errors import DatasetError, MappingCancelled, ScrError
from ..fit_context import FitContext, TrainingBuffer
from ..geometry import invert_pose
from ..heads import HEADS, SceneHead, build_head
from ..imaging import prepare, to_gray
from ..losses import LOSSES
from ..map_parts import MAP_PARTS, MapPart, append_encoding, ordered, transform_features
from ..mapfile import SceneMap
from ..mapping_config import MappingConfig, preset
from ..progress import CancelToken, Progress
from .buffer import BufferFiller, all_rows
from .cloud import reconstruct
from .rules import check_combination
from .scene_points import first_stage_head, scene_points
from .training import Schedule, TrainingSetup, row_sampler, train_head

# The usual share of a build's time of the stages every build has (cpu preset: buffer ~15 %,
# cloud ~1 %); parts add their own (MapPart.progress_stages), and the first stage that gives
# label points, when a head or part labels them, counts like half a training run.
BUFFER_SHARE, TRAIN_SHARE, CLOUD_SHARE, LABELS_SHARE = 0.14, 0.8, 0.01, 0.4


class MapBuilder:
    """Builds a :class:`SceneMap` from posed frames with a frozen encoder.

    Args:
        encoder: the frozen encoder (recorded in the map by name and checksum).
        config: a :class:`MappingConfig` (see :data:`~scr_ros.mapping_config.PRESETS`); its
            ``parts`` are resolved against each part's declared settings here, so a bad setting
            is refused before any work.
        device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
        progress: called with :class:`Progress` during the build.
        cancel: anything with ``is_set()``; when set, :meth:`build` raises ``MappingCancelled``.
    """

    def __init__(
        self,
        encoder: Encoder,
        config: MappingConfig | None = None,
        device="auto",
        progress: Callable[[Progress], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.encoder = encoder
        self.config = config or preset("ace")
        self.device = distributed.local_device(resolve_device(device))
        self.amp_dtype = autocast_dtype(self.device, self.config.precision)
        # Under several workers only rank 0 reports progress (and writes the map).
        self._progress = (progress if distributed.is_main() else None) or (lambda p: None)
        self.cancel = cancel
        self.unreadable: dict[str, str] = {}  # frame name -> why its image or depth could not be read
        self.encoder.to(self.device).eval()
        self.uses_depth = LOSSES.lookup(self.config.loss).uses_depth
        head_class = HEADS.lookup(self.config.head)
        unknown = sorted(set(self.config.parts) - set(MAP_PARTS))
        if unknown:
            raise ScrError(f"unknown map part {unknown[0]!r}; registered: {', '.join(sorted(MAP_PARTS))}")
        # The parts this run fits, in fitting order, with their resolved settings.
        self.wanted: list[type[MapPart]] = [cls for cls in ordered() if cls.key in self.config.parts]
        self.part_settings = {cls.key: cls.resolve(self.config.parts[cls.key]) for cls in self.wanted}
        channels = encoder.out_channels
        for cls in self.wanted:
            cls.check(self.part_settings[cls.key], channels)
            channels = cls.planned_channels(self.part_settings[cls.key], channels)
        self.row_channels = channels  # channels of a buffer row (before any global encoding)
        check_combination(self.wanted, self.config.head, bool(head_class.labels_loss))
        self.parts: dict[str, MapPart] = {}  # the parts fitted so far; the buffer holds their output
        self._scene_points = None
        self._plan: dict[str, tuple[float, float]] = {}
        self._overall = 0.0
        self._frame_height = 0

    # ------------------------------------------------------------------ small services

    def autocast(self) -> AbstractContextManager:
        """The autocast context mapping runs its networks under."""
        return autocast(self.device, self.amp_dtype)

    def check_cancel(self) -> None:
        """Raise MappingCancelled when the cancel token is set (called between images / iterations)."""
        if self.cancel is not None and self.cancel.is_set():
            raise MappingCancelled("map building was cancelled")

    def report(self, p: Progress) -> None:
        """Pass a stage's report on with the whole build's fraction (never decreasing)."""
        if p.stage in self._plan:
            start, share = self._plan[p.stage]
            self._overall = max(self._overall, min(1.0, start + share * p.fraction))
        p.overall = self._overall
        self._progress(p)

    def _plan_progress(self) -> None:
        head_labels = bool(HEADS.lookup(self.config.head).labels_loss)
        stages = [st for cls in self.wanted if cls.stage == "features" for st in cls.progress_stages]
        stages.append(("buffer", BUFFER_SHARE))
        if head_labels or any(cls.uses_scene_points for cls in self.wanted):
            stages.append(("labels", LABELS_SHARE))
        stages += [st for cls in self.wanted if cls.stage == "buffer" for st in cls.progress_stages]
        stages.append(("train", TRAIN_SHARE))
        stages += [st for cls in self.wanted if cls.stage == "trained" for st in cls.progress_stages]
        stages.append(("cloud", CLOUD_SHARE))
        total, start = sum(share for _, share in stages), 0.0
        self._plan, self._overall = {}, 0.0
        for name, share in stages:
            self._plan[name] = (start / total, share / total)
            start += share

    def _encode(self, frame: Frame) -> tuple[torch.Tensor, np.ndarray, np.ndarray] | None:
        """(features (1, C, h, w), RGB image, affine map to the encoder input) of a mapping frame
        at the map's image height, without augmentation; None (and the frame recorded as
        unreadable) when its image cannot be read."""
        try:
            rgb = frame.load_image()
        except DatasetError as exc:
            self.unreadable[frame.name] = str(exc)
            return None
        img, A = prepare(to_gray(rgb), self.config.image_height)
        with torch.no_grad(), self.autocast():
            return self.encoder(torch.from_numpy(np.ascontiguousarray(img))[None, None].to(self.device)), rgb, A

    def local_rows(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder features (N, C) -> a buffer row (N, C'): the fitted parts' transforms."""
        return transform_features(self.parts.values(), features)

    def local_channels(self) -> int:
        """Channels of a buffer row: the encoder's, through the map parts fitted so far."""
        channels = self.encoder.out_channels
        for part in self.parts.values():
            channels = part.out_channels(channels)
        return channels

    def head_channels(self) -> int:
        """Channels the head reads: a buffer row plus any global encoding."""
        return self.local_channels() + sum(part.encoding_channels() for part in self.parts.values())

    @property
    def encoding_part(self) -> MapPart | None:
        """The fitted part that gives images a global encoding, if any."""
        return next((part for part in self.parts.values() if part.gives_global_encoding), None)

    # ------------------------------------------------------------------ rooms

    def filler(self) -> BufferFiller:
        return BufferFiller(
            self.encoder,
            self.config,
            self.device,
            self.amp_dtype,
            self.local_rows,
            self.uses_depth,
            self.report,
            self.check_cancel,
            self.unreadable,
        )

    def fill_buffer(self, frames: Sequence[Frame], size: int | None = None, stage: str = "buffer") -> TrainingBuffer:
        """A training buffer of rows the fitted parts transform (``size`` rows at most)."""
        return self.filler().fill(frames, self.local_channels(), size=size, stage=stage)

    def train(
        self,
        head: SceneHead,
        buffer: TrainingBuffer,
        schedule: Schedule | None = None,
        rows: torch.Tensor | None = None,
    ) -> tuple[int, float]:
        """Train ``head`` on the buffer (or its selected ``rows``) with the fitted parts; the
        config's epochs and learning rates unless a ``schedule`` says otherwise."""
        cfg = self.config
        schedule = schedule or Schedule(cfg.epochs, (cfg.lr_min, cfg.lr_max))
        setup = TrainingSetup(
            cfg, self.device, self.amp_dtype, self.report, self.check_cancel, list(self.parts.values())
        )
        return train_head(head, buffer, setup, schedule, row_sampler(head, buffer, cfg, self.device, rows))

    def scene_points(
        self, buffer: TrainingBuffer, epochs: float | None, max_error_px: float
    ) -> tuple[torch.Tensor, torch.Tensor, str]:
        """The buffer rows' scene points (see :mod:`.scene_points`), computed once per build;
        a first stage trains ``epochs`` (None: the config's)."""
        if self._scene_points is None:
            cfg = self.config
            width = int(cfg.head_config.get("width", 512))
            self._scene_points = scene_points(
                buffer,
                max_error_px,
                first_stage=lambda: first_stage_head(buffer, self.head_channels(), width, cfg.seed),
                train=lambda head: self.train(
                    head,
                    buffer,
                    Schedule(
                        cfg.epochs if epochs is None else epochs,
                        (cfg.lr_min, cfg.lr_max),
                        "labels",
                        adjust_cameras=False,
                    ),
                ),
                device=self.device,
                amp_dtype=self.amp_dtype,
            )
        return self._scene_points

    def sample_features(self, frames: Sequence[Frame], rows: int, stage: str) -> torch.Tensor:
        """Up to ``rows`` feature rows drawn as the buffer draws them, all workers' together."""
        return all_rows(self.fill_buffer(frames, size=min(rows, self.config.buffer_size), stage=stage))

    # ------------------------------------------------------------------ public

    def build(self, frames: Sequence[Frame], preset_name: str | None = None) -> SceneMap:
        if len(frames) == 0:
            raise ScrError("no mapping frames")
        self._frame_height = max(f.camera.height for f in frames)
        cfg = self.config
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        self.parts, self._scene_points = {}, None
        self._plan_progress()
        context = _Context(self)
        for cls in self.wanted:
            if cls.stage == "features":
                self._fit(cls, context, frames=frames)
                if cls.corrects_poses:
                    corrected = self.parts[cls.key].corrected_poses()
                    frames = [dataclasses.replace(f, pose=T) for f, T in zip(frames, corrected)]
        buffer = self.fill_buffer(frames)
        t_buffer = time.perf_counter() - t0
        for cls in self.wanted:
            if cls.stage == "buffer":
                self._fit(cls, context, frames=frames, buffer=buffer)
        positions = np.stack([f.pose[:3, 3] for f in frames])
        head_config = {
            **HEADS.lookup(cfg.head).scene_defaults(positions),
            **cfg.head_config,
            **({"score": True} if cfg.score else {}),
        }
        head = build_head(cfg.head, in_channels=self.head_channels(), **head_config)
        head.fit_to_cameras(positions, seed=cfg.seed)
        buffer.targets = head.fit_to_rows(context, buffer)
        t1 = time.perf_counter()
        # Labels of scene points (first ACE stage, k-means, partition classifier), when any.
        t_labels = t1 - t0 - t_buffer if buffer.targets is not None or self._scene_points is not None else None
        iterations, final_loss = self.train(head, buffer)
        t_train = time.perf_counter() - t1
        frames = self._settle_cameras(frames, buffer)
        for cls in self.wanted:
            if cls.stage == "trained":
                self._fit(cls, context, head=head, buffer=buffer)
        head.eval()
        # The map's point cloud is only needed where the map is written.
        cloud_xyz, cloud_rgb = self._cloud(head, frames) if distributed.is_main() else (None, None)
        head.cpu()
        cameras = sorted({f.camera for f in frames}, key=lambda c: (c.width, c.height, c.fx))
        training = {
            "frames": len(frames),
            "buffer_size": int(distributed.all_sum(buffer.size)),
            "buffer_passes": buffer.passes,
            "iterations": iterations,
            "final_loss": final_loss,
            "buffer_seconds": round(t_buffer, 3),
            **({"label_seconds": round(t_labels, 3)} if t_labels is not None else {}),
            "train_seconds": round(t_train, 3),
            **{k: v for part in self.parts.values() for k, v in part.training_figures().items()},
            **head.training_figures(),
            "seconds": round(time.perf_counter() - t0, 3),
            **({"unreadable_frames": dict(sorted(self.unreadable.items()))} if self.unreadable else {}),
            "device": str(self.device),
            **({"workers": distributed.world_size()} if distributed.world_size() > 1 else {}),
            "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32",
            "preset": preset_name,
            # The settings as run: every part's resolved settings, defaults included.
            "config": {**cfg.to_dict(), "parts": self.part_settings},
            "scr_ros_version": __version__,
        }
        return SceneMap(
            head=head,
            encoder=self.encoder.describe(),
            image_height=cfg.image_height,
            training=training,
            cameras=[c.as_dict() for c in cameras[:16]],
            cloud_xyz=cloud_xyz,
            cloud_rgb=cloud_rgb,
            parts={key: part.to("cpu") for key, part in self.parts.items()},
            mapping_poses=np.stack([f.pose for f in frames]),
            mapping_frames=[f.name for f in frames],
            mapping_stamps_ns=[f.stamp_ns for f in frames],
        )

    def _settle_cameras(self, frames: Sequence[Frame], buffer: TrainingBuffer) -> list[Frame]:
        """After training, the cameras the parts that adjust them corrected (pose refinement):
        in the buffer's tables and in the frames everything after training uses."""
        frames = list(frames)
        for part in self.parts.values():
            if not part.adjusts_cameras:
                continue
            poses, focal_scale = part.settle()
            T_cam_world = np.stack([invert_pose(T)[:3] for T in poses])
            buffer.T_cam_world = torch.as_tensor(T_cam_world, dtype=torch.float32, device=self.device)
            buffer.intrinsics[:, :2] *= focal_scale
            frames = [
                dataclasses.replace(f, pose=T, camera=f.camera.with_focal_scale(focal_scale))
                for f, T in zip(frames, poses)
            ]
        return frames

    def _fit(self, cls: type[MapPart], context: FitContext, **inputs) -> None:
        self.parts[cls.key] = cls.fit(context, self.part_settings[cls.key], **inputs)
        distributed.broadcast_module(self.parts[cls.key].module)

    def _cloud(self, head: SceneHead, frames: Sequence[Frame]) -> tuple[np.ndarray | None, np.ndarray | None]:
        encoding_part = self.encoding_part

        def head_input(features: torch.Tensor, frame_index: int) -> torch.Tensor:
            encoding = encoding_part.frame_encoding(frame_index) if encoding_part else None
            return append_encoding(self.local_rows(features), encoding)

        return reconstruct(
            head,
            frames,
            self.config,
            self._encode,
            head_input,
            self.encoder.feature_pixels,
            self.device,
            self.amp_dtype,
            self.report,
            self.check_cancel,
        )


class _Context:
    """The :class:`FitContext` the builder hands to heads and parts: the protocol's members and
    nothing else of the builder's."""

    def __init__(self, builder: MapBuilder) -> None:
        self.seed = builder.config.seed
        self.device = builder.device
        self.encoder_channels = builder.encoder.out_channels
        # One feature cell in original-image pixels: the encoder stride at the map's image
        # height, for the tallest mapping camera.
        self.feature_cell_px = builder.encoder.stride * builder._frame_height / builder.config.image_height
        self.autocast = builder.autocast
        self.report = builder.report
        self.check_cancel = builder.check_cancel
        self.scene_points = builder.scene_points
        self.sample_features = builder.sample_features
        self._builder_encode = builder._encode
        self._builder_train = builder.train

    def encode_frame(self, frame: Frame) -> torch.Tensor | None:
        encoded = self._builder_encode(frame)
        return None if encoded is None else encoded[0]

    def fine_tune(self, head, buffer, rows, epochs, lr, stage) -> tuple[int, float]:
        return self._builder_train(
            head, buffer, Schedule(epochs, lr, stage, final_threshold=True, adjust_cameras=False), rows=rows
        )

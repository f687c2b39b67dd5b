"""MapBuilder: posed mapping frames -> training buffer -> trained scene head (the ACE recipe).

1. **Buffer.** Repeated passes over the mapping frames, each image randomly scaled, rotated and
   jittered in brightness/contrast, run through the frozen encoder; up to ``samples_per_image``
   random features whose position maps back inside the original image are stored with their
   original pixel position and frame index (and measured depth, for depth losses). Memory:
   ``buffer_size * (2 C + 16)`` bytes (+4 with depth) plus a small per-frame pose table.
2. **Training.** The head regresses scene coordinates from shuffled buffer rows with the
   registered loss (ACE's reprojection loss), AdamW and a one-cycle learning rate schedule,
   under autocast (fp16 on CUDA, bf16 on CPUs that have it).

Optional stages from the papers, each a setting of :class:`MappingConfig`:

- ``pca_dim``: a PCA of the features (``compact.PcaProjection``) is fitted on a first sample
  of mapping features; the buffer then holds projected rows and the map stores the PCA.
- ``score``: the head also predicts a discriminability score, trained by the loss (SS-DVR).
- ``classifier``: after training, a keypoint classifier learns which buffer rows the head gets
  right (``keypoints``), optionally followed by fine-tuning the head on the rows it accepts.
- depth: the ``ace-depth`` loss (``scr map --depth``).

Progress goes to an optional callback; a ``threading.Event`` (or anything with ``is_set()``)
cancels between images / iterations. With the same seed, device and precision the result is
the same.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from . import __version__
from .datasets.base import Frame
from .device import autocast, autocast_dtype, resolve_device, synchronize
from .encoders import Encoder
from .errors import DatasetError, MappingCancelled, ScrError
from .geometry import invert_pose, project
from .compact import PcaProjection
from .heads import build_head
from .imaging import Augmentation, apply_affine, augment, inside, invert_affine, prepare, to_gray
from .keypoints import ClassifierConfig, inlier_labels, train_classifier
from .losses import build_loss
from .mapfile import SceneMap


@dataclass
class MappingConfig:
    """All settings of a mapping run; presets are partial dicts of these fields."""

    image_height: int = 480
    buffer_size: int = 8_000_000
    samples_per_image: int = 1024
    max_buffer_passes: int = 100  # stop filling after this many passes even if not full
    batch_size: int = 5120
    epochs: float = 16.0
    lr_min: float = 5e-4
    lr_max: float = 5e-3
    weight_decay: float = 0.01
    augmentation: Augmentation = field(default_factory=Augmentation)
    head: str = "ace"
    head_config: dict = field(default_factory=dict)
    loss: str = "ace"
    loss_config: dict = field(default_factory=dict)
    score: bool = False  # head predicts SS-DVR's discriminability score; the loss weighs by it
    pca_dim: int = 0  # > 0: PCA of the encoder features to this many channels (R-SCoRe)
    pca_samples: int = 100_000  # feature rows the PCA is fitted on
    classifier: bool = False  # train a keypoint classifier after the head (Matching Rates)
    classifier_config: dict = field(default_factory=dict)  # keypoints.ClassifierConfig fields
    precision: str = "auto"
    seed: int = 0
    # The implicit reconstruction stored with the map (shown as the map cloud in rviz): head
    # predictions on up to cloud_frames evenly spaced mapping frames, kept where they reproject
    # within cloud_max_error_px under the frame's known pose. 0 frames: no cloud.
    cloud_frames: int = 100
    cloud_max_points: int = 200_000
    cloud_max_error_px: float = 4.0

    def buffer_bytes(self, channels: int = 512, depth: bool = False) -> int:
        """Bytes of the training buffer: fp16 features (``pca_dim`` of them with a PCA), float32
        pixel, int64 frame index, and a float32 depth when the loss uses depth."""
        return self.buffer_size * (2 * (self.pca_dim or channels) + 8 + 8 + (4 if depth else 0))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MappingConfig":
        d = dict(d)
        if isinstance(d.get("augmentation"), dict):
            d["augmentation"] = Augmentation(**d["augmentation"])
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ScrError(f"unknown mapping settings: {', '.join(sorted(unknown))}")
        return cls(**d)


# What the cpu and test presets share: the head, loss and augmentation tuned on CPU. A
# 256-channel head trained longer beats a 512-channel one in the same time; ace-depth uses depth
# where frames have it and is plain ACE where they do not. Narrower augmentation than ACE's
# (scale 0.8-1.25, +-5 deg, which still covers an upright robot camera) leaves the small head
# less to fit: on the demo scene it moved 5cm/5deg from 89 % to 91 % at 24 epochs (dsift).
_CPU_TRAINING: dict = {
    "augmentation": {"scale_min": 0.8, "scale_max": 1.25, "rotation_deg": 5.0},
    "head_config": {"width": 256},
    "loss": "ace-depth",
    "loss_config": {"depth_weight": 10.0},
}

PRESETS: dict[str, dict] = {
    # ACE's paper settings, for a GPU: 8M buffer, batch 5120, 16 epochs (~25k iterations),
    # 512-channel head, RGB-only reprojection loss.
    "ace": {},
    # Two CPU cores, ~500 frames in about five minutes with the xfeat encoder. Training is
    # compute-bound (bf16 matrix products on two cores), so the recipe buys accuracy per second:
    # batch 2560 runs 2.3x the iterations per second of batch 5120, and more, noisier steps did
    # better in the same time; up to 12 buffer passes give small scenes (the 50 SUN3D mapping
    # frames) a buffer of differently augmented views instead of 6 passes' worth. Narrower
    # (128, 192) heads lost accuracy on SUN3D, a head without its residual block, 1M-row buffers
    # and +-15 deg rotation lost it on the demo scene; torch.compile was slower. Trials, commands
    # and figures: docs/cpu_recipe.md.
    "cpu": {
        **_CPU_TRAINING,
        "buffer_size": 1_500_000,
        "samples_per_image": 1024,
        "max_buffer_passes": 12,
        "epochs": 24.0,
        "batch_size": 2560,
    },
    # Under a minute on two CPU cores, for tests and smoke runs: 240 px images, small buffer.
    "test": {
        **_CPU_TRAINING,
        "image_height": 240,
        "buffer_size": 200_000,
        "samples_per_image": 512,
        "max_buffer_passes": 4,
        "epochs": 20.0,
        "batch_size": 2048,
    },
}


def preset(name: str, **overrides) -> MappingConfig:
    """A :class:`MappingConfig` from a preset name plus field overrides."""
    if name not in PRESETS:
        raise ScrError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return MappingConfig.from_dict(copy.deepcopy({**PRESETS[name], **overrides}))


@dataclass
class Progress:
    """A progress report: ``stage`` is ``buffer``, ``train`` or ``cloud`` (the map's point cloud)."""

    stage: str
    step: int
    total: int
    elapsed_s: float
    loss: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.step / max(self.total, 1)

    @property
    def eta_s(self) -> float | None:
        return self.elapsed_s * (self.total - self.step) / self.step if self.step else None


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class TrainingBuffer:
    """Rows of (feature, original pixel, frame index) plus per-frame pose and intrinsics tables."""

    features: torch.Tensor  # (N, C) float16
    pixels: torch.Tensor  # (N, 2) float32
    frame_index: torch.Tensor  # (N,) int64
    depth: torch.Tensor | None  # (N,) float32 metres, NaN where unknown; only for depth losses
    T_cam_world: torch.Tensor  # (F, 3, 4) float32
    intrinsics: torch.Tensor  # (F, 4) float32: fx, fy, cx, cy
    size: int = 0
    passes: int = 0


class MapBuilder:
    """Builds a :class:`SceneMap` from posed frames with a frozen encoder.

    Args:
        encoder: the frozen encoder (recorded in the map by name and checksum).
        config: a :class:`MappingConfig` (see :data:`PRESETS`).
        device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
        progress: called with :class:`Progress` during buffer filling and training.
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
        self.device = resolve_device(device)
        self.amp_dtype = autocast_dtype(self.device, self.config.precision)
        self.progress = progress or (lambda p: None)
        self.cancel = cancel
        self.unreadable: dict[str, str] = {}  # frame name -> why its image or depth could not be read
        self.encoder.to(self.device).eval()
        self.uses_depth = getattr(build_loss(self.config.loss, 1, **self.config.loss_config), "uses_depth", False)
        if self.config.pca_dim and not 1 <= self.config.pca_dim <= encoder.out_channels:
            raise ScrError(f"pca_dim {self.config.pca_dim} must be between 1 and the encoder's {encoder.out_channels} channels")
        self.classifier_config = ClassifierConfig.from_dict(self.config.classifier_config)
        self.projection: PcaProjection | None = None

    # ------------------------------------------------------------------ public

    def build(self, frames: Sequence[Frame], preset_name: str | None = None) -> SceneMap:
        if len(frames) == 0:
            raise ScrError("no mapping frames")
        cfg = self.config
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        self.projection = None
        if cfg.pca_dim:
            sample = self.fill_buffer(frames, size=min(cfg.pca_samples, cfg.buffer_size), stage="pca")
            self.projection = PcaProjection.fit(sample.features[: sample.size], cfg.pca_dim, seed=cfg.seed)
            del sample
        buffer = self.fill_buffer(frames)
        t_buffer = time.perf_counter() - t0
        head_config = {**cfg.head_config, **({"score": True} if cfg.score else {})}
        head = build_head(cfg.head, in_channels=cfg.pca_dim or self.encoder.out_channels, **head_config)
        head.set_mean(np.mean([f.pose[:3, 3] for f in frames], axis=0))
        t1 = time.perf_counter()
        iterations, final_loss = self.train(head, buffer)
        t_train = time.perf_counter() - t1
        classifier, classifier_info = None, {}
        if cfg.classifier:
            classifier, classifier_info = self.train_keypoint_classifier(head, buffer)
        head.eval()
        cloud_xyz, cloud_rgb = self.reconstruct(head, frames)
        head.cpu()
        cameras = sorted({f.camera for f in frames}, key=lambda c: (c.width, c.height, c.fx))
        training = {
            "frames": len(frames),
            "buffer_size": buffer.size,
            "buffer_passes": buffer.passes,
            "iterations": iterations,
            "final_loss": final_loss,
            "buffer_seconds": round(t_buffer, 3),
            "train_seconds": round(t_train, 3),
            **({"classifier_seconds": classifier_info["seconds"]} if classifier_info else {}),
            **({"pca_explained_variance": round(self.projection.explained_variance, 4)} if self.projection is not None else {}),
            "seconds": round(time.perf_counter() - t0, 3),
            **({"unreadable_frames": dict(sorted(self.unreadable.items()))} if self.unreadable else {}),
            "device": str(self.device),
            "precision": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32",
            "preset": preset_name,
            "config": cfg.to_dict(),
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
            projection=None if self.projection is None else self.projection.cpu(),
            classifier=None if classifier is None else classifier.cpu(),
            classifier_info=classifier_info,
        )

    def train_keypoint_classifier(self, head: torch.nn.Module, buf: "TrainingBuffer") -> tuple[torch.nn.Module, dict]:
        """Label buffer rows by the trained head's reprojection error, train the classifier on
        them, and optionally fine-tune the head on the rows it accepts."""
        cc, dev = self.classifier_config, self.device
        t0 = time.perf_counter()
        head.eval()
        n = buf.size
        labels = inlier_labels(
            head, buf.features[:n], buf.pixels[:n], buf.T_cam_world[buf.frame_index[:n]], buf.intrinsics[buf.frame_index[:n]],
            cc.inlier_px, autocast_ctx=lambda: autocast(dev, self.amp_dtype),
        )
        t_label = time.perf_counter()
        clf, stats = train_classifier(
            buf.features[:n], labels, cc, seed=self.config.seed, autocast_ctx=lambda: autocast(dev, self.amp_dtype),
            progress=lambda i, total, loss, el: self.progress(Progress("classifier", i, total, el, loss=loss)), check_cancel=self._check_cancel,
        )
        stats["label_seconds"] = round(t_label - t0, 3)
        if cc.finetune_epochs > 0:
            with torch.no_grad():
                prob = torch.cat([clf.probability(buf.features[s : s + 65536].float()) for s in range(0, n, 65536)])
            rows = torch.nonzero(prob >= cc.finetune_min_probability).squeeze(1)
            stats["finetune_rows"] = int(len(rows))
            if len(rows):
                iterations, loss = self.train(
                    head, buf, rows=rows, epochs=cc.finetune_epochs, lr=(cc.finetune_lr_min, cc.finetune_lr_max), stage="finetune", final_threshold=True
                )
                stats.update(finetune_iterations=iterations, finetune_final_loss=round(loss, 5))
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        stats["inlier_px"] = cc.inlier_px
        return clf, stats

    @torch.no_grad()
    def reconstruct(self, head: torch.nn.Module, frames: Sequence[Frame]) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The map's implicit reconstruction: points (N, 3) float32 and their colours (N, 3) uint8."""
        cfg, dev = self.config, self.device
        if cfg.cloud_frames <= 0 or cfg.cloud_max_points <= 0:
            return None, None
        picks = np.unique(np.linspace(0, len(frames) - 1, min(cfg.cloud_frames, len(frames))).round().astype(int))
        per_frame = max(1, cfg.cloud_max_points // len(picks))
        rng = np.random.default_rng(cfg.seed)
        xyz_all, rgb_all = [], []
        t0 = time.perf_counter()
        for k, i in enumerate(picks):
            self._check_cancel()
            frame = frames[i]
            try:
                rgb = frame.load_image()
            except DatasetError as exc:
                self.unreadable[frame.name] = str(exc)
                continue
            img, A = prepare(to_gray(rgb), cfg.image_height)
            with autocast(dev, self.amp_dtype):
                feats = self.encoder(torch.from_numpy(np.ascontiguousarray(img))[None, None].to(dev))
                _, C, fh, fw = feats.shape
                coords = head(self._head_input(feats[0].reshape(C, -1).T))
            coords = coords.float().cpu().numpy().astype(np.float64)
            px = apply_affine(invert_affine(A), self.encoder.feature_pixels(fh, fw))
            proj, z = project(coords, frame.pose, frame.camera)
            with np.errstate(invalid="ignore"):
                err = np.linalg.norm(proj - px, axis=1)
                good = np.flatnonzero((z > 0) & (err < cfg.cloud_max_error_px) & inside(px, frame.camera.width, frame.camera.height))
            if len(good) > per_frame:
                good = np.sort(rng.choice(good, per_frame, replace=False))
            q = np.clip(np.round(px[good]).astype(int), 0, [frame.camera.width - 1, frame.camera.height - 1])
            xyz_all.append(coords[good].astype(np.float32))
            rgb_all.append(rgb[q[:, 1], q[:, 0]].astype(np.uint8))
            self.progress(Progress("cloud", k + 1, len(picks), time.perf_counter() - t0, message=f"{sum(map(len, xyz_all))} points"))
        if not xyz_all:
            return None, None
        return np.concatenate(xyz_all), np.concatenate(rgb_all)

    # ------------------------------------------------------------------ buffer

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise MappingCancelled("map building was cancelled")

    def _head_input(self, features: torch.Tensor) -> torch.Tensor:
        return features if self.projection is None else self.projection.to(features.device)(features)

    def _check_memory(self) -> None:
        need = self.config.buffer_bytes(self.encoder.out_channels, self.uses_depth)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
        else:
            try:
                free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError):
                return
        if need > 0.8 * free:
            raise ScrError(
                f"the training buffer needs {need / 2**30:.1f} GiB but only {free / 2**30:.1f} GiB is free on "
                f"{self.device}; choose a smaller preset or buffer_size"
            )

    def _prepare(self, frame: Frame, pass_index: int, frame_index: int):
        """Load and augment one frame (runs in a worker thread; deterministic per pass/frame)."""
        rng = np.random.default_rng([self.config.seed, pass_index, frame_index])
        gray = to_gray(frame.load_image())
        img, A = augment(gray, self.config.image_height, rng, self.config.augmentation)
        depth = frame.load_depth() if self.uses_depth else None
        if depth is not None and depth.shape != gray.shape:
            raise DatasetError(f"{frame.depth_path}: depth is {depth.shape[1]}x{depth.shape[0]}, image is {gray.shape[1]}x{gray.shape[0]}")
        return img, A, gray.shape, rng, depth

    def fill_buffer(self, frames: Sequence[Frame], size: int | None = None, stage: str = "buffer") -> TrainingBuffer:
        """Rows of head input (projected features once a PCA is fitted); ``size`` rows at most
        (default ``buffer_size``)."""
        cfg, dev = self.config, self.device
        size = cfg.buffer_size if size is None else size
        self._check_memory()
        C = self.encoder.out_channels
        width = C if self.projection is None else self.projection.dim
        buf = TrainingBuffer(
            features=torch.empty((size, width), dtype=torch.float16, device=dev),
            pixels=torch.empty((size, 2), dtype=torch.float32, device=dev),
            frame_index=torch.empty((size,), dtype=torch.int64, device=dev),
            depth=torch.full((size,), float("nan"), dtype=torch.float32, device=dev) if self.uses_depth else None,
            T_cam_world=torch.as_tensor(np.stack([invert_pose(f.pose)[:3] for f in frames]), dtype=torch.float32, device=dev),
            intrinsics=torch.as_tensor([[f.camera.fx, f.camera.fy, f.camera.cx, f.camera.cy] for f in frames], dtype=torch.float32, device=dev),
        )
        order_rng = np.random.default_rng(cfg.seed)
        expected_images = min(cfg.max_buffer_passes * len(frames), math.ceil(size / cfg.samples_per_image))
        t0, images_done = time.perf_counter(), 0
        # Lazy, so a frame found unreadable in one pass is not read again in the next.
        jobs = ((p, int(i)) for p in range(cfg.max_buffer_passes) for i in order_rng.permutation(len(frames)) if frames[i].name not in self.unreadable)
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending = []
            for _ in range(3):  # keep a few images decoded and augmented ahead of the encoder
                job = next(jobs, None)
                if job is not None:
                    pending.append((job, pool.submit(self._prepare, frames[job[1]], *job)))
            while pending and buf.size < size:
                self._check_cancel()
                (pass_index, fi), fut = pending.pop(0)
                job = next(jobs, None)
                if job is not None:
                    pending.append((job, pool.submit(self._prepare, frames[job[1]], *job)))
                try:
                    img, A, (h0, w0), rng, depth = fut.result()
                except DatasetError as exc:
                    # A file that passed the checks at open but does not decode: skipped and
                    # recorded in the map (training.unreadable_frames), not fatal.
                    self.unreadable[frames[fi].name] = str(exc)
                    images_done += 1
                    continue
                with torch.no_grad(), autocast(dev, self.amp_dtype):
                    feats = self.encoder(torch.from_numpy(img)[None, None].to(dev))
                _, _, fh, fw = feats.shape
                px = apply_affine(invert_affine(A), self.encoder.feature_pixels(fh, fw))
                valid = np.flatnonzero(inside(px, w0, h0))
                take = min(cfg.samples_per_image, len(valid), size - buf.size)
                if take > 0:
                    pick = np.sort(rng.choice(valid, size=take, replace=False))
                    rows = self._head_input(feats[0].reshape(C, -1).T[torch.as_tensor(pick, device=dev)].float())
                    s = slice(buf.size, buf.size + take)
                    buf.features[s] = rows.to(torch.float16)
                    buf.pixels[s] = torch.as_tensor(px[pick], dtype=torch.float32, device=dev)
                    buf.frame_index[s] = fi
                    if depth is not None:
                        q = np.round(px[pick]).astype(int)
                        buf.depth[s] = torch.as_tensor(depth[q[:, 1], q[:, 0]], dtype=torch.float32, device=dev)
                    buf.size += take
                buf.passes = pass_index + 1
                images_done += 1
                self.progress(Progress(stage, images_done, expected_images, time.perf_counter() - t0, message=f"{buf.size} samples"))
            for _, fut in pending:
                fut.cancel()
        if buf.size == 0:
            raise ScrError("the training buffer is empty: no valid features in the mapping frames")
        return buf

    # ------------------------------------------------------------------ training

    def train(
        self,
        head: torch.nn.Module,
        buf: TrainingBuffer,
        rows: torch.Tensor | None = None,
        epochs: float | None = None,
        lr: tuple[float, float] | None = None,
        stage: str = "train",
        final_threshold: bool = False,
    ) -> tuple[int, float]:
        """Train ``head`` on the buffer (or its ``rows``); returns (iterations, mean loss over the
        last 5 %). ``final_threshold`` trains at the loss's end-of-schedule inlier threshold
        (fine-tuning a trained head)."""
        cfg, dev = self.config, self.device
        n = buf.size if rows is None else len(rows)
        batch = min(cfg.batch_size, n)
        iterations = max(1, int(round((cfg.epochs if epochs is None else epochs) * n / batch)))
        lr_min, lr_max = (cfg.lr_min, cfg.lr_max) if lr is None else lr
        head.to(dev).train()
        loss_fn = build_loss(cfg.loss, total_iterations=iterations, **cfg.loss_config)
        opt = torch.optim.AdamW(head.parameters(), lr=lr_min, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr_max, total_steps=iterations, div_factor=lr_max / lr_min, cycle_momentum=False
        )
        use_scaler = dev.type == "cuda" and self.amp_dtype == torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        gen = torch.Generator().manual_seed(cfg.seed)
        perm, cursor = torch.randperm(n, generator=gen), 0
        tail = max(1, iterations // 20)
        recent: list[float] = []
        t0 = time.perf_counter()
        for it in range(iterations):
            if it % 16 == 0:
                self._check_cancel()
            if cursor + batch > n:
                perm, cursor = torch.randperm(n, generator=gen), 0
            idx = perm[cursor : cursor + batch].to(dev)
            if rows is not None:
                idx = rows[idx]
            cursor += batch
            frames = buf.frame_index[idx]
            with autocast(dev, self.amp_dtype):
                coords, score = head.predict(buf.features[idx].float())
            depth = buf.depth[idx] if buf.depth is not None else None
            loss, _ = loss_fn(
                coords.float(), buf.pixels[idx], buf.T_cam_world[frames], buf.intrinsics[frames], iterations if final_threshold else it, depth=depth, score=score
            )
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise ScrError(f"training diverged at iteration {it} (loss {value}); try --precision fp32 or a lower lr_max")
            recent.append(value)
            if len(recent) > tail:
                recent.pop(0)
            if it % 10 == 0 or it == iterations - 1:
                synchronize(dev)
                self.progress(Progress(stage, it + 1, iterations, time.perf_counter() - t0, loss=sum(recent) / len(recent)))
        return iterations, float(np.mean(recent))

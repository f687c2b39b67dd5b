"""MapBuilder: posed mapping frames -> training buffer -> trained scene head (the ACE recipe).

1. **Buffer.** Repeated passes over the mapping frames, each image randomly scaled, rotated and
   jittered in brightness/contrast, run through the frozen encoder; up to ``samples_per_image``
   random features whose position maps back inside the original image are stored with their
   original pixel position and frame index (and measured depth, for depth losses). Memory:
   ``buffer_size * (2 C + 16)`` bytes (+4 with depth) plus a small per-frame pose table.
2. **Training.** The head regresses scene coordinates from shuffled buffer rows with the
   registered loss (ACE's reprojection loss), AdamW and a one-cycle learning rate schedule,
   under autocast (fp16 on CUDA, bf16 on CPUs that have it).

Options from the papers, each a setting of :class:`MappingConfig`: ``score`` (the head also
predicts SS-DVR's discriminability score, trained by the loss), the ``ace-depth`` loss
(``scr map --depth``), and the *map parts* of :mod:`scr_ros.map_parts`, which the builder fits
without naming them: every registered part the config wants (``pca_dim``: R-SCoRe's PCA,
fitted on a first sample of features, after which the buffer holds projected rows;
``classifier``: Matching Rates' keypoint classifier, fitted after the head) is fitted at its
stage and stored in the map.

Progress goes to an optional callback; a ``threading.Event`` (or anything with ``is_set()``)
cancels between images / iterations. With the same seed, device and precision the result is
the same.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from . import __version__, distributed
from .datasets.base import Frame
from .device import autocast, autocast_dtype, resolve_device, synchronize
from .encoders import Encoder
from .errors import DatasetError, MappingCancelled, ScrError
from .geometry import invert_pose, project
from .heads import HEADS, build_head
from .imaging import apply_affine, augment, inside, invert_affine, prepare, to_gray
from .losses import build_loss
from .map_parts import MapPart, head_input, ordered, transform_features
from .mapfile import SceneMap
from .mapping_config import MappingConfig, preset
from .progress import CancelToken, Progress


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
    # Under several workers: each row's number in the buffer one worker would have filled.
    global_index: torch.Tensor | None = None
    # Per-row targets of heads that classify (HSCNet: label point, region, sub-region, valid).
    targets: dict | None = None


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
        self.device = distributed.local_device(resolve_device(device))
        self.amp_dtype = autocast_dtype(self.device, self.config.precision)
        # Under several workers only rank 0 reports progress (and writes the map).
        self.progress = (progress if distributed.is_main() else None) or (lambda p: None)
        self.cancel = cancel
        self.unreadable: dict[str, str] = {}  # frame name -> why its image or depth could not be read
        self.encoder.to(self.device).eval()
        self.uses_depth = getattr(build_loss(self.config.loss, 1, **self.config.loss_config), "uses_depth", False)
        self.wanted_parts = [cls for cls in ordered() if cls.wanted(self.config)]
        for cls in self.wanted_parts:
            cls.check(self.config, encoder.out_channels)
        context = [cls.key for cls in self.wanted_parts if cls.gives_context]
        if len(context) > 1:
            raise ScrError(f"map parts {' and '.join(context)} both give a global encoding; choose one")
        later = [cls.key for cls in self.wanted_parts if cls.stage == "trained"]
        if context and later:
            raise ScrError(f"map part {later[0]} reads training rows without their global encoding, so it cannot be combined with {context[0]} yet")
        adapting = [cls.key for cls in self.wanted_parts if cls.trains_with_head]
        if adapting and later:
            raise ScrError(f"map part {later[0]} reads training rows before {adapting[0]} transforms them, so the two cannot be combined yet")
        labelled = [cls.key for cls in self.wanted_parts if cls.stage == "buffer"]
        if HEADS.lookup(self.config.head).labels_loss:
            labelled.append(f"head {self.config.head}")
        if context and labelled:
            raise ScrError(f"{labelled[0]} labels scene points without the global encoding of {context[0]}, so the two cannot be combined yet")
        # Map parts fitted so far (key -> part); the head reads features through the "features" ones.
        self.parts: dict[str, MapPart] = {}
        self._scene_points = None

    def autocast_context(self):
        """The autocast context mapping runs its networks under (for parts that train their own)."""
        return autocast(self.device, self.amp_dtype)

    @property
    def context_part(self) -> MapPart | None:
        """The fitted part that gives images a global encoding, if any."""
        return next((part for part in self.parts.values() if part.gives_context), None)

    def encode_frame(self, frame: Frame) -> torch.Tensor | None:
        """Encoder features (1, C, h, w) of a mapping frame at the map's image height, without
        augmentation; None (and the frame recorded as unreadable) when its image cannot be read."""
        encoded = self._encode(frame)
        return None if encoded is None else encoded[0]

    def _encode(self, frame: Frame):
        try:
            rgb = frame.load_image()
        except DatasetError as exc:
            self.unreadable[frame.name] = str(exc)
            return None
        img, A = prepare(to_gray(rgb), self.config.image_height)
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            return self.encoder(torch.from_numpy(np.ascontiguousarray(img))[None, None].to(self.device)), rgb, A

    def check_cancel(self) -> None:
        """Raise MappingCancelled when the cancel token is set (called between images / iterations)."""
        if self.cancel is not None and self.cancel.is_set():
            raise MappingCancelled("map building was cancelled")

    # ------------------------------------------------------------------ public

    def build(self, frames: Sequence[Frame], preset_name: str | None = None) -> SceneMap:
        if len(frames) == 0:
            raise ScrError("no mapping frames")
        self._frame_height = max(f.camera.height for f in frames)
        cfg = self.config
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        self.parts, self._scene_points = {}, None
        for cls in self.wanted_parts:
            if cls.stage == "features":
                self.parts[cls.key] = cls.fit(self, frames=frames)
                distributed.broadcast_module(self.parts[cls.key].module)
        buffer = self.fill_buffer(frames)
        t_buffer = time.perf_counter() - t0
        for cls in self.wanted_parts:
            if cls.stage == "buffer":
                self.parts[cls.key] = cls.fit(self, buffer=buffer)
                distributed.broadcast_module(self.parts[cls.key].module)
        positions = np.stack([f.pose[:3, 3] for f in frames])
        head_config = {**HEADS.lookup(cfg.head).scene_defaults(positions), **cfg.head_config, **({"score": True} if cfg.score else {})}
        head = build_head(cfg.head, in_channels=self.head_channels(), **head_config)
        head.fit_to_cameras(positions, seed=cfg.seed)
        buffer.targets = head.fit_to_rows(self, buffer)
        t1 = time.perf_counter()
        # Labels of scene points (first ACE stage, k-means, partition classifier), when any.
        t_labels = t1 - t0 - t_buffer if buffer.targets is not None or self._scene_points is not None else None
        iterations, final_loss = self.train(head, buffer)
        t_train = time.perf_counter() - t1
        for cls in self.wanted_parts:
            if cls.stage == "trained":
                self.parts[cls.key] = cls.fit(self, head=head, buffer=buffer)
                distributed.broadcast_module(self.parts[cls.key].module)
        head.eval()
        # The map's point cloud is only needed where the map is written.
        cloud_xyz, cloud_rgb = self.reconstruct(head, frames) if distributed.is_main() else (None, None)
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
            parts={key: part.to("cpu") for key, part in self.parts.items()},
        )

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
            self.check_cancel()
            frame = frames[i]
            encoded = self._encode(frame)
            if encoded is None:
                continue
            feats, rgb, A = encoded
            context = self.context_part.frame_context(int(i)) if self.context_part else None
            with autocast(dev, self.amp_dtype):
                _, C, fh, fw = feats.shape
                coords = head(head_input(self._head_input(feats[0].reshape(C, -1).T), context))
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

    def _head_input(self, features: torch.Tensor) -> torch.Tensor:
        return transform_features(self.parts.values(), features)

    def local_channels(self) -> int:
        """Channels of a buffer row: the encoder's, through the map parts fitted so far."""
        channels = self.encoder.out_channels
        for part in self.parts.values():
            channels = part.out_channels(channels)
        return channels

    def head_channels(self) -> int:
        """Channels the head reads: a buffer row plus any global encoding."""
        return self.local_channels() + sum(part.context_channels() for part in self.parts.values())

    def _check_memory(self) -> None:
        need = self.config.buffer_bytes(self.encoder.out_channels, self.uses_depth) // distributed.world_size()
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
        (default ``buffer_size``).

        Under several workers (torchrun) the workers take turns over the same shuffled images,
        worker r the r-th of each round of N, and agree after each round how many rows each
        keeps: together they hold exactly the rows one worker would (same images, same
        augmentation, same picks), each only its own, with their row numbers in the whole buffer
        (``global_index``)."""
        cfg, dev = self.config, self.device
        workers, rank = distributed.world_size(), distributed.rank()
        total = cfg.buffer_size if size is None else size
        capacity = total if workers == 1 else min(total, -(-total // workers) + 4 * cfg.samples_per_image)
        self._check_memory()
        C = self.encoder.out_channels
        width = self.local_channels()
        buf = TrainingBuffer(
            features=torch.empty((capacity, width), dtype=torch.float16, device=dev),
            pixels=torch.empty((capacity, 2), dtype=torch.float32, device=dev),
            frame_index=torch.empty((capacity,), dtype=torch.int64, device=dev),
            depth=torch.full((capacity,), float("nan"), dtype=torch.float32, device=dev) if self.uses_depth else None,
            T_cam_world=torch.as_tensor(np.stack([invert_pose(f.pose)[:3] for f in frames]), dtype=torch.float32, device=dev),
            intrinsics=torch.as_tensor([[f.camera.fx, f.camera.fy, f.camera.cx, f.camera.cy] for f in frames], dtype=torch.float32, device=dev),
            global_index=None if workers == 1 else torch.empty((capacity,), dtype=torch.int64, device=dev),
        )
        order_rng = np.random.default_rng(cfg.seed)
        jobs = [(p, int(i)) for p in range(cfg.max_buffer_passes) for i in order_rng.permutation(len(frames))]
        rounds = -(-len(jobs) // workers)
        mine = jobs[rank::workers]  # this worker's image in each round
        expected_images = min(len(mine), math.ceil(total / cfg.samples_per_image / workers))
        t0, images_done, filled = time.perf_counter(), 0, 0

        def submit(k: int):
            # A frame found unreadable is not read again in a later pass.
            if k < len(mine) and frames[mine[k][1]].name not in self.unreadable:
                return pool.submit(self._prepare, frames[mine[k][1]], *mine[k])
            return None

        with ThreadPoolExecutor(max_workers=2) as pool:
            ahead = {k: submit(k) for k in range(3)}  # a few images decoded and augmented ahead of the encoder
            for k in range(rounds):
                if filled >= total:
                    break
                self.check_cancel()
                fut = ahead.pop(k, None)
                ahead[k + 3] = submit(k + 3)
                candidate, found = 0, None
                if fut is not None:
                    fi = mine[k][1]
                    try:
                        img, A, (h0, w0), rng, depth = fut.result()
                    except DatasetError as exc:
                        # A file that passed the checks at open but does not decode: skipped and
                        # recorded in the map (training.unreadable_frames), not fatal.
                        self.unreadable[frames[fi].name] = str(exc)
                    else:
                        with torch.no_grad(), autocast(dev, self.amp_dtype):
                            feats = self.encoder(torch.from_numpy(img)[None, None].to(dev))
                        _, _, fh, fw = feats.shape
                        px = apply_affine(invert_affine(A), self.encoder.feature_pixels(fh, fw))
                        valid = np.flatnonzero(inside(px, w0, h0))
                        candidate, found = min(cfg.samples_per_image, len(valid)), (feats, px, valid, rng, depth, fi)
                    images_done += 1
                counts = distributed.all_gather_ints(candidate)
                before = filled + sum(counts[:rank])
                take = max(0, min(candidate, total - before))
                if take > 0:
                    feats, px, valid, rng, depth, fi = found
                    if buf.size + take > len(buf.features):
                        self._grow(buf, max(buf.size + take, int(len(buf.features) * 1.25)))
                    pick = np.sort(rng.choice(valid, size=take, replace=False))
                    rows = self._head_input(feats[0].reshape(C, -1).T[torch.as_tensor(pick, device=dev)].float())
                    s = slice(buf.size, buf.size + take)
                    buf.features[s] = rows.to(torch.float16)
                    buf.pixels[s] = torch.as_tensor(px[pick], dtype=torch.float32, device=dev)
                    buf.frame_index[s] = fi
                    if buf.global_index is not None:
                        buf.global_index[s] = torch.arange(before, before + take, device=dev)
                    if depth is not None:
                        q = np.round(px[pick]).astype(int)
                        buf.depth[s] = torch.as_tensor(depth[q[:, 1], q[:, 0]], dtype=torch.float32, device=dev)
                    buf.size += take
                filled = min(total, filled + sum(counts))
                buf.passes = jobs[min(k * workers + workers, len(jobs)) - 1][0] + 1
                if fut is not None:
                    self.progress(Progress(stage, images_done, expected_images, time.perf_counter() - t0, message=f"{buf.size} samples"))
            for fut in ahead.values():
                if fut is not None:
                    fut.cancel()
        if filled == 0:
            raise ScrError("the training buffer is empty: no valid features in the mapping frames")
        return buf

    def all_features(self, buf: TrainingBuffer) -> torch.Tensor:
        """The buffer's feature rows (N, C) as one worker holds them: under several workers,
        every worker's rows put together in buffer order (for fits that need all of a sample,
        such as the PCA)."""
        rows = buf.features[: buf.size]
        return rows if buf.global_index is None else distributed.gather_rows(rows, buf.global_index[: buf.size])

    def feature_cell_px(self) -> float:
        """One feature cell in original-image pixels: the encoder stride at the map's image height
        (for the tallest mapping camera)."""
        return self.encoder.stride * self._frame_height / self.config.image_height

    def scene_points(self, buffer: TrainingBuffer, epochs: float | None, max_error_px: float) -> tuple[torch.Tensor, torch.Tensor, str]:
        """A scene point (N, 3) for the buffer's rows, where one is known (N,) bool, and where
        they come from (``depth`` or ``triangulated``), for heads and parts that label points.

        From measured depth when the buffer holds depth for at least half of its rows;
        otherwise from a first ACE-style stage: an ACE head trained ``epochs`` (None: the
        config's) on the buffer with the mapping loss, its predictions kept where they reproject
        within ``max_error_px``. Computed once per build and shared."""
        if self._scene_points is not None:
            return self._scene_points
        cfg, n = self.config, buffer.size
        rows = buffer.frame_index[:n]
        T, K, px = buffer.T_cam_world[rows], buffer.intrinsics[rows], buffer.pixels[:n]
        ray = torch.stack([(px[:, 0] - K[:, 2]) / K[:, 0], (px[:, 1] - K[:, 3]) / K[:, 1], torch.ones_like(px[:, 0])], dim=1)
        depth = buffer.depth[:n] if buffer.depth is not None else None
        known = None if depth is None else torch.isfinite(depth) & (depth > 0)
        if known is not None and distributed.all_sum(float(known.sum())) >= 0.5 * distributed.all_sum(n):
            cam = torch.nan_to_num(depth)[:, None] * ray
            points = torch.einsum("nji,nj->ni", T[:, :, :3], cam - T[:, :, 3])
            self._scene_points = (points, known, "depth")
            return self._scene_points
        positions = -torch.einsum("nji,nj->ni", buffer.T_cam_world[:, :, :3], buffer.T_cam_world[:, :, 3]).cpu().numpy()
        first = build_head("ace", in_channels=self.head_channels(), width=int(cfg.head_config.get("width", 512)))
        first.fit_to_cameras(positions, seed=cfg.seed)
        self.train(first, buffer, epochs=cfg.epochs if epochs is None else epochs, stage="labels")
        first.eval()
        points = torch.empty((n, 3), device=self.device)
        with torch.no_grad(), autocast(self.device, self.amp_dtype):
            for s in range(0, n, 65536):
                e = min(s + 65536, n)  # the buffer's tensors may hold more rows than it filled
                points[s:e] = first(buffer.features[s:e].float()).float()
        cam = torch.einsum("nij,nj->ni", T[:, :, :3], points) + T[:, :, 3]
        z = cam[:, 2]
        proj = torch.stack([K[:, 0] * cam[:, 0] / z.clamp(min=1e-6) + K[:, 2], K[:, 1] * cam[:, 1] / z.clamp(min=1e-6) + K[:, 3]], dim=1)
        known = (z > 0.1) & ((proj - px).norm(dim=1) < max_error_px)
        self._scene_points = (points, known, "triangulated")
        return self._scene_points

    @staticmethod
    def _grow(buf: TrainingBuffer, capacity: int) -> None:
        # Only under several workers, when this worker's images gave more rows than its share.
        for name in ("features", "pixels", "frame_index", "depth", "global_index"):
            t = getattr(buf, name)
            if t is not None:
                extra = torch.full((capacity - len(t), *t.shape[1:]), float("nan") if name == "depth" else 0, dtype=t.dtype, device=t.device)
                setattr(buf, name, torch.cat([t, extra]))

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
        workers = distributed.world_size()
        # Row numbers are those of the whole buffer. Several workers draw the same global batches
        # (the same seed) and each computes the part of a batch it holds, its loss weighted by
        # that part's share of the batch: DDP's average of the workers' gradients is then the
        # gradient one worker computes on the whole batch, and the head trains as it would on
        # one worker, up to the order of floating-point sums. (Fine-tuning on selected ``rows``
        # draws from each worker's own rows instead.)
        local = None
        if rows is None:
            n = int(distributed.all_sum(buf.size))
            if buf.global_index is not None:
                local = torch.full((n,), -1, dtype=torch.int64, device=dev)
                local[buf.global_index[: buf.size]] = torch.arange(buf.size, device=dev)
            batch = min(cfg.batch_size, n)
        else:
            n = len(rows)
            batch = min(-(-cfg.batch_size // workers), n)
        iterations = max(1, int(round((cfg.epochs if epochs is None else epochs) * n / batch)))
        lr_min, lr_max = (cfg.lr_min, cfg.lr_max) if lr is None else lr
        head.to(dev).train()
        # Parts that train with the head (SS-DVR's feature fusion) transform rows on the way in.
        adapters = [part.module.to(dev).train() for part in self.parts.values() if part.trains_with_head]
        model = _TrainingOutputs(head, adapters)
        if distributed.active():
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        # A head that classifies is trained by its own loss, on the targets it made from the rows.
        loss_name = head.labels_loss or cfg.loss
        loss_fn = build_loss(loss_name, total_iterations=iterations, **(cfg.loss_config if loss_name == cfg.loss else {}))
        targets = buf.targets if head.labels_loss else None
        if head.labels_loss and targets is None:
            raise ScrError(f"head {head.head_type!r} has no labels for the training rows; call its fit_to_rows first")
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr_min, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr_max, total_steps=iterations, div_factor=lr_max / lr_min, cycle_momentum=False
        )
        use_scaler = dev.type == "cuda" and self.amp_dtype == torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        gen = torch.Generator().manual_seed(cfg.seed + (0 if rows is None else distributed.rank()))
        context_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 7919 * (1 + distributed.rank()))
        context = self.context_part
        perm, cursor = torch.randperm(n, generator=gen), 0
        # Heads that attend among an image's rows (HSCNet++) train on batches of whole images'
        # samples, as at query time, rather than on rows of hundreds of images a few at a time
        # (one worker; under several, rows are drawn as for other heads).
        per_image = getattr(head, "rows_per_image", 0) if rows is None and local is None else 0
        if per_image:
            frame_of = buf.frame_index[:n].cpu()
            by_frame = torch.argsort(frame_of, stable=True)
            _, frame_rows = torch.unique_consecutive(frame_of[by_frame], return_counts=True)
            frame_start = torch.cumsum(frame_rows, 0) - frame_rows
        tail = max(1, iterations // 20)
        recent: list[float] = []
        t0 = time.perf_counter()
        for it in range(iterations):
            if it % 16 == 0:
                self.check_cancel()
            if cursor + batch > n:
                perm, cursor = torch.randperm(n, generator=gen), 0
            idx = perm[cursor : cursor + batch].to(dev)
            share = 1.0
            if per_image:
                pick = torch.randint(len(frame_rows), (max(1, batch // per_image),), generator=gen)
                offset = (torch.rand(len(pick), per_image, generator=gen) * frame_rows[pick, None]).long() + frame_start[pick, None]
                idx = by_frame[offset.reshape(-1)].to(dev)
            elif rows is not None:
                idx = rows[idx]
            elif local is not None:
                idx = local[idx]
                idx = idx[idx >= 0]
                share = len(idx) * workers / batch
                if len(idx) == 0:  # none of this batch is here: take part in DDP's all-reduce with zero weight
                    idx, share = torch.zeros(1, dtype=torch.int64, device=dev), 0.0
            cursor += batch
            frames = buf.frame_index[idx]
            x = buf.features[idx].float()
            batch_targets = None if targets is None else {k: v[idx] for k, v in targets.items()}
            with autocast(dev, self.amp_dtype):
                outputs, score, logits = model(x, None if context is None else context.training_context(frames, context_gen), batch_targets, frames)
            depth = buf.depth[idx] if buf.depth is not None else None
            labels = {"logits": logits, "targets": batch_targets} if batch_targets is not None else {}
            # Heads with a coarse and a refined output (R-SCoRe) have both supervised.
            loss = share * sum(
                loss_fn(coords.float(), buf.pixels[idx], buf.T_cam_world[frames], buf.intrinsics[frames], iterations if final_threshold else it, depth=depth, score=score, **labels)[0]
                for coords in outputs
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
        return iterations, distributed.all_sum(float(np.mean(recent))) / workers


class _TrainingOutputs(torch.nn.Module):
    """The head's training outputs as ``forward``, the call DistributedDataParallel wraps:
    local rows (N, C) through the parts that train with the head, plus the global encoding
    (N, D) if any, into the head."""

    def __init__(self, head: torch.nn.Module, adapters: Sequence[torch.nn.Module] = ()) -> None:
        super().__init__()
        self.head = head
        self.adapters = torch.nn.ModuleList(adapters)

    def forward(self, features: torch.Tensor, context: torch.Tensor | None = None, targets: dict | None = None, groups: torch.Tensor | None = None):
        for adapter in self.adapters:
            features = adapter(features)
        return self.head.training_outputs(head_input(features, context), targets, groups)

"""Filling the training buffer: augmented mapping frames -> encoder features -> sampled rows.

Repeated passes over the mapping frames, each image randomly scaled, rotated and jittered in
brightness/contrast, run through the frozen encoder; up to ``samples_per_image`` random features
whose position maps back inside the original image are stored with their original pixel and frame
index (and the measured depth there, for depth losses). Two threads decode and augment the next
images while the encoder runs. Memory: ``buffer_size * (2 C + 16)`` bytes (+4 with depth) plus a
small per-frame pose table.
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence

import numpy as np
import torch

from .. import distributed
from ..datasets.base import Frame
from ..device import autocast
from ..encoders import Encoder
from ..errors import DatasetError, ScrError
from ..fit_context import TrainingBuffer
from ..geometry import invert_pose
from ..imaging import apply_affine, apply_homography, augment, inside, invert_affine, to_gray, turned_view
from ..mapping_config import MappingConfig
from ..progress import Progress
from .novel_views import novel_view

log = logging.getLogger(__name__)


class BufferFiller:
    """Fills :class:`TrainingBuffer` objects for one mapping run.

    Args:
        encoder: the frozen encoder, on ``device``.
        config: the run's settings (image height, augmentation, buffer size, passes, seed).
        rows_of: encoder features (N, C) -> the rows the buffer holds (N, C'): the transforms of
            the map parts fitted so far (e.g. the PCA).
        uses_depth: whether rows carry the measured depth at their pixel.
        unreadable: frame name -> why its image could not be read; filled in here, and a frame
            found unreadable is not read again.
    """

    def __init__(
        self,
        encoder: Encoder,
        config: MappingConfig,
        device: torch.device,
        amp_dtype,
        rows_of: Callable[[torch.Tensor], torch.Tensor],
        uses_depth: bool,
        report: Callable[[Progress], None],
        check_cancel: Callable[[], None],
        unreadable: dict[str, str],
    ) -> None:
        self.encoder, self.config, self.device, self.amp_dtype = encoder, config, device, amp_dtype
        self.rows_of, self.uses_depth = rows_of, uses_depth
        self.report, self.check_cancel, self.unreadable = report, check_cancel, unreadable

    def check_memory(self, channels: int) -> None:
        """Refuse a buffer of rows of ``channels`` that would not fit in the device's free memory."""
        need = self.config.buffer_bytes(channels, self.uses_depth) // distributed.world_size()
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
        """Load and augment one frame (runs in a worker thread; deterministic per pass/frame).

        Returns the augmented image, ``A`` (its pixels -> the shown image's), the frame's size,
        the rng, the depth for the rows (when the loss uses it) and ``source``: for a novel or
        turned view, a function from the shown image's pixels (N, 2) to the frame's pixels and
        whether the frame shows them (N,); else None."""
        aug = self.config.augmentation
        rng = np.random.default_rng([self.config.seed, pass_index, frame_index])
        gray = to_gray(frame.load_image())
        novel = aug.novel_views > 0 and frame.depth_path is not None and rng.random() < aug.novel_views
        depth = frame.load_depth() if self.uses_depth or novel else None
        if depth is not None and depth.shape != gray.shape:
            raise DatasetError(
                f"{frame.depth_path}: depth is {depth.shape[1]}x{depth.shape[0]}, image is "
                f"{gray.shape[1]}x{gray.shape[0]}"
            )
        source = None
        if novel:
            view = novel_view(gray, depth, frame.camera.K, aug.novel_view_shift_m, rng)
            if view is not None:
                gray, src, keep = view
                source = _novel_view_source(src, keep)
        if source is None and aug.perspective_deg > 0:
            gray, H, _ = turned_view(gray, frame.camera.K, aug.perspective_deg, rng)
            source = _turned_view_source(np.linalg.inv(H), gray.shape)
        img, A = augment(gray, self.config.image_height, rng, aug)
        return img, A, gray.shape, rng, depth if self.uses_depth else None, source

    def fill(
        self, frames: Sequence[Frame], width: int, size: int | None = None, stage: str = "buffer"
    ) -> TrainingBuffer:
        """A buffer of rows of ``width`` channels; ``size`` rows at most (default ``buffer_size``).

        Under several workers (torchrun) the workers take turns over the same shuffled images,
        worker r the r-th of each round of N, and agree after each round how many rows each
        keeps: together they hold exactly the rows one worker would (same images, same
        augmentation, same picks), each only its own, with their row numbers in the whole buffer
        (``global_index``)."""
        cfg, dev = self.config, self.device
        workers, rank = distributed.world_size(), distributed.rank()
        total = cfg.buffer_size if size is None else size
        capacity = total if workers == 1 else min(total, -(-total // workers) + 4 * cfg.samples_per_image)
        self.check_memory(width)
        C = self.encoder.out_channels
        buf = TrainingBuffer(
            features=torch.empty((capacity, width), dtype=torch.float16, device=dev),
            pixels=torch.empty((capacity, 2), dtype=torch.float32, device=dev),
            frame_index=torch.empty((capacity,), dtype=torch.int64, device=dev),
            depth=torch.full((capacity,), float("nan"), dtype=torch.float32, device=dev) if self.uses_depth else None,
            T_cam_world=torch.as_tensor(
                np.stack([invert_pose(f.pose)[:3] for f in frames]), dtype=torch.float32, device=dev
            ),
            intrinsics=torch.as_tensor(
                [[f.camera.fx, f.camera.fy, f.camera.cx, f.camera.cy] for f in frames], dtype=torch.float32, device=dev
            ),
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
                        img, A, (h0, w0), rng, depth, source = fut.result()
                    except DatasetError as exc:
                        # A file that passed the checks at open but does not decode: skipped and
                        # recorded in the map (training.unreadable_frames), not fatal.
                        self.unreadable[frames[fi].name] = str(exc)
                        log.warning("mapping frame %s skipped: %s", frames[fi].name, exc)
                    else:
                        with torch.no_grad(), autocast(dev, self.amp_dtype):
                            feats = self.encoder(torch.from_numpy(img)[None, None].to(dev))
                        _, _, fh, fw = feats.shape
                        px = apply_affine(invert_affine(A), self.encoder.feature_pixels(fh, fw))
                        inner = inside(px, w0, h0)
                        if source is not None:
                            # A novel or turned view: each feature's row is the recorded frame's
                            # pixel it shows.
                            shown_at = np.flatnonzero(inner)
                            px[shown_at], shown = source(px[shown_at])
                            inner[shown_at[~shown]] = False
                        valid = np.flatnonzero(inner)
                        candidate, found = min(cfg.samples_per_image, len(valid)), (feats, px, valid, rng, depth, fi)
                    images_done += 1
                counts = distributed.all_gather_ints(candidate)
                before = filled + sum(counts[:rank])
                take = max(0, min(candidate, total - before))
                if take > 0:
                    feats, px, valid, rng, depth, fi = found
                    if buf.size + take > len(buf.features):
                        _grow(buf, max(buf.size + take, int(len(buf.features) * 1.25)))
                    pick = np.sort(rng.choice(valid, size=take, replace=False))
                    rows = self.rows_of(feats[0].reshape(C, -1).T[torch.as_tensor(pick, device=dev)].float())
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
                    self.report(
                        Progress(
                            stage, images_done, expected_images, time.perf_counter() - t0, message=f"{buf.size} samples"
                        )
                    )
            for fut in ahead.values():
                if fut is not None:
                    fut.cancel()
        if filled == 0:
            raise ScrError("the training buffer is empty: no valid features in the mapping frames")
        return buf


def _novel_view_source(src: np.ndarray, keep: np.ndarray) -> Callable:
    """Pixels of a novel view (inside it) -> the recorded frame's pixels they show (src, keep:
    scr_ros.mapping.novel_views), to the nearest pixel of the view."""

    def to_frame(px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.round(px).astype(int)
        shown = keep[q[:, 1], q[:, 0]]
        out = px.copy()
        out[shown] = src[q[shown, 1], q[shown, 0]]
        return out, shown

    return to_frame


def _turned_view_source(H_inv: np.ndarray, shape: tuple[int, int]) -> Callable:
    """Pixels of a turned view -> the recorded frame's pixels (through ``H^-1``, exactly)."""
    h, w = shape

    def to_frame(px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = apply_homography(H_inv, px) if len(px) else px.copy()
        return out, inside(out, w, h)

    return to_frame


def all_rows(buf: TrainingBuffer) -> torch.Tensor:
    """The buffer's feature rows (N, C) as one worker holds them: under several workers, every
    worker's rows put together in buffer order (for fits that need all of a sample, such as the
    PCA)."""
    rows = buf.features[: buf.size]
    return rows if buf.global_index is None else distributed.gather_rows(rows, buf.global_index[: buf.size])


def _grow(buf: TrainingBuffer, capacity: int) -> None:
    # Only under several workers, when this worker's images gave more rows than its share.
    for name in ("features", "pixels", "frame_index", "depth", "global_index"):
        t = getattr(buf, name)
        if t is not None:
            extra = torch.full(
                (capacity - len(t), *t.shape[1:]),
                float("nan") if name == "depth" else 0,
                dtype=t.dtype,
                device=t.device,
            )
            setattr(buf, name, torch.cat([t, extra]))

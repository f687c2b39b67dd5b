"""Training a head on the buffer: one loop, told what to do by the head, the parts and a schedule.

The loop draws a batch of buffer rows, passes them through the parts that train with the head
(SS-DVR's fusion), appends a global encoding when a part gives one, runs the head and its loss,
and steps AdamW under a one-cycle learning rate schedule and autocast. What varies is asked for,
not switched on:

- *which rows* form a batch: a :class:`RowSampler` chosen once (:func:`row_sampler`): shuffled
  buffer rows, the rows of several whole images for heads that attend within an image
  (``head.rows_per_image``), selected rows (fine-tuning), or this worker's share of the global
  batches under several workers;
- *which loss*: the head's own (``head.labels_loss``, trained on the targets it made from the
  rows) or the mapping config's;
- *the parts*: those with ``trains_with_head`` contribute their modules, the one with
  ``gives_global_encoding`` the encodings of the rows' images, those that ``adjusts_cameras``
  correct each batch's camera poses and intrinsics (pose refinement; their own optimizer);
- *the schedule* (:class:`Schedule`): epochs, learning rates, the progress stage, and whether the
  loss runs at its final inlier threshold throughout (fine-tuning a trained head).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from .. import distributed
from ..device import autocast
from ..errors import ScrError
from ..fit_context import TrainingBuffer
from ..losses import build_loss
from ..map_parts import MapPart, append_encoding
from ..mapping_config import MappingConfig
from ..progress import Progress

LOSS_READ_EVERY = 100  # iterations between reads of the loss (progress report, divergence check)


@dataclass
class Schedule:
    """How long and how fast one training run goes."""

    epochs: float
    lr: tuple[float, float]  # one-cycle schedule: from lr[0] up to lr[1] and back
    stage: str = "train"  # the progress stage it reports
    final_threshold: bool = False  # train at the loss's end-of-schedule inlier threshold
    adjust_cameras: bool = True  # parts that correct the cameras (pose refinement) train along


@dataclass
class TrainingSetup:
    """What the loop needs besides the head, the rows and the schedule."""

    config: MappingConfig
    device: torch.device
    amp_dtype: torch.dtype | None
    report: Callable[[Progress], None]
    check_cancel: Callable[[], None]
    parts: Sequence[MapPart] = ()  # the map parts fitted so far


class RowSampler(Protocol):
    """Batches of buffer row numbers."""

    rows: int  # rows in one epoch
    batch: int  # rows per batch (before a worker's share)

    def draw(self) -> tuple[torch.Tensor, float]:
        """The next batch's row numbers (B,) on the device, and the share of the whole batch
        this worker's loss stands for (1 on one worker)."""


class _Shuffled:
    """Numbers 0..n-1 in shuffled passes, ``batch`` at a time (a pass's tail is dropped)."""

    def __init__(self, n: int, batch: int, generator: torch.Generator, device: torch.device) -> None:
        self.n, self.batch, self.generator, self.device = n, batch, generator, device
        self.perm, self.cursor = torch.randperm(n, generator=generator), 0

    def next(self) -> torch.Tensor:
        if self.cursor + self.batch > self.n:
            self.perm, self.cursor = torch.randperm(self.n, generator=self.generator), 0
        idx = self.perm[self.cursor : self.cursor + self.batch].to(self.device)
        self.cursor += self.batch
        return idx


class ShuffledRows(_Shuffled):
    """Rows of the whole buffer, shuffled (ACE)."""

    rows = property(lambda self: self.n)

    def draw(self) -> tuple[torch.Tensor, float]:
        return self.next(), 1.0


class SelectedRows(_Shuffled):
    """The given rows (M,) only, shuffled (fine-tuning on a selection)."""

    def __init__(self, selected: torch.Tensor, batch: int, generator: torch.Generator, device: torch.device) -> None:
        super().__init__(len(selected), batch, generator, device)
        self.selected = selected

    rows = property(lambda self: self.n)

    def draw(self) -> tuple[torch.Tensor, float]:
        return self.selected[self.next()], 1.0


class WorkerRows(_Shuffled):
    """Under several workers: every worker draws the same global batches (the same seed) and
    trains on the part of each that it holds, its loss weighted by that part's share of the
    batch. DDP's average of the workers' gradients is then the gradient one worker computes on
    the whole batch, so the head trains as it would on one worker, up to the order of
    floating-point sums."""

    def __init__(
        self,
        buffer: TrainingBuffer,
        total: int,
        batch: int,
        workers: int,
        generator: torch.Generator,
        device: torch.device,
    ) -> None:
        super().__init__(total, batch, generator, device)
        self.workers = workers
        self.local = torch.full((total,), -1, dtype=torch.int64, device=device)
        self.local[buffer.global_index[: buffer.size]] = torch.arange(buffer.size, device=device)

    rows = property(lambda self: self.n)

    def draw(self) -> tuple[torch.Tensor, float]:
        idx = self.local[self.next()]
        idx = idx[idx >= 0]
        if len(idx) == 0:  # none of this batch is here: take part in DDP's all-reduce with zero weight
            return torch.zeros(1, dtype=torch.int64, device=self.device), 0.0
        return idx, len(idx) * self.workers / self.batch


class ImageRows(_Shuffled):
    """Batches of ``per_image`` random rows from each of ``batch // per_image`` random images,
    for heads that attend among an image's rows (HSCNet++) as they do at query time. (The
    shuffled order of :class:`ShuffledRows` is drawn too, unused, so that a seed's generator
    sequence, and so its maps, are those of earlier versions.)"""

    def __init__(
        self, buffer: TrainingBuffer, per_image: int, batch: int, generator: torch.Generator, device: torch.device
    ) -> None:
        super().__init__(buffer.size, batch, generator, device)
        self.per_image = per_image
        frame_of = buffer.frame_index[: buffer.size].cpu()
        self.by_frame = torch.argsort(frame_of, stable=True)
        _, self.frame_rows = torch.unique_consecutive(frame_of[self.by_frame], return_counts=True)
        self.frame_start = torch.cumsum(self.frame_rows, 0) - self.frame_rows

    rows = property(lambda self: self.n)

    def draw(self) -> tuple[torch.Tensor, float]:
        self.next()
        g = self.generator
        pick = torch.randint(len(self.frame_rows), (max(1, self.batch // self.per_image),), generator=g)
        offset = (
            torch.rand(len(pick), self.per_image, generator=g) * self.frame_rows[pick, None]
        ).long() + self.frame_start[pick, None]
        return self.by_frame[offset.reshape(-1)].to(self.device), 1.0


def row_sampler(
    head: torch.nn.Module,
    buffer: TrainingBuffer,
    config: MappingConfig,
    device: torch.device,
    selected: torch.Tensor | None = None,
) -> RowSampler:
    """The rows a training run draws: ``selected`` ones (fine-tuning, each worker its own), this
    worker's share of the whole buffer's batches, whole images' rows for heads that ask for
    them (``rows_per_image``, one worker), or shuffled rows."""
    workers = distributed.world_size()
    generator = torch.Generator().manual_seed(config.seed + (0 if selected is None else distributed.rank()))
    if selected is not None:
        return SelectedRows(selected, min(-(-config.batch_size // workers), len(selected)), generator, device)
    total = int(distributed.all_sum(buffer.size))
    batch = min(config.batch_size, total)
    if buffer.global_index is not None:
        return WorkerRows(buffer, total, batch, workers, generator, device)
    if head.rows_per_image:
        return ImageRows(buffer, head.rows_per_image, batch, generator, device)
    return ShuffledRows(total, batch, generator, device)


def train_head(
    head: torch.nn.Module, buffer: TrainingBuffer, setup: TrainingSetup, schedule: Schedule, sampler: RowSampler
) -> tuple[int, float]:
    """Train ``head`` on the ``sampler``'s rows of ``buffer``; returns (iterations, mean loss
    over the last 5 % of them, averaged over workers)."""
    cfg, dev = setup.config, setup.device
    iterations = max(1, int(round(schedule.epochs * sampler.rows / sampler.batch)))
    head.to(dev).train()
    # Parts that train with the head (SS-DVR's feature fusion) transform rows on the way in;
    # parts that adjust the cameras (pose refinement) correct each batch's poses.
    adapters = [part.module.to(dev).train() for part in setup.parts if part.trains_with_head]
    cameras = [part for part in setup.parts if part.adjusts_cameras] if schedule.adjust_cameras else []
    model = _TrainingOutputs(head, adapters, [part.module.to(dev).train() for part in cameras])
    if distributed.active():
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    # A head that classifies is trained by its own loss, on the targets it made from the rows.
    loss_name = head.labels_loss or cfg.loss
    loss_fn = build_loss(loss_name, total_iterations=iterations, **(cfg.loss_config if loss_name == cfg.loss else {}))
    targets = buffer.targets if head.labels_loss else None
    if head.labels_loss and targets is None:
        raise ScrError(f"head {head.head_type!r} has no labels for the training rows; call its fit_to_rows first")
    lr_min, lr_max = schedule.lr
    trained = [p for m in (head, *adapters) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=lr_min, weight_decay=cfg.weight_decay)
    camera_opts = [
        # fused: one kernel for the few small tensors of a pose correction, not a dozen ops each
        torch.optim.AdamW(part.module.parameters(), lr=part.training_lr, weight_decay=0.0, fused=True)
        for part in cameras
    ]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr_max, total_steps=iterations, div_factor=lr_max / lr_min, cycle_momentum=False
    )
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and setup.amp_dtype == torch.float16)
    encoding_part = next((part for part in setup.parts if part.gives_global_encoding), None)
    encoding_generator = torch.Generator(device=dev).manual_seed(cfg.seed + 7919 * (1 + distributed.rank()))
    tail = max(1, iterations // 20)
    # Each iteration's loss stays on the device; the loop reads it every LOSS_READ_EVERY
    # iterations (ACE's interval), since reading waits for the device to finish the step.
    losses = torch.empty(iterations, device=dev)
    loss_read = 0  # iterations whose loss has been read and checked
    t0 = time.perf_counter()
    for it in range(iterations):
        if it % 16 == 0:
            setup.check_cancel()
        idx, share = sampler.draw()
        frames = buffer.frame_index[idx]
        rows = buffer.features[idx].float()
        batch_targets = None if targets is None else {k: v[idx] for k, v in targets.items()}
        T_cam_world, intrinsics = buffer.T_cam_world[frames], buffer.intrinsics[frames]
        with autocast(dev, setup.amp_dtype):
            encodings = None if encoding_part is None else encoding_part.training_encodings(frames, encoding_generator)
            outputs, score, logits, T_cam_world, intrinsics, prior = model(
                rows, encodings, batch_targets, frames, T_cam_world, intrinsics, it / iterations
            )
        depth = buffer.depth[idx] if buffer.depth is not None else None
        labels = {"logits": logits, "targets": batch_targets} if batch_targets is not None else {}
        step = iterations if schedule.final_threshold else it
        # Heads with a coarse and a refined output (R-SCoRe) have both supervised.
        loss = share * sum(
            loss_fn(
                coords.float(),
                buffer.pixels[idx],
                T_cam_world,
                intrinsics,
                step,
                depth=depth,
                score=score,
                **labels,
            )[0]
            for coords in outputs
        )
        loss = loss + prior  # what the camera corrections cost besides the loss (the odometry prior)
        opt.zero_grad(set_to_none=True)
        for camera_opt in camera_opts:
            camera_opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        for camera_opt in camera_opts:
            scaler.step(camera_opt)
        if scaler.is_enabled():
            # fp16 on CUDA: the scaler skips the step of a batch whose gradients overflowed (it
            # lowers its scale); the schedule follows the steps taken. Reading the scale waits for
            # the device, so only this path pays for it.
            scale = scaler.get_scale()
            scaler.update()
            if scaler.get_scale() >= scale:
                sched.step()
        else:
            sched.step()
        losses[it] = loss.detach()
        if (it + 1) % LOSS_READ_EVERY == 0 or it == iterations - 1:
            read = losses[loss_read : it + 1].cpu()  # waits for the device: the timing below is true
            bad = torch.nonzero(~torch.isfinite(read))
            if len(bad):
                first = loss_read + int(bad[0])
                raise ScrError(
                    f"training diverged at iteration {first} (loss {float(read[int(bad[0])])}); "
                    "try --precision fp32 or a lower lr_max"
                )
            loss_read = it + 1
            window = losses[max(0, it + 1 - tail) : it + 1]
            setup.report(
                Progress(schedule.stage, it + 1, iterations, time.perf_counter() - t0, loss=float(window.mean()))
            )
    final = float(losses[iterations - tail :].mean())
    return iterations, distributed.all_sum(final) / distributed.world_size()


class _TrainingOutputs(torch.nn.Module):
    """The head's training outputs as ``forward``, the call DistributedDataParallel wraps:
    local rows (N, C) through the parts that train with the head, plus the global encoding
    (N, D) if any, into the head; and the batch's cameras through the parts that adjust them,
    with the prior those parts put on their adjustment (a scalar added to the loss).

    Shapes: features (N, C), encodings (N, D), groups = frame indices (N,), T_cam_world (N, 3, 4),
    intrinsics (N, 4)."""

    def __init__(
        self, head: torch.nn.Module, adapters: Sequence[torch.nn.Module] = (), cameras: Sequence[torch.nn.Module] = ()
    ) -> None:
        super().__init__()
        self.head = head
        self.adapters = torch.nn.ModuleList(adapters)
        self.cameras = torch.nn.ModuleList(cameras)

    def forward(self, features, encodings, targets, groups, T_cam_world, intrinsics, fraction: float):
        for adapter in self.adapters:
            features = adapter(features)
        prior = torch.zeros((), device=features.device)
        for camera in self.cameras:
            T_cam_world, intrinsics, camera_prior = camera(groups, T_cam_world, intrinsics, fraction)
            prior = prior + camera_prior
        coords, score, logits = self.head.training_outputs(append_encoding(features, encodings), targets, groups)
        return coords, score, logits, T_cam_world, intrinsics, prior

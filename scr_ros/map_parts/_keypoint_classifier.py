"""Keypoint classifier ("Exploring Matching Rates", supplement sections 2.2 and 3).

A small MLP on the encoder features the head reads, predicting the probability that the head's
scene coordinate for that feature will be a RANSAC inlier. Labels come from the trained head
itself: a training-buffer row is positive when its predicted coordinate reprojects within
``inlier_px`` (the RANSAC threshold) of its pixel under the frame's known pose. Because the
buffer already holds augmented features with their pixels and poses, labelling costs one head
forward pass over it, and training is a few epochs of a tiny network on shuffled rows with a
large learning rate (minutes on a GPU for the paper's 8M rows, seconds here).

At relocalization the probabilities rank the correspondences (``selectors.ClassifierSelector``)
so that RANSAC sees mostly inliers: fewer hypotheses to find the pose and fewer points to score
each one.

Shapes: features (N, C) -> logits (N,); :meth:`KeypointClassifier.probability` applies the sigmoid.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ScrError
from ..geometry import project_camera_points, world_to_camera


class KeypointClassifier(nn.Module):
    """Four linear layers (ReLU between them) and a sigmoid: features (N, C) -> P(inlier) (N,)."""

    def __init__(self, in_channels: int, width: int = 256) -> None:
        super().__init__()
        if not (
            isinstance(in_channels, int) and 1 <= in_channels <= 8192 and isinstance(width, int) and 1 <= width <= 8192
        ):
            raise ValueError(f"bad keypoint classifier size: in_channels={in_channels!r}, width={width!r}")
        self.config = {"in_channels": in_channels, "width": width}
        self.layers = nn.ModuleList(
            [nn.Linear(in_channels, width), nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, 1)]
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (N,)."""
        x = features
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x).squeeze(-1).float()

    def probability(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(features))


@torch.no_grad()
def inlier_labels(
    head: nn.Module,
    features: torch.Tensor,
    pixels: torch.Tensor,
    T_cam_world: torch.Tensor,
    intrinsics: torch.Tensor,
    inlier_px: float,
    chunk: int = 65536,
    autocast_ctx=None,
) -> torch.Tensor:
    """Whether each row's predicted coordinate reprojects within ``inlier_px`` (bool (N,)).

    features (N, C); pixels (N, 2); T_cam_world (N, 3, 4) and intrinsics (N, 4) per row.
    The error is Euclidean in pixels, as RANSAC measures it; points behind the camera are outliers.
    """
    out = torch.empty(len(features), dtype=torch.bool, device=features.device)
    for s in range(0, len(features), chunk):
        sl = slice(s, s + chunk)
        if autocast_ctx is not None:
            with autocast_ctx():
                coords = head(features[sl].float())
        else:
            coords = head(features[sl].float())
        cam = world_to_camera(coords.float(), T_cam_world[sl])
        z = cam[:, 2]
        proj = project_camera_points(cam, intrinsics[sl], min_depth=1e-6)
        err = torch.hypot(proj[:, 0] - pixels[sl, 0], proj[:, 1] - pixels[sl, 1])
        out[sl] = (z > 0.1) & (err < inlier_px)
    return out


def train_classifier(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    width: int = 256,
    epochs: float = 4.0,
    batch_size: int = 5120,
    lr_min: float = 1e-4,
    lr_max: float = 4e-3,
    weight_decay: float = 0.01,
    max_samples: int = 8_000_000,
    seed: int = 0,
    autocast_ctx=None,
    progress: Callable[[int, int, float, float], None] | None = None,
    check_cancel: Callable[[], None] | None = None,
) -> tuple[KeypointClassifier, dict]:
    """Train a classifier of ``width`` on buffer rows ``features`` (N, C) with bool ``labels``
    (N,): AdamW with a one-cycle schedule from ``lr_min`` up to ``lr_max``, ``epochs`` over at
    most ``max_samples`` rows in batches of ``batch_size``.

    Returns the classifier (eval mode, on the features' device) and training figures: rows,
    inlier fraction, final loss, and accuracy / precision / recall at p = 0.5 on a held-out 5 %.
    """
    dev = features.device
    n_all = len(features)
    if n_all < 2:
        raise ScrError("the keypoint classifier needs training rows; the buffer is empty")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_all, generator=gen)[:max_samples]
    n_val = max(1, len(order) // 20)
    val, train = order[:n_val].to(dev), order[n_val:].to(dev)
    n = len(train)
    torch.manual_seed(seed)
    clf = KeypointClassifier(features.shape[1], width).to(dev).train()
    batch = min(batch_size, n)
    iterations = max(1, int(round(epochs * n / batch)))
    opt = torch.optim.AdamW(clf.parameters(), lr=lr_min, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr_max, total_steps=iterations, div_factor=lr_max / lr_min, cycle_momentum=False
    )
    positive = float(labels[train].float().mean())
    # Weigh the rarer class up so that a scene with 90 % inliers does not teach "always yes".
    pos_weight = torch.tensor((1.0 - positive) / max(positive, 1e-6), device=dev).clamp(0.1, 10.0)
    perm, cursor, recent = train[torch.randperm(n, generator=gen).to(dev)], 0, []
    t0 = time.perf_counter()
    for it in range(iterations):
        if check_cancel is not None and it % 16 == 0:
            check_cancel()
        if cursor + batch > n:
            perm, cursor = train[torch.randperm(n, generator=gen).to(dev)], 0
        idx = perm[cursor : cursor + batch]
        cursor += batch
        if autocast_ctx is not None:
            with autocast_ctx():
                logits = clf(features[idx].float())
        else:
            logits = clf(features[idx].float())
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels[idx].float(), pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ScrError(f"keypoint classifier training diverged at iteration {it}")
        recent = (recent + [value])[-max(1, iterations // 20) :]
        if progress is not None and (it % 10 == 0 or it == iterations - 1):
            progress(it + 1, iterations, sum(recent) / len(recent), time.perf_counter() - t0)
    clf.eval()
    with torch.no_grad():
        p = clf.probability(features[val].float())
    pred, truth = p >= 0.5, labels[val]
    tp = int((pred & truth).sum())
    stats = {
        "rows": int(n),
        "iterations": iterations,
        "inlier_fraction": round(positive, 4),
        "final_loss": round(float(np.mean(recent)), 5),
        "val_accuracy": round(float((pred == truth).float().mean()), 4),
        "val_precision": round(tp / max(int(pred.sum()), 1), 4),
        "val_recall": round(tp / max(int(truth.sum()), 1), 4),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return clf, stats

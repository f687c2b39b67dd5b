"""Discrete labels of scene points, for heads and map parts that classify before they regress.

* :func:`kmeans` — k-means with k-means++ seeding (OpenCV), points (N, D) -> centres (k, D).
* :func:`hierarchical_kmeans` / :func:`assign_hierarchy` — HSCNet++'s two-level labels: scene
  points (N, 3) split into ``regions`` clusters, each region into ``subregions``; a point's labels
  are (region, sub-region) and its residual is the point minus its sub-region centre.
* :func:`minibatch_kmeans` — SS-DVR's semantic partition of features (eq. 3-4): centres updated
  from random mini-batches with per-centre learning rates 1 / count.
* :func:`propagate_labels` — HSCNet++'s label propagation (section 5): a row without a label
  takes the label of the nearest labelled row of the same image within a (2z+1)^2 window.

Shapes: points (N, 3) float metres; features (N, C); labels (N,) int64, -1 where unknown.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy.spatial import cKDTree


def kmeans(points: np.ndarray, k: int, seed: int = 0, attempts: int = 3) -> np.ndarray:
    """``k`` centres (k, D) float32 of ``points`` (N, D) by k-means with k-means++ seeding, in a
    fixed (lexicographic) order; with fewer distinct points than ``k`` the centres repeat."""
    points = np.unique(np.asarray(points, np.float32).reshape(len(points), -1), axis=0)
    if len(points) == 0:
        raise ValueError("k-means needs at least one point")
    if len(points) <= k:
        return np.resize(points, (k, points.shape[1])).astype(np.float32)
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
    _, _, centres = cv2.kmeans(points, k, None, criteria, attempts, cv2.KMEANS_PP_CENTERS)
    return centres[np.lexsort(centres.T[::-1])].astype(np.float32)


def nearest(points: torch.Tensor, centres: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index (N,) of the nearest of ``centres`` (k, D) for each of ``points`` (N, D)."""
    return (
        torch.cat(
            [
                torch.cdist(points[s : s + chunk].float(), centres.float()).argmin(dim=1)
                for s in range(0, len(points), chunk)
            ]
        )
        if len(points)
        else torch.zeros(0, dtype=torch.int64, device=points.device)
    )


def hierarchical_kmeans(
    points: np.ndarray, regions: int, subregions: int, seed: int = 0, max_points: int = 200_000
) -> tuple[np.ndarray, np.ndarray]:
    """Two-level k-means of scene points (N, 3): region centres (R, 3) and sub-region centres
    (R, S, 3). At most ``max_points`` random points are clustered (the centres of a few hundred
    thousand points are those of millions, to well under a sub-region's size)."""
    points = np.asarray(points, np.float32).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    if len(points) > max_points:
        points = points[rng.choice(len(points), max_points, replace=False)]
    top = kmeans(points, regions, seed)
    owner = nearest(torch.from_numpy(points), torch.from_numpy(top)).numpy()
    sub = np.empty((regions, subregions, 3), np.float32)
    for r in range(regions):
        members = points[owner == r]
        # A region no point falls in (duplicate centres) keeps its centre for every sub-region.
        sub[r] = kmeans(members, subregions, seed + 1 + r) if len(members) else top[r]
    return top, sub


def assign_hierarchy(
    points: torch.Tensor, region_centres: torch.Tensor, subregion_centres: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points (N, 3) -> (region (N,), sub-region (N,)): the nearest region centre, then the
    nearest sub-region centre of that region."""
    region = nearest(points, region_centres)
    sub = torch.empty_like(region)
    for r in torch.unique(region).tolist():
        rows = torch.nonzero(region == r).squeeze(1)
        sub[rows] = nearest(points[rows], subregion_centres[r])
    return region, sub


def minibatch_kmeans(
    features: torch.Tensor, k: int, batch_size: int = 4096, iterations: int = 200, seed: int = 0
) -> torch.Tensor:
    """SS-DVR's mini-batch k-means (eq. 3-4): ``k`` centres (k, C) float32 of ``features`` (N, C).

    Centres start from k-means++ seeding on a sample of rows (the paper draws them at random;
    two random starts in one class can leave a class without a centre); each iteration assigns a
    random batch to its nearest centres and moves each centre towards its members' mean with step ``n_batch / count``,
    ``count`` being how many rows the centre has taken so far (so each centre converges to the
    mean of everything it was given)."""
    if len(features) < k:
        raise ValueError(f"mini-batch k-means of {k} clusters needs at least {k} rows, got {len(features)}")
    gen = torch.Generator().manual_seed(seed)
    x = features.float()
    sample = x[torch.randperm(len(x), generator=gen)[:20_000].to(x.device)]
    centres = sample[torch.randint(len(sample), (1,), generator=gen).to(x.device)]
    for _ in range(k - 1):
        d2 = torch.cdist(sample, centres).min(dim=1).values.square()
        pick = torch.multinomial((d2 / d2.sum().clamp(min=1e-12)).cpu(), 1, generator=gen).to(x.device)
        centres = torch.cat([centres, sample[pick]])
    counts = torch.zeros(k, device=x.device)
    for _ in range(iterations):
        batch = x[torch.randint(len(x), (min(batch_size, len(x)),), generator=gen).to(x.device)]
        owner = torch.cdist(batch, centres).argmin(dim=1)
        n = torch.bincount(owner, minlength=k).float()
        sums = torch.zeros_like(centres).index_add_(0, owner, batch)
        counts += n
        step = torch.where(counts > 0, n / counts.clamp(min=1), torch.zeros_like(n))
        means = sums / n.clamp(min=1)[:, None]
        centres += step[:, None] * (means - centres)
    return centres


def propagate_labels(pixels: np.ndarray, frame: np.ndarray, known: np.ndarray, radius: float) -> np.ndarray:
    """HSCNet++'s label propagation on training rows.

    Args:
        pixels: (N, 2) each row's pixel in its original image.
        frame: (N,) each row's image.
        known: (N,) bool, rows that have a label of their own.
        radius: half the window side in pixels: ``z`` feature cells times the encoder stride
            (in original-image pixels).

    Returns:
        source (N,) int64: the row whose label each row takes — itself when known, else the
        nearest known row of the same image within the (2 radius + 1)^2 window (Chebyshev
        distance), -1 when there is none.
    """
    pixels = np.asarray(pixels, np.float64).reshape(-1, 2)
    frame = np.asarray(frame).reshape(-1)
    known = np.asarray(known, bool).reshape(-1)
    source = np.where(known, np.arange(len(known)), -1).astype(np.int64)
    order = np.argsort(frame, kind="stable")
    bounds = np.flatnonzero(np.diff(frame[order])) + 1
    for rows in np.split(order, bounds):
        have = rows[known[rows]]
        need = rows[~known[rows]]
        if len(have) == 0 or len(need) == 0:
            continue
        dist, idx = cKDTree(pixels[have]).query(pixels[need], p=np.inf, distance_upper_bound=radius + 1e-9)
        hit = np.isfinite(dist)
        source[need[hit]] = have[idx[hit]]
    return source

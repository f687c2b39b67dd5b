"""R-SCoRe's covisibility graph of the mapping images and its Node2Vec embeddings.

Covisibility comes from the poses alone (R-SCoRe supplement A.3): for image i, sample pixels,
unproject each at a random depth in [0, d_v], and count it for image j when it falls inside j's
viewing frustum, weighted by the cosine between the two viewing rays::

    O(i -> j) = sum_k V_k(i -> j) * alpha_k(i, j) / N_i

Two images are linked when the harmonic mean of O(i -> j) and O(j -> i) reaches a threshold
(0.2). Node2Vec (Grover and Leskovec 2016; R-SCoRe A.2) embeds the graph: second-order random
walks with return parameter p and in-out parameter q, then skip-gram on the walks (gensim's
Word2Vec). Images that see the same part of the scene get nearby embeddings, which is what the
head reads as the global encoding.

Conventions: poses ``T_world_cam`` (F, 4, 4) camera-to-world with optical axes (x right, y
down, z forward); intrinsics (F, 4) as fx, fy, cx, cy; image sizes (F, 2) as width, height.
"""

from __future__ import annotations

import hashlib

import numpy as np
from gensim.models import Word2Vec


def frustum_overlap(
    T_world_cam: np.ndarray,
    intrinsics: np.ndarray,
    sizes: np.ndarray,
    samples: int = 256,
    max_depth: float = 8.0,
    seed: int = 0,
) -> np.ndarray:
    """Directed overlap O (F, F): ``O[i, j]`` = O(i -> j) of the module docstring (diagonal 1)."""
    T = np.asarray(T_world_cam, np.float64)
    K = np.asarray(intrinsics, np.float64)
    wh = np.asarray(sizes, np.float64)
    n = len(T)
    rng = np.random.default_rng(seed)
    centres = T[:, :3, 3]
    R_cw = np.transpose(T[:, :3, :3], (0, 2, 1))  # world -> camera rotations
    t_cw = -np.einsum("fij,fj->fi", R_cw, centres)
    overlap = np.zeros((n, n))
    for i in range(n):
        u = rng.uniform(0, wh[i, 0], samples)
        v = rng.uniform(0, wh[i, 1], samples)
        depth = rng.uniform(0, max_depth, samples)
        rays = np.stack([(u - K[i, 2]) / K[i, 0], (v - K[i, 3]) / K[i, 1], np.ones(samples)], axis=1)
        points = (rays * depth[:, None]) @ T[i, :3, :3].T + centres[i]  # (N, 3) world
        cam = np.einsum("fij,nj->fni", R_cw, points) + t_cw[:, None, :]  # (F, N, 3) in every camera
        z = cam[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            px = K[:, None, 0] * cam[..., 0] / z + K[:, None, 2]
            py = K[:, None, 1] * cam[..., 1] / z + K[:, None, 3]
        visible = (z > 0) & (z <= max_depth) & (px >= 0) & (px < wh[:, None, 0]) & (py >= 0) & (py < wh[:, None, 1])
        to_i = points - centres[i]
        to_j = points[None] - centres[:, None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.einsum("nk,fnk->fn", to_i, to_j) / (
                np.linalg.norm(to_i, axis=1)[None] * np.linalg.norm(to_j, axis=2)
            )
        overlap[i] = np.where(visible, np.nan_to_num(np.clip(cos, 0.0, 1.0)), 0.0).sum(axis=1) / samples
    return overlap


def covisibility_graph(overlap: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """Symmetric edge weights (F, F): the harmonic mean of O(i -> j) and O(j -> i) where it
    reaches ``threshold``, else 0; no self-loops."""
    a, b = overlap, overlap.T
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.nan_to_num(2 * a * b / (a + b))
    weights = np.where(h >= threshold, h, 0.0)
    np.fill_diagonal(weights, 0.0)
    return weights


def node2vec_walks(
    weights: np.ndarray, walks_per_node: int = 10, length: int = 80, p: float = 0.25, q: float = 4.0, seed: int = 0
) -> list[list[int]]:
    """Second-order random walks on the weighted graph: from t to v, the next node x is drawn
    with probability proportional to ``w(v, x)`` times 1/p if x is t, 1 if x neighbours t, and
    1/q otherwise. A node without edges gives a walk of itself alone."""
    rng = np.random.default_rng(seed)
    n = len(weights)
    neighbours = [np.flatnonzero(weights[v]) for v in range(n)]
    adjacent = weights > 0
    walks = []
    for _ in range(walks_per_node):
        for start in rng.permutation(n):
            walk = [int(start)]
            while len(walk) < length:
                v = walk[-1]
                nb = neighbours[v]
                if len(nb) == 0:
                    break
                w = weights[v, nb]
                if len(walk) > 1:
                    t = walk[-2]
                    w = w * np.where(nb == t, 1.0 / p, np.where(adjacent[t, nb], 1.0, 1.0 / q))
                walk.append(int(rng.choice(nb, p=w / w.sum())))
            walks.append(walk)
    return walks


def _stable_hash(text: str) -> int:
    # gensim seeds each word's initial vector from hash(word + seed); Python's str hash changes
    # from process to process, which would make the embeddings differ between runs and ranks.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def node2vec_embeddings(
    weights: np.ndarray,
    dim: int = 256,
    p: float = 0.25,
    q: float = 4.0,
    walks_per_node: int = 10,
    length: int = 80,
    window: int = 10,
    seed: int = 0,
) -> np.ndarray:
    """Unit Node2Vec embeddings (F, dim) of the graph's nodes (skip-gram, negative sampling,
    one worker so that the same seed gives the same embeddings)."""
    walks = node2vec_walks(weights, walks_per_node, length, p, q, seed)
    model = Word2Vec(
        [[str(v) for v in walk] for walk in walks],
        vector_size=dim,
        window=window,
        min_count=0,
        sg=1,
        negative=5,
        workers=1,
        epochs=1,
        seed=seed,
        hashfxn=_stable_hash,
    )
    emb = np.stack([model.wv[str(v)] for v in range(len(weights))]).astype(np.float32)
    return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def neighbour_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each node's neighbours, padded: (F, max degree) int64 (-1 past the degree) and degrees (F,)."""
    lists = [np.flatnonzero(row) for row in weights]
    degree = np.array([len(x) for x in lists], np.int64)
    table = np.full((len(lists), max(1, int(degree.max(initial=0)))), -1, np.int64)
    for i, x in enumerate(lists):
        table[i, : len(x)] = x
    return table, degree

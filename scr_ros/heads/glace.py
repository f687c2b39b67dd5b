"""GLACE's position decoder head and R-SCoRe's coarse-plus-refinement head.

Both predict a scene coordinate as a mixture of *cluster centres* of the mapping camera
positions plus an offset (GLACE eq. 8)::

    y = sum_i softmax(s)_i * c_i + (x, y, z) / h

where the head's last layer gives k logits ``s`` and a homogeneous offset (x, y, z, w),
dehomogenized as in ACE. With one centre this is ACE's head around the mean camera position;
with many (k-means++ of the camera positions, k = 50 in GLACE for multimodal scenes such as
12-Scenes' integrated i19) the logits pick the part of the scene a feature belongs to, so a
feature that looks alike in two rooms need not be averaged between them.

Layout (GLACE supplement, Fig. 1; every layer a linear map): a skip-connected residual block of
three layers on the input, ``num_blocks`` residual blocks of three layers whose middle layer is
``expansion`` times wider, then three layers to the k logits and the offset. R-SCoRe
(supplement A.4) adds a *refinement module*: the coarse coordinate, embedded and added to the
hidden features, goes through ``refine_blocks`` more residual blocks and three layers to a
second homogeneous offset added to the coarse coordinate; the loss supervises both outputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..labels import kmeans
from .base import Dehomogenize, SceneHead, check_int, register_head

# The scene-size rule of GLACE's supplement: one residual block indoors, two for Cambridge
# Landmarks (hundreds of metres), three with a doubled middle layer for Aachen (kilometres). We
# read "scene size" as the diagonal of the mapping cameras' bounding box.
SIZE_RULE = ((50.0, {"num_blocks": 1}), (1000.0, {"num_blocks": 2}), (math.inf, {"num_blocks": 3, "expansion": 2}))
# GLACE uses 50 centres for multimodal scenes and one for unimodal ones. We call the camera
# positions multimodal when they fall into several groups that no chain of cameras closer than
# MODE_LINK metres joins (separate rooms, as in i19), which a walked trajectory never does.
MULTIMODAL_CLUSTERS = 50
MODE_LINK = 2.0


def position_groups(positions: np.ndarray, link: float = MODE_LINK) -> int:
    """How many groups the positions (F, 3) form when positions closer than ``link`` join."""
    positions = np.asarray(positions, np.float64).reshape(-1, 3)
    pairs = cKDTree(positions).query_pairs(link, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(positions),) * 2)
    return int(connected_components(graph, directed=False)[0])


def kmeans_pp_centres(positions: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``k`` cluster centres (k, 3) of the positions by k-means with k-means++ seeding; with
    fewer distinct positions than ``k`` the centres repeat."""
    return kmeans(np.asarray(positions, np.float32).reshape(-1, 3), k, seed)


class _Residual(nn.Module):
    """Three linear layers with ReLUs added to the input; the middle one ``expansion`` wide."""

    def __init__(self, width: int, expansion: int, in_channels: int | None = None) -> None:
        super().__init__()
        in_channels = in_channels or width
        self.skip = nn.Identity() if in_channels == width else nn.Linear(in_channels, width)
        self.layers = nn.ModuleList(
            [nn.Linear(in_channels, width * expansion), nn.Linear(width * expansion, width), nn.Linear(width, width)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for layer in self.layers:
            y = F.relu(layer(y))
        return self.skip(x) + y


def _decoder(width: int, outputs: int) -> nn.ModuleList:
    return nn.ModuleList([nn.Linear(width, width), nn.Linear(width, width), nn.Linear(width, outputs)])


def _run(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for layer in layers[:-1]:
        x = F.relu(layer(x))
    return x


@register_head("glace")
class GlaceHead(SceneHead):
    """GLACE's head: a residual MLP with the position decoder (see the module docstring).

    Args:
        in_channels: features the head reads (local features plus any global encoding).
        width: hidden width (GLACE: 768 = 512 local + 256 global).
        num_blocks: residual blocks after the first (GLACE's N; default by scene size).
        expansion: how much wider the middle layer of each residual block is.
        clusters: k, the number of centres (default: 50 for multimodal camera positions, else 1).
        refine_blocks: R-SCoRe's refinement module, this many residual blocks (0: none).
    """

    # The centres stay fp32 in the map, as in R-SCoRe: fp16 would round them by centimetres.
    full_precision = ("mean", "centres")

    def __init__(
        self,
        in_channels: int = 768,
        width: int = 768,
        num_blocks: int = 1,
        expansion: int = 1,
        clusters: int = 1,
        refine_blocks: int = 0,
        min_scale: float = 0.01,
        max_scale: float = 4.0,
        score: bool = False,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            width=width,
            num_blocks=num_blocks,
            expansion=expansion,
            clusters=clusters,
            refine_blocks=refine_blocks,
            min_scale=min_scale,
            max_scale=max_scale,
        )
        if score:
            self.config["score"] = score
        check_int("in_channels", in_channels, 1, 8192)
        check_int("width", width, 1, 8192)
        check_int("num_blocks", num_blocks, 0, 64)
        check_int("expansion", expansion, 1, 8)
        check_int("clusters", clusters, 1, 1024)
        check_int("refine_blocks", refine_blocks, 0, 64)
        if not isinstance(score, bool):
            raise ValueError(f"score must be true or false, got {score!r}")
        self.register_buffer("centres", torch.zeros(clusters, 3))
        self.first = _Residual(width, 1, in_channels)
        self.blocks = nn.ModuleList(_Residual(width, expansion) for _ in range(num_blocks))
        self.decoder = _decoder(width, clusters + 4 + (1 if score else 0))
        self.refine_blocks = refine_blocks
        if refine_blocks:
            self.embed = nn.Linear(3, width)
            self.refine = nn.ModuleList(_Residual(width, expansion) for _ in range(refine_blocks))
            self.refine_decoder = _decoder(width, 4)
        self.clusters = clusters
        self.predicts_score = score
        self.dehomogenize = Dehomogenize(min_scale, max_scale)

    @classmethod
    def scene_defaults(cls, positions: np.ndarray) -> dict:
        lo, hi = np.min(positions, axis=0), np.max(positions, axis=0)
        diagonal = float(np.linalg.norm(hi - lo))
        defaults = dict(next(rule for limit, rule in SIZE_RULE if diagonal < limit))
        defaults["clusters"] = MULTIMODAL_CLUSTERS if position_groups(positions) > 1 else 1
        return defaults

    def fit_to_cameras(self, positions: np.ndarray, seed: int = 0) -> None:
        super().fit_to_cameras(positions, seed)
        self.centres.copy_(torch.from_numpy(kmeans_pp_centres(positions, self.clusters, seed)))

    def _outputs(self, features: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        x = self.first(features)
        for block in self.blocks:
            x = block(x)
        hidden = _run(self.decoder, x)
        # The decoder's output and the mixture run in fp32 even under autocast: centres are
        # metres apart, and half precision would round the coordinates by centimetres.
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.decoder[-1](hidden.float())
            k = self.clusters
            weights = torch.softmax(out[:, :k], dim=1)
            coarse = weights @ self.centres + self.dehomogenize(out[:, k : k + 4])
            score = out[:, -1] if self.predicts_score else None
        if not self.refine_blocks:
            return [coarse], score
        # Refinement sees where the coarse output put the feature (relative to the mean camera,
        # so the embedding's input is metres around the scene, not absolute map coordinates).
        y = x + self.embed((coarse - self.mean).to(x.dtype))
        for block in self.refine:
            y = block(y)
        hidden = _run(self.refine_decoder, y)
        with torch.autocast(device_type=y.device.type, enabled=False):
            out = self.refine_decoder[-1](hidden.float())
            fine = coarse + self.dehomogenize(out)
        return [fine, coarse], score

    def training_outputs(
        self, features: torch.Tensor, targets: dict | None = None, groups: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor | None, dict]:
        return (*self._outputs(features), {})

    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        outputs, score = self._outputs(features)
        return outputs[0], score

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.predict(features)[0]


@register_head("rscore")
class RScoreHead(GlaceHead):
    """R-SCoRe's head (supplement A.4): GLACE's position decoder with three residual blocks for
    the coarse output and three in the refinement module, middle layers twice as wide."""

    @classmethod
    def scene_defaults(cls, positions: np.ndarray) -> dict:
        return {"clusters": super().scene_defaults(positions)["clusters"]}

    def __init__(
        self,
        in_channels: int = 768,
        width: int = 768,
        num_blocks: int = 3,
        expansion: int = 2,
        refine_blocks: int = 3,
        **kwargs,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            width=width,
            num_blocks=num_blocks,
            expansion=expansion,
            refine_blocks=refine_blocks,
            **kwargs,
        )

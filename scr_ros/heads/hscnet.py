"""HSCNet++'s hierarchical head: classify the region, then the sub-region, then regress the
residual to the sub-region's centre (Li et al.; HSCNet++ section 4).

Labels come from two-level hierarchical k-means of the scene points of the training rows
(:mod:`scr_ros.labels`; 25 x 25 by default, the first level scaled by the number of separate
rooms the mapping cameras form, as the paper's 7 x 25 for i7-Scenes). Where do the scene points
come from? From measured depth where the training rows have it (the buffer holds depth when
the mapping loss uses it, e.g. the cpu preset's ``ace-depth``): that is the paper's dense ground
truth. Otherwise from the map's own triangulation: a first ACE-style stage trains an ACE head on
the buffer with the reprojection loss, and the rows whose prediction then reprojects within
``label_max_error_px`` of their pixel become labelled points — RGB-only mapping has no other
source of 3D points, and these are the points ACE itself would have localized with. Either way
labels are sparse, so HSCNet++'s sparse supervision applies: propagation to a (2z+1)^2 window,
symmetric cross-entropy, and the angle-based reprojection loss (:mod:`scr_ros.losses.hscnet`).

Layout on rows (N, C), every layer a linear map (a 1x1 convolution):

    features -> stem (3 layers, skip) -> x
    x -> g_r (2 layers) -> h_r -> region logits (N, R)
    FiLM(x | one-hot region) -> g_s (2 layers) [-> attention] -> h_s -> sub-region logits (N, S)
    FiLM(x | one-hot region, one-hot sub-region) -> g_3D (3 layers) [-> attention] -> residual (N, 3)
    coordinate = sub-region centre[region, sub-region] + residual

FiLM (eq. 1) modulates each row by its own gamma and beta, generated from the label one-hots by
two linear layers: the paper's per-position conditioning. The sub-region branch's labels are
indices within a region, so the 3D branch is conditioned on both levels (the sub-region index
alone would not say which region's). While training, conditioning uses the rows' true labels
(the paper's choice; rows without a label use the prediction); at relocalization, the argmax.

``hscnet-txf`` adds HSCNet++'s transformer blocks after each conditioning (in the conditioning
blocks g_s and g_3D; one block each by default where the paper has two attention layers: on two
CPU cores each block costs about as much as the rest of the head, and ``attention`` sets more).
The paper attends over
the positions of an image with linear attention; a training batch here is rows of many images, so
each row attends to the rows of its own image in the batch (``groups``) — a random subset of the
image's features while training, all of them at relocalization. Linear attention (kernel
``elu + 1``) makes that a per-image sum, so the cost stays linear in the rows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import distributed
from ..errors import ScrError
from ..fit_context import FitContext, TrainingBuffer
from ..labels import assign_hierarchy, hierarchical_kmeans, propagate_labels
from .base import SceneHead, check_int, register_head
from .glace import position_groups

BRANCHING = 25  # the paper's branching factor at both levels


class FiLM(nn.Module):
    """Per-row feature-wise linear modulation: ``gamma(w) * z + beta(w)`` (HSCNet++ eq. 1).

    Shapes: z (N, width), w (N, cond) -> (N, width). ``gamma`` starts at 1 and ``beta`` at 0, so
    an untrained layer passes the features through."""

    def __init__(self, cond: int, width: int) -> None:
        super().__init__()
        self.generator = nn.Sequential(nn.Linear(cond, width), nn.ReLU(), nn.Linear(width, 2 * width))
        nn.init.zeros_(self.generator[-1].weight)
        nn.init.zeros_(self.generator[-1].bias)

    def forward(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.generator(w.to(z.dtype)).chunk(2, dim=1)
        return (1 + gamma) * z + beta


class GroupedLinearAttention(nn.Module):
    """Linear attention (Katharopoulos et al., kernel ``elu + 1``) among the rows of each group.

    Shapes: x (N, width), groups (N,) int64 or None (all rows one group) -> (N, width)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"attention width {width} is not a multiple of its {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        N, W = x.shape
        H, D = self.heads, W // self.heads
        q, k, v = self.qkv(x).reshape(N, 3, H, D).unbind(1)
        q, k = F.elu(q) + 1, F.elu(k) + 1
        # Rows sorted by group into a zero-padded (groups, longest group) layout, so that the
        # per-group sums are batched matrix products rather than per-row outer products.
        if groups is None:
            group = torch.zeros(N, dtype=torch.int64, device=x.device)
            counts = torch.tensor([N], device=x.device)
        else:
            _, group, counts = torch.unique(groups, return_inverse=True, return_counts=True)
        order = torch.argsort(group, stable=True)
        G, M = len(counts), int(counts.max()) if N else 0
        starts = torch.cumsum(counts, 0) - counts
        slot = group[order] * M + torch.arange(N, device=x.device) - starts[group[order]]

        def padded(t: torch.Tensor) -> torch.Tensor:
            return (
                torch.zeros(G * M, H, D, device=x.device, dtype=t.dtype)
                .index_copy(0, slot, t[order])
                .reshape(G, M, H, D)
            )

        qp, kp, vp = padded(q), padded(k), padded(v)
        kv = torch.einsum("gmhd,gmhe->ghde", kp, vp)
        num = torch.einsum("gmhd,ghde->gmhe", qp, kv)
        den = torch.einsum("gmhd,ghd->gmh", qp, kp.sum(1)).clamp(min=1e-6)
        ratio = (num.float() / den.float()[..., None]).to(num.dtype)
        out = torch.empty(N, H, D, device=x.device, dtype=ratio.dtype).index_copy(
            0, order, ratio.reshape(G * M, H, D)[slot]
        )
        return self.out(out.reshape(N, W).to(x.dtype))


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder layer on rows: grouped linear attention, then an MLP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = GroupedLinearAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), groups)
        return x + self.mlp(self.norm2(x))


class _Branch(nn.Module):
    """``layers`` linear layers with ReLUs, then ``attention`` transformer blocks."""

    def __init__(self, width: int, layers: int, attention: int, heads: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))
        self.attention = nn.ModuleList(TransformerBlock(width, heads) for _ in range(attention))

    def forward(self, x: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        for layer in self.layers:
            x = F.relu(layer(x))
        for block in self.attention:
            x = block(x, groups)
        return x


@register_head("hscnet")
class HscnetHead(SceneHead):
    """HSCNet's hierarchical classification-regression head (see the module docstring).

    Args:
        regions / subregions: the two branching factors (R, S).
        attention: transformer blocks after each conditioning (0: HSCNet; ``hscnet-txf``: 1,
            the paper has 2 for single scenes), with ``heads`` attention heads.
        label_epochs: epochs of the first ACE-style stage that triangulates label points when
            the rows have no depth (default: the mapping config's; on the tiny scene 8 of 20
            left 9 % of the rows labelled and most queries lost, 20 of 20 labelled 20 %).
        label_max_error_px: reprojection error under which a first-stage point becomes a label.
        propagation: z of the (2z+1)^2 propagation window, in feature cells (the paper's 5).
    """

    labels_loss = "hscnet"
    labels_name = "region"

    def __init__(
        self,
        in_channels: int = 512,
        width: int = 512,
        regions: int = BRANCHING,
        subregions: int = BRANCHING,
        attention: int = 0,
        heads: int = 8,
        score: bool = False,
        label_epochs: float | None = None,
        label_max_error_px: float = 10.0,
        propagation: int = 5,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            width=width,
            regions=regions,
            subregions=subregions,
            attention=attention,
            heads=heads,
            score=score,
            label_epochs=label_epochs,
            label_max_error_px=label_max_error_px,
            propagation=propagation,
        )
        check_int("in_channels", in_channels, 1, 8192)
        check_int("width", width, 8, 8192)
        check_int("regions", regions, 1, 4096)
        check_int("subregions", subregions, 1, 1024)
        check_int("attention", attention, 0, 16)
        check_int("heads", heads, 1, 64)
        check_int("propagation", propagation, 0, 64)
        if not isinstance(score, bool):
            raise ValueError(f"score must be true or false, got {score!r}")
        for name, value in (
            ("label_epochs", 1.0 if label_epochs is None else label_epochs),
            ("label_max_error_px", label_max_error_px),
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if attention and width % heads:
            raise ValueError(f"width {width} must be a multiple of heads {heads}")
        self.regions, self.subregions = regions, subregions
        self.predicts_score = score
        self.skip = nn.Identity() if in_channels == width else nn.Linear(in_channels, width)
        self.stem = nn.ModuleList([nn.Linear(in_channels, width), nn.Linear(width, width), nn.Linear(width, width)])
        self.region_branch = _Branch(width, 2, 0, heads)
        self.region_out = nn.Linear(width, regions)
        self.sub_film = FiLM(regions, width)
        self.sub_branch = _Branch(width, 2, attention, heads)
        self.sub_out = nn.Linear(width, subregions)
        self.xyz_film = FiLM(regions + subregions, width)
        self.xyz_branch = _Branch(width, 3, attention, heads)
        self.xyz_out = nn.Linear(width, 3 + (1 if score else 0))
        self.register_buffer("region_centres", torch.zeros(regions, 3))
        self.register_buffer("subregion_centres", torch.zeros(regions, subregions, 3))
        self.label_info: dict = {}

    full_precision = ("mean", "region_centres", "subregion_centres")

    @classmethod
    def scene_defaults(cls, positions: np.ndarray) -> dict:
        # i7-Scenes' 7 x 25: one first-level block of 25 per separate room.
        return {"regions": BRANCHING * position_groups(positions)}

    # ------------------------------------------------------------------ forward
    def _trunk(self, features: torch.Tensor) -> torch.Tensor:
        x = features
        for layer in self.stem:
            x = F.relu(layer(x))
        return self.skip(features) + x

    def _outputs(self, features: torch.Tensor, targets: dict | None, groups: torch.Tensor | None):
        x = self._trunk(features)
        region_logits = self.region_out(self.region_branch(x, groups)).float()
        region = region_logits.argmax(dim=1)
        known = None
        if targets is not None:
            known = targets["valid"]
            region = torch.where(known, targets["region"], region)
        region_hot = F.one_hot(region, self.regions)
        sub_logits = self.sub_out(self.sub_branch(self.sub_film(x, region_hot), groups)).float()
        sub = sub_logits.argmax(dim=1)
        if known is not None:
            sub = torch.where(known, targets["subregion"], sub)
        both = torch.cat([region_hot, F.one_hot(sub, self.subregions)], dim=1)
        hidden = self.xyz_branch(self.xyz_film(x, both), groups)
        # Residual and centre add up in fp32: centres are metres from the origin.
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.xyz_out(hidden.float())
            coords = self.subregion_centres[region, sub] + out[:, :3]
        score = out[:, 3] if self.predicts_score else None
        return coords, score, {"region": region_logits, "subregion": sub_logits}, region * self.subregions + sub

    def training_outputs(self, features, targets=None, groups=None):
        coords, score, logits, _ = self._outputs(features, targets, groups)
        return [coords], score, logits

    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        coords, score, _, _ = self._outputs(features, None, None)
        return coords, score

    def predict_labels(self, features: torch.Tensor):
        coords, score, _, label = self._outputs(features, None, None)
        return coords, score, label // self.subregions

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.predict(features)[0]

    # ------------------------------------------------------------------ labels
    def fit_to_rows(self, context: FitContext, buffer: TrainingBuffer) -> dict:
        cfg = self.config
        points, known, source = context.scene_points(
            buffer, epochs=cfg["label_epochs"], max_error_px=cfg["label_max_error_px"]
        )
        if int(known.sum()) < self.regions:
            raise ScrError(
                f"only {int(known.sum())} training rows have a scene point ({source}); HSCNet's {self.regions} "
                "regions need more"
            )
        top, sub = hierarchical_kmeans(points[known].cpu().numpy(), self.regions, self.subregions, seed=context.seed)
        dev = points.device
        self.region_centres.copy_(torch.from_numpy(top))
        self.subregion_centres.copy_(torch.from_numpy(sub))
        distributed.broadcast_module(self)  # several workers: every worker labels with rank 0's centres
        region, subregion = assign_hierarchy(points, self.region_centres.to(dev), self.subregion_centres.to(dev))
        n = buffer.size
        radius = cfg["propagation"] * context.feature_cell_px
        src = torch.from_numpy(
            propagate_labels(
                buffer.pixels[:n].cpu().numpy(), buffer.frame_index[:n].cpu().numpy(), known.cpu().numpy(), radius
            )
        ).to(dev)
        valid = src >= 0
        take = src.clamp(min=0)
        self.label_info = {
            "label_source": source,
            "labelled_rows": round(float(known.float().mean()), 4),
            "propagated_rows": round(float((valid & ~known).float().mean()), 4),
            "regions": self.regions,
            "subregions": self.subregions,
        }
        return {"xyz": points[take], "region": region[take], "subregion": subregion[take], "valid": valid}

    def training_figures(self) -> dict:
        return {"labels": self.label_info} if self.label_info else {}


@register_head("hscnet-txf")
class HscnetTransformerHead(HscnetHead):
    """HSCNet++: HSCNet's head with a transformer block after each conditioning."""

    # Training batches: 256 rows from each of several images, so attention sees an image's
    # rows together as it does at query time (a batch of rows from hundreds of images gives
    # each a handful: on the tiny scene, test preset, 8 x 8 labels from depth, the median
    # position error of six queries went from 12 cm to 5 cm).
    rows_per_image = 256

    def __init__(self, attention: int = 1, **kwargs) -> None:
        super().__init__(attention=attention, **kwargs)

"""SS-DVR's semantic-structural partitions and partition-aware feature fusion (section 3.1-3.2).

Fitted on the training buffer before the head trains (stage ``buffer``):

1. **Labels.** Semantic: mini-batch k-means of the buffer's features into ``semantic`` classes
   (2, eq. 3-4). Structural: k-means of the rows' scene points into ``structural`` clusters
   (64, eq. 5) — points from depth, or from a first ACE-style stage when the rows have no depth
   (:meth:`FitContext.scene_points <scr_ros.fit_context.FitContext.scene_points>`), spread to
   nearby rows of the same image by HSCNet++'s propagation. A row's partition is the pair.
2. **Label classifier.** A 6-layer MLP on the features predicts both labels (two softmaxes),
   trained with cross-entropy on the sampled rows (eq. 7-8).
3. **Fusion.** The predicted label probabilities go through an MLP (the label embedding) to a
   per-row conditioning layer that modulates the features, added to them (eq. 9):
   ``f' = f + gamma(e) * f + beta(e)``. It starts as the identity and trains with the head, so the
   head learns from features made more alike within a partition and less alike across them.

The discriminability score (``--score``) then filters points as SS-DVR does. Relocalization runs
classifier and fusion on every feature (:meth:`transform`) and can report each point's partition
(``semantic * structural + structural label``).

Shapes: features (N, C) -> classifier logits (N, semantic + structural) -> fused (N, C).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ScrError
from ..heads.hscnet import FiLM
from ..labels import kmeans, minibatch_kmeans, nearest, propagate_labels
from ..progress import Progress
from ..settings import Setting
from .base import FitContext, MapPart, register_map_part


class PartitionModule(nn.Module):
    """The label classifier (frozen once fitted) and the fusion that trains with the head."""

    def __init__(
        self, in_channels: int, semantic: int = 2, structural: int = 64, width: int = 256, layers: int = 6
    ) -> None:
        super().__init__()
        for name, value, hi in (
            ("in_channels", in_channels, 8192),
            ("semantic", semantic, 256),
            ("structural", structural, 4096),
            ("width", width, 8192),
            ("layers", layers, 32),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= hi:
                raise ValueError(f"partitions: {name} must be an integer in [1, {hi}], got {value!r}")
        if layers < 2:
            raise ValueError(f"partitions: the classifier needs at least 2 layers, got {layers}")
        self.config = {
            "in_channels": in_channels,
            "semantic": semantic,
            "structural": structural,
            "width": width,
            "layers": layers,
        }
        self.semantic, self.structural = semantic, structural
        sizes = [in_channels] + [width] * (layers - 1) + [semantic + structural]
        self.classifier = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.fusion = FiLM(semantic + structural, in_channels)

    def logits(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, C) -> semantic logits (N, semantic), structural logits (N, structural)."""
        x = features
        for layer in self.classifier[:-1]:
            x = F.relu(layer(x))
        out = self.classifier[-1](x).float()
        return out[:, : self.semantic], out[:, self.semantic :]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            sem, struct = self.logits(features)
            probabilities = torch.cat([sem.softmax(dim=1), struct.softmax(dim=1)], dim=1)
        return self.fusion(features, probabilities)

    def partition(self, features: torch.Tensor) -> torch.Tensor:
        sem, struct = self.logits(features)
        return sem.argmax(dim=1) * self.structural + struct.argmax(dim=1)


@register_map_part("partitions")
class PartitionPart(MapPart):
    """SS-DVR's partitions: label classifier and partition-aware fusion (module docstring),
    switched on by ``scr map --part partitions[=JSON settings]``."""

    stage = "buffer"
    trains_with_head = True
    uses_scene_points = True
    labels_name = "partition"
    progress_stages = (("partitions", 0.04),)
    settings = (
        Setting("semantic", 2, "semantic classes: mini-batch k-means of the features (SS-DVR eq. 3-4)", 1, 256),
        Setting("structural", 64, "structural clusters: k-means of the rows' scene points (eq. 5)", 1, 4096),
        Setting("classifier_layers", 6, "layers of the label classifier", 2, 32),
        Setting("classifier_width", 256, "hidden width of the label classifier", 1, 8192),
        Setting("classifier_epochs", 2.0, "label-classifier training epochs over the sampled rows", 0.001, 1000.0),
        Setting("classifier_samples", 400_000, "buffer rows the label classifier trains on at most", 1, 1_000_000_000),
        Setting(
            "label_epochs",
            0.0,
            "RGB-only mapping: epochs of the first ACE-style stage that gives the scene points (0: the mapping "
            "run's epochs)",
            0.0,
            1000.0,
        ),
        Setting(
            "label_max_error_px",
            10.0,
            "RGB-only mapping: a first-stage point labels its row when it reprojects within this many pixels",
            0.001,
            1000.0,
        ),
        Setting("propagation", 5, "z of HSCNet++'s (2z+1)^2 label propagation window, in feature cells", 0, 64),
    )

    @classmethod
    def fit(cls, context: FitContext, settings: dict, frames=None, head=None, buffer=None) -> "PartitionPart":
        s = settings
        seed, dev = context.seed, context.device
        t0 = time.perf_counter()
        n = buffer.size
        features = buffer.features[:n]
        module = PartitionModule(
            features.shape[1], s["semantic"], s["structural"], s["classifier_width"], s["classifier_layers"]
        ).to(dev)
        # Semantic labels: mini-batch k-means of the features.
        semantic_centres = minibatch_kmeans(features, s["semantic"], seed=seed)
        semantic = nearest(features, semantic_centres)
        # Structural labels: k-means of the rows' scene points, spread to nearby rows.
        points, known, source = context.scene_points(
            buffer, epochs=s["label_epochs"] or None, max_error_px=s["label_max_error_px"]
        )
        if int(known.sum()) < s["structural"]:
            raise ScrError(
                f"only {int(known.sum())} training rows have a scene point ({source}); {s['structural']} structural "
                "partitions need more"
            )
        sample = points[known].cpu().numpy()
        sample = sample[np.random.default_rng(seed).permutation(len(sample))[:200_000]]
        centres = torch.from_numpy(kmeans(sample, s["structural"], seed)).to(dev)
        structural = nearest(points, centres)
        src = torch.from_numpy(
            propagate_labels(
                buffer.pixels[:n].cpu().numpy(),
                buffer.frame_index[:n].cpu().numpy(),
                known.cpu().numpy(),
                s["propagation"] * context.feature_cell_px,
            )
        ).to(dev)
        labelled = src >= 0
        structural = structural[src.clamp(min=0)]
        accuracy = cls._train_classifier(context, module, features, semantic, structural, labelled, s)
        for p in module.classifier.parameters():
            p.requires_grad_(False)
        info = {
            "label_source": source,
            "labelled_rows": round(float(known.float().mean()), 4),
            "propagated_rows": round(float((labelled & ~known).float().mean()), 4),
            "semantic_sizes": torch.bincount(semantic, minlength=s["semantic"]).tolist(),
            "classifier_accuracy": accuracy,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        return cls(module, info)

    @staticmethod
    def _train_classifier(context: FitContext, module, features, semantic, structural, labelled, s) -> dict:
        gen = torch.Generator().manual_seed(context.seed)
        rows = torch.randperm(len(features), generator=gen)[: s["classifier_samples"]].to(features.device)
        batch = min(4096, len(rows))
        iterations = max(1, int(math.ceil(s["classifier_epochs"] * len(rows) / batch)))
        opt = torch.optim.AdamW(module.classifier.parameters(), lr=1e-3, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=iterations)
        t0 = time.perf_counter()
        for it in range(iterations):
            if it % 16 == 0:
                context.check_cancel()
            idx = rows[torch.randint(len(rows), (batch,), generator=gen).to(rows.device)]
            with context.autocast():
                sem, struct = module.logits(features[idx].float())
            keep = labelled[idx].float()
            loss = F.cross_entropy(sem, semantic[idx]) + (
                F.cross_entropy(struct, structural[idx], reduction="none") * keep
            ).sum() / keep.sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if it % 20 == 0 or it == iterations - 1:
                context.report(
                    Progress("partitions", it + 1, iterations, time.perf_counter() - t0, loss=float(loss.detach()))
                )
        with torch.no_grad(), context.autocast():
            check = rows[: min(len(rows), 65536)]
            sem, struct = module.logits(features[check].float())
            ok = labelled[check]
            return {
                "semantic": round(float((sem.argmax(1) == semantic[check]).float().mean()), 4),
                "structural": round(float((struct.argmax(1) == structural[check])[ok].float().mean()), 4)
                if ok.any()
                else None,
            }

    def training_figures(self) -> dict:
        return {"partitions": self.info}

    def header(self) -> dict:
        return {"config": self.module.config, **self.info}

    @classmethod
    def from_header(cls, entry: dict, in_channels: int) -> "PartitionPart":
        config = entry.get("config")
        if not isinstance(config, dict):
            raise ValueError("partitions entry has no config")
        try:
            module = PartitionModule(**config)
        except TypeError as exc:
            raise ValueError(f"partitions entry: {exc}") from None
        if module.config["in_channels"] != in_channels:
            raise ValueError(
                f"partitions read {module.config['in_channels']} channels, the features have {in_channels}"
            )
        for p in module.classifier.parameters():
            p.requires_grad_(False)
        return cls(module, {k: v for k, v in entry.items() if k != "config"})

    def transform(self, features: torch.Tensor) -> torch.Tensor:
        return self.module(features)

    def point_labels(self, features: torch.Tensor) -> torch.Tensor:
        return self.module.partition(features)

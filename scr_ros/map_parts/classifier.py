"""Matching Rates' keypoint classifier, fitted after the head on the training buffer."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..classifier import ClassifierConfig, KeypointClassifier, inlier_labels, train_classifier
from ..progress import Progress
from .base import MapPart, register_map_part


@register_map_part("classifier")
class ClassifierPart(MapPart):
    """Matching Rates' keypoint classifier: after the head, a small MLP learns from the training
    buffer which features the head gets right (reprojection within ``inlier_px`` under the
    frame's pose); optionally the head is then fine-tuned on the rows it accepts. It provides
    ``probability`` to the ``classifier`` selector."""

    stage = "trained"
    provides = "probability"
    switch = "--classifier"

    @classmethod
    def wanted(cls, config) -> bool:
        return bool(config.classifier)

    @classmethod
    def check(cls, config, encoder_channels: int) -> None:
        ClassifierConfig.from_dict(config.classifier_config)

    @classmethod
    def fit(cls, builder, frames=None, head=None, buffer=None) -> "ClassifierPart":
        cc = ClassifierConfig.from_dict(builder.config.classifier_config)
        amp = builder.autocast_context
        t0 = time.perf_counter()
        head.eval()
        n = buffer.size
        rows = buffer.frame_index[:n]
        labels = inlier_labels(head, buffer.features[:n], buffer.pixels[:n], buffer.T_cam_world[rows], buffer.intrinsics[rows], cc.inlier_px, autocast_ctx=amp)
        t_label = time.perf_counter()
        clf, stats = train_classifier(
            buffer.features[:n], labels, cc, seed=builder.config.seed, autocast_ctx=amp,
            progress=lambda i, total, loss, el: builder.progress(Progress("classifier", i, total, el, loss=loss)), check_cancel=builder.check_cancel,
        )
        stats["label_seconds"] = round(t_label - t0, 3)
        if cc.finetune_epochs > 0:
            with torch.no_grad():
                prob = torch.cat([clf.probability(buffer.features[s : s + 65536].float()) for s in range(0, n, 65536)])
            accepted = torch.nonzero(prob >= cc.finetune_min_probability).squeeze(1)
            stats["finetune_rows"] = int(len(accepted))
            if len(accepted):
                iterations, loss = builder.train(
                    head, buffer, rows=accepted, epochs=cc.finetune_epochs, lr=(cc.finetune_lr_min, cc.finetune_lr_max), stage="finetune", final_threshold=True
                )
                stats.update(finetune_iterations=iterations, finetune_final_loss=round(loss, 5))
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        stats["inlier_px"] = cc.inlier_px
        return cls(clf, stats)

    def training_figures(self) -> dict:
        return {"classifier_seconds": self.info["seconds"]}

    def header(self) -> dict:
        return {"config": self.module.config, **self.info}

    @classmethod
    def from_header(cls, entry: dict, in_channels: int) -> "ClassifierPart":
        module = KeypointClassifier(**entry["config"])
        if module.config["in_channels"] != in_channels:
            raise ValueError(f"keypoint classifier reads {module.config['in_channels']} channels, the head input has {in_channels}")
        return cls(module, {k: v for k, v in entry.items() if k != "config"})

    def signal(self, features: torch.Tensor) -> np.ndarray:
        return self.module.probability(features).float().cpu().numpy()

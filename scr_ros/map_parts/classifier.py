"""Matching Rates' keypoint classifier, fitted after the head on the training buffer."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..progress import Progress
from ..settings import Setting
from ._keypoint_classifier import KeypointClassifier, inlier_labels, train_classifier
from .base import FitContext, MapPart, register_map_part

# What train_classifier takes from the settings.
TRAINING = ("width", "epochs", "batch_size", "lr_min", "lr_max", "weight_decay", "max_samples")


@register_map_part("classifier")
class KeypointClassifierPart(MapPart):
    """Matching Rates' keypoint classifier: after the head, a small MLP learns from the training
    buffer which features the head gets right (reprojection within ``inlier_px`` under the
    frame's pose); optionally the head is then fine-tuned on the rows it accepts. It provides
    ``probability`` to the ``classifier`` selector. ``scr map --classifier`` (``--finetune
    EPOCHS``) and the mapping node's ``classifier`` switch it on."""

    stage = "trained"
    provides = "probability"
    progress_stages = (("classifier", 0.02), ("finetune", 0.02))
    settings = (
        Setting("width", 256, "hidden width of the classifier's four layers", 1, 8192),
        Setting("epochs", 4.0, "training epochs over the sampled buffer rows", 0.01, 1000.0),
        Setting("batch_size", 5120, "rows per training step", 1, 10_000_000),
        Setting(
            "lr_min",
            1e-4,
            "initial (and final) learning rate of the one-cycle schedule (the paper's initial rate)",
            1e-8,
            1.0,
        ),
        Setting("lr_max", 4e-3, "peak learning rate: large, it is a four-layer MLP on a shuffled buffer", 1e-8, 1.0),
        Setting("weight_decay", 0.01, "AdamW weight decay", 0.0, 10.0),
        Setting(
            "inlier_px",
            10.0,
            "a row is a positive when the head's coordinate reprojects within this many pixels (the RANSAC threshold)",
            0.1,
            1000.0,
        ),
        Setting(
            "max_samples",
            8_000_000,
            "buffer rows the classifier trains on at most (the paper's buffer size)",
            2,
            1_000_000_000,
        ),
        Setting(
            "finetune_epochs",
            0.0,
            "fine-tune the head this many epochs on the rows the classifier accepts (0: no fine-tuning)",
            0.0,
            100.0,
        ),
        Setting(
            "finetune_min_probability", 0.5, "fine-tuning uses the rows with at least this inlier probability", 0.0, 1.0
        ),
        Setting("finetune_lr_min", 5e-5, "fine-tuning's initial learning rate", 1e-9, 1.0),
        Setting("finetune_lr_max", 6e-4, "fine-tuning's peak learning rate", 1e-9, 1.0),
    )

    @classmethod
    def fit(cls, context: FitContext, settings: dict, frames=None, head=None, buffer=None) -> "KeypointClassifierPart":
        s = settings
        t0 = time.perf_counter()
        head.eval()
        n = buffer.size
        T_cam_world, intrinsics = buffer.row_cameras()
        labels = inlier_labels(
            head,
            buffer.features[:n],
            buffer.pixels[:n],
            T_cam_world,
            intrinsics,
            s["inlier_px"],
            autocast_ctx=context.autocast,
        )
        t_label = time.perf_counter()

        def progress(i: int, total: int, loss: float, elapsed: float) -> None:
            context.report(Progress("classifier", i, total, elapsed, loss=loss))

        clf, stats = train_classifier(
            buffer.features[:n],
            labels,
            **{k: s[k] for k in TRAINING},
            seed=context.seed,
            autocast_ctx=context.autocast,
            progress=progress,
            check_cancel=context.check_cancel,
        )
        stats["label_seconds"] = round(t_label - t0, 3)
        if s["finetune_epochs"] > 0:
            with torch.no_grad():
                prob = torch.cat([clf.probability(buffer.features[i : i + 65536].float()) for i in range(0, n, 65536)])
            accepted = torch.nonzero(prob >= s["finetune_min_probability"]).squeeze(1)
            stats["finetune_rows"] = int(len(accepted))
            if len(accepted):
                lr = (s["finetune_lr_min"], s["finetune_lr_max"])
                iterations, loss = context.fine_tune(head, buffer, accepted, s["finetune_epochs"], lr, "finetune")
                stats.update(finetune_iterations=iterations, finetune_final_loss=round(loss, 5))
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        stats["inlier_px"] = s["inlier_px"]
        return cls(clf, stats)

    def training_figures(self) -> dict:
        return {"classifier_seconds": self.info["seconds"]}

    def header(self) -> dict:
        return {"config": self.module.config, **self.info}

    @classmethod
    def from_header(cls, entry: dict, in_channels: int) -> "KeypointClassifierPart":
        module = KeypointClassifier(**entry["config"])
        if module.config["in_channels"] != in_channels:
            raise ValueError(
                f"keypoint classifier reads {module.config['in_channels']} channels, the head input has {in_channels}"
            )
        return cls(module, {k: v for k, v in entry.items() if k != "config"})

    def signal(self, features: torch.Tensor) -> np.ndarray:
        return self.module.probability(features).float().cpu().numpy()

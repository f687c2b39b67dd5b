"""HSCNet++'s losses for a head that classifies regions before it regresses (section 5).

* :func:`symmetric_cross_entropy` — cross-entropy plus reverse cross-entropy (Wang et al.),
  robust to the noise of propagated labels;
* :func:`angle_reprojection_error` — the angle-based reprojection error (eq. 6), which needs no
  label, only the frame's pose;
* :class:`HscnetLoss` (``hscnet``) — ``classification + lambda_2 * regression + lambda_3 *
  reprojection`` on the rows that have a label after propagation, the reprojection term switched
  on after the first part of training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..geometry import world_to_camera
from .base import register_loss


def symmetric_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ce_weight: float = 0.1, rce_weight: float = 1.0, log_zero: float = -4.0
) -> torch.Tensor:
    """Per-row ``ce_weight * CE + rce_weight * RCE`` (N,) for logits (N, K) and labels (N,).

    ``CE = -log p_y`` and the reverse ``RCE = -sum_k p_k log q_k`` with ``q`` the one-hot label
    and ``log 0`` set to ``log_zero`` (HSCNet++ eq. 4-5, Wang et al.'s A = -4), which for a
    one-hot label is ``-log_zero * (1 - p_y)``: bounded, so a wrong label cannot dominate."""
    logp = F.log_softmax(logits.float(), dim=1)
    ce = -logp.gather(1, labels[:, None]).squeeze(1)
    rce = -log_zero * (1.0 - ce.neg().exp())
    return ce_weight * ce + rce_weight * rce


def angle_reprojection_error(
    coords: torch.Tensor, pixels: torch.Tensor, T_cam_world: torch.Tensor, intrinsics: torch.Tensor
) -> torch.Tensor:
    """HSCNet++ eq. 6 (after Li et al. 2018): ``|| gamma * F^-1 y - f C^-1 p ||`` per row (N,).

    ``f C^-1 p`` is the pixel's ray scaled to length-of-focal-length units, ``F^-1 y`` the
    predicted point in the camera frame, and ``gamma`` rescales the point onto the ray's length:
    the error is the chord between the two directions (about ``f`` times the angle, i.e. pixels
    near the image centre), defined for points behind the camera too."""
    cam = world_to_camera(coords.float(), T_cam_world)
    fx, fy, cx, cy = intrinsics.unbind(1)
    f = 0.5 * (fx + fy)
    ray = torch.stack([f * (pixels[:, 0] - cx) / fx, f * (pixels[:, 1] - cy) / fy, f], dim=1)
    gamma = ray.norm(dim=1) / cam.norm(dim=1).clamp(min=1e-6)
    return (gamma[:, None] * cam - ray).norm(dim=1)


@register_loss("hscnet")
@dataclass
class HscnetLoss:
    """HSCNet++(S)'s loss: ``l_sce + lambda_2 l_r + lambda_3 l_rep`` on rows with a label.

    Classification: symmetric cross-entropy on region and sub-region logits (``symmetric=False``:
    plain cross-entropy, the dense setting). Regression: the Euclidean distance (metres) to the
    row's label point — the paper's squared error needs weights up to 1e5 to matter near
    convergence; the distance keeps a unit gradient there. Reprojection: the angle-based error,
    weight ``reprojection_weight`` from ``reprojection_start`` (fraction of training; the paper
    starts it after 10 epochs). With a score head, the geometric terms are weighted by SS-DVR's
    ``s`` as in the ACE loss. Rows without a label contribute nothing; the sum is divided by the
    batch size.
    """

    total_iterations: int
    classification_weight: float = 1.0
    regression_weight: float = 10.0
    reprojection_weight: float = 0.1
    reprojection_start: float = 0.25
    symmetric: bool = True
    ce_weight: float = 0.1
    rce_weight: float = 1.0
    log_zero: float = -4.0
    score_alpha: float = 20.0
    uses_depth = False

    def __post_init__(self) -> None:
        for name in (
            "classification_weight",
            "regression_weight",
            "reprojection_weight",
            "ce_weight",
            "rce_weight",
            "score_alpha",
        ):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.reprojection_start <= 1:
            raise ValueError(f"reprojection_start is a fraction of training in [0, 1], got {self.reprojection_start!r}")
        if self.log_zero >= 0:
            raise ValueError(f"log_zero stands for log 0 and must be negative, got {self.log_zero!r}")

    def classification(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            return symmetric_cross_entropy(logits, labels, self.ce_weight, self.rce_weight, self.log_zero)
        return F.cross_entropy(logits.float(), labels, reduction="none")

    def __call__(
        self, coords, pixels, T_cam_world, intrinsics, iteration: int, depth=None, score=None, logits=None, targets=None
    ) -> tuple[torch.Tensor, dict]:
        if logits is None or targets is None:
            raise ValueError("the hscnet loss needs the head's logits and the rows' label targets")
        valid = targets["valid"].float()
        cls = sum(self.classification(logits[name], targets[name]) for name in ("region", "subregion"))
        geometric = self.regression_weight * (coords.float() - targets["xyz"]).norm(dim=1)
        reprojecting = iteration >= self.reprojection_start * self.total_iterations and self.reprojection_weight > 0
        if reprojecting:
            geometric = geometric + self.reprojection_weight * angle_reprojection_error(
                coords, pixels, T_cam_world, intrinsics
            )
        stats = {"labelled_fraction": float(valid.mean()), "reprojection": reprojecting}
        if score is not None:
            s_hat = score.float().clamp(-30.0, 30.0)
            geometric = (1.0 + torch.exp(s_hat)) * geometric - self.score_alpha * F.softplus(s_hat)
        per_sample = valid * (self.classification_weight * cls + geometric)
        return per_sample.mean(), stats

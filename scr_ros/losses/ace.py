"""ACE's reprojection loss, and the same anchored by measured depth (SS-DVR, R-SCoRe "+ Depth")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..geometry import pixel_rays, project_camera_points, world_to_camera
from .base import register_loss


@register_loss("ace")
@dataclass
class AceReprojectionLoss:
    """ACE's reprojection loss with a shrinking, tanh-clamped inlier threshold.

    Valid predictions contribute ``tau * tanh(e / tau)`` where ``e`` is the L1 reprojection error
    in pixels and ``tau = (1 - w) * soft_clamp + soft_clamp_min`` shrinks from 51 px to 1 px with
    ``w = 1 - sqrt(1 - progress^2)``, a quarter circle: the threshold stays wide for most of
    training, while coordinates settle, and tightens quickly at the end. A prediction is invalid when it lies closer
    than ``depth_min`` or farther than ``depth_max`` from the camera, or reprojects more than
    ``hard_clamp`` pixels away; invalid predictions are pulled (L1, in metres) to the point at
    ``depth_target`` on the pixel's ray, which gives them a gradient towards the front of the
    camera. The sum is divided by the batch size.
    """

    total_iterations: int
    soft_clamp: float = 50.0
    soft_clamp_min: float = 1.0
    depth_min: float = 0.1
    depth_max: float = 1000.0
    hard_clamp: float = 1000.0
    depth_target: float = 10.0
    score_alpha: float = 20.0  # SS-DVR's alpha; used only with a score head

    def threshold(self, iteration: int) -> float:
        """The soft clamp ``tau`` (pixels) at ``iteration``."""
        progress = min(max(iteration / max(self.total_iterations, 1), 0.0), 1.0)
        progress = 1.0 - math.sqrt(1.0 - progress**2)
        return (1.0 - progress) * self.soft_clamp + self.soft_clamp_min

    uses_depth = False

    def __call__(
        self, coords, pixels, T_cam_world, intrinsics, iteration: int, depth=None, score=None
    ) -> tuple[torch.Tensor, dict]:
        cam = world_to_camera(coords.float(), T_cam_world)
        z = cam[:, 2]
        proj = project_camera_points(cam, intrinsics, min_depth=self.depth_min)
        err = (proj - pixels).abs().sum(dim=1)
        invalid = (z < self.depth_min) | (z > self.depth_max) | (err > self.hard_clamp)
        valid = ~invalid
        tau = self.threshold(iteration)
        ray = pixel_rays(pixels, intrinsics)
        per_sample = torch.where(
            valid, tau * torch.tanh(err / tau), (cam - self._invalid_target(ray, depth)).abs().sum(dim=1)
        )
        extra = self._extra(cam, ray, depth)
        if extra is not None:
            per_sample = per_sample + extra
        stats = {"valid_fraction": float(valid.float().mean()), "threshold_px": tau}
        if score is not None:
            # s = 1 + exp(s_hat) >= 1, so ln(1/s) = -softplus(s_hat) without overflow.
            s_hat = score.float().clamp(-30.0, 30.0)
            per_sample = (1.0 + torch.exp(s_hat)) * per_sample - self.score_alpha * torch.nn.functional.softplus(s_hat)
            stats["mean_score"] = float(s_hat.detach().mean())
        return per_sample.mean(), stats

    def _invalid_target(self, ray: torch.Tensor, depth) -> torch.Tensor:
        return self.depth_target * ray

    def _extra(self, cam: torch.Tensor, ray: torch.Tensor, depth) -> torch.Tensor | None:
        """An additional per-sample loss (N,), or None."""
        return None


@register_loss("ace-depth")
@dataclass
class AceDepthLoss(AceReprojectionLoss):
    """ACE's loss anchored by measured depth where the mapping frames have it.

    Adds ``depth_weight`` times the Euclidean distance (metres) between the prediction and the
    back-projected depth point (SS-DVR eq. 16-17, beta = 0.1; R-SCoRe "+ Depth"), and pulls
    invalid predictions to that point instead of ``depth_target`` (depth initializes the
    targets). Near convergence the reprojection term, worth ~f/z pixels per metre, dominates;
    the depth term matters while a prediction is still outside the tanh clamp, which is when
    RGB-only training must otherwise triangulate from weakly view-invariant features. Samples
    without depth are trained as in ACE.
    """

    depth_weight: float = 0.1
    uses_depth = True

    def _invalid_target(self, ray, depth):
        target = self.depth_target * ray
        if depth is None:
            return target
        known = torch.isfinite(depth) & (depth > 0)
        return torch.where(known[:, None], torch.nan_to_num(depth)[:, None] * ray, target)

    def _extra(self, cam, ray, depth):
        if depth is None:
            return None
        known = torch.isfinite(depth) & (depth > 0)
        if not known.any():
            return None
        dist = (cam - torch.nan_to_num(depth)[:, None] * ray).norm(dim=1)
        return self.depth_weight * torch.where(known, dist, torch.zeros_like(dist))

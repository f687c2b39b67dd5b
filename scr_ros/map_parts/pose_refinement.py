"""Refining the mapping poses while the head trains (after ACE0, Brachmann et al., ECCV 2024).

Poses a robot records come from odometry, which drifts: views of one place disagree, and the
map inherits it. This part learns a correction of every mapping pose jointly with the head, from
the same loss (reprojection, and depth where the loss uses it), so the poses end up where the
images agree:

- ``mlp``: a small MLP shared by all frames maps each recorded camera-to-world pose (its 3x4,
  positions centred and scaled to the scene) to an additive correction of those 12 numbers,
  scaled by 0.1; the rotation is made orthonormal again (Gram-Schmidt on its first two
  columns, whose gradient is well behaved where an SVD's is not). Nearby poses get related
  corrections, which suits drift, a smooth function of the path.
- ``free``: a rotation (axis-angle, in the camera frame) and a translation per frame.

With ``odometry_weight`` above 0 a prior joins the loss: each step between consecutive mapping
frames should keep its recorded motion, within VIO-like noise (2 % of the step, 0.5°/m), so the
corrections can bend a drifting path as a whole but not tear single frames off it.

Both start as the identity and switch on after ``start`` of the training (the head first
learns a coarse scene from the recorded poses). ``focal`` refines one scale of the focal
lengths as well. The gauge is held by the first frame: every refined pose is moved by the one
rigid transform that puts the first frame back on its recorded pose, so the map frame stays
the odometry frame of the recording. With ``fixed_frames`` N the first N frames keep their
poses and hold the gauge (a grown map, :mod:`scr_ros.growth`: the frames given with poses stay,
the registered ones move).

After training, the refined poses replace the recorded ones for everything that follows (the
keypoint classifier, the map cloud) and are stored with the map (``pose-refinement.refined``,
and the recorded ones, float64); ``scr map --refined-poses OUT.txt`` writes them as a TUM
trajectory. The part does nothing at relocalization.

Shapes: frame indices (B,), T_cam_world (B, 3, 4), intrinsics (B, 4) fx fy cx cy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from kornia.geometry.conversions import axis_angle_to_rotation_matrix

from ..settings import Setting
from .base import FitContext, MapPart, register_map_part

CORRECTION_SCALE = 0.1  # the MLP's output is scaled down (ACE0), so it starts small and moves gently
# The odometry prior's noise per step between consecutive mapping frames: translation as a share
# of the step, rotation in degrees per metre of it (at least per 0.1 m), VIO-like (issue 27).
STEP_TRANSLATION_NOISE = 0.02
STEP_ROTATION_NOISE_DEG_PER_M = 0.5


def orthonormal(M: torch.Tensor) -> torch.Tensor:
    """The rotation (B, 3, 3) nearest in spirit to M (B, 3, 3): Gram-Schmidt on its first two
    columns, the third their cross product."""
    a = F.normalize(M[:, :, 0], dim=1)
    b = F.normalize(M[:, :, 1] - (a * M[:, :, 1]).sum(dim=1, keepdim=True) * a, dim=1)
    return torch.stack([a, b, torch.linalg.cross(a, b, dim=1)], dim=2)


def invert(T: torch.Tensor) -> torch.Tensor:
    """Rigid transforms (B, 4, 4) inverted."""
    R, t = T[:, :3, :3], T[:, :3, 3:]
    out = torch.zeros_like(T)
    out[:, :3, :3] = R.transpose(1, 2)
    out[:, :3, 3:] = -R.transpose(1, 2) @ t
    out[:, 3, 3] = 1.0
    return out


class PoseRefiner(nn.Module):
    """The correction of the recorded poses that trains with the head (see the module docstring)."""

    def __init__(
        self,
        recorded: np.ndarray,
        mode: str,
        width: int,
        layers: int,
        focal: bool,
        start: float,
        odometry_weight: float = 0.0,
        fixed_frames: int = 0,
    ) -> None:
        super().__init__()
        self.odometry_weight = odometry_weight
        # The first fixed_frames keep their recorded poses (a grown map's frames with known
        # poses) and hold the gauge themselves; otherwise the first frame holds it.
        self.fixed_frames = min(int(fixed_frames), len(recorded))
        movable = (torch.arange(len(recorded)) >= self.fixed_frames).float()
        self.register_buffer("movable", movable.unsqueeze(1), persistent=False)
        recorded = torch.as_tensor(np.asarray(recorded), dtype=torch.float64)
        self.register_buffer("recorded", recorded.clone())
        positions = recorded[:, :3, 3]
        self.register_buffer("centre", positions.mean(dim=0).float())
        # The scene's scale: corrections are in these units, so one setting fits rooms and streets.
        self.register_buffer("extent", (positions - positions.mean(dim=0)).norm(dim=1).max().clamp(min=0.1).float())
        self.mode, self.start = mode, start
        if mode == "mlp":
            sizes = [12] + [width] * layers + [12]
            self.mlp = nn.Sequential(
                *[m for a, b in zip(sizes[:-1], sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())][:-1]
            )
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        else:
            self.delta = nn.Parameter(torch.zeros(len(recorded), 6))
        self.log_focal = nn.Parameter(torch.zeros(())) if focal else None
        # Consecutive recorded motions (F-1, 4, 4), inverted once here for the odometry prior's
        # every step, and their noise.
        steps = torch.linalg.inv(recorded[:-1]) @ recorded[1:]
        length = steps[:, :3, 3].norm(dim=1).clamp(min=0.1).float()
        self.register_buffer("steps_inverse", torch.linalg.inv(steps).float())
        self.register_buffer("step_sigma_t", STEP_TRANSLATION_NOISE * length)
        self.register_buffer("step_sigma_r", np.radians(STEP_ROTATION_NOISE_DEG_PER_M) * length)
        self.register_buffer("every_frame", torch.arange(len(recorded)), persistent=False)

    def poses(self, frame_index: torch.Tensor, gate: float = 1.0) -> torch.Tensor:
        """Refined camera-to-world poses (B, 4, 4) float32 of the frames, the first frame's
        gauge applied; ``gate`` 0 gives the recorded poses (with the graph kept, so every
        parameter takes part in each step)."""
        index = torch.cat([frame_index.reshape(-1), torch.zeros(1, dtype=torch.long, device=frame_index.device)])
        T0 = self.recorded[index].float()
        R0, t0 = T0[:, :3, :3], T0[:, :3, 3]
        if self.mode == "mlp":
            x = torch.cat([R0.reshape(-1, 9), (t0 - self.centre) / self.extent], dim=1)
            d = CORRECTION_SCALE * gate * self.mlp(x) * self.movable[index]
            R = orthonormal(R0 + d[:, :9].reshape(-1, 3, 3))
            t = t0 + d[:, 9:] * self.extent
        else:
            d = gate * self.delta[index] * self.movable[index]
            R = R0 @ axis_angle_to_rotation_matrix(d[:, :3])
            t = t0 + d[:, 3:] * self.extent
        T = torch.zeros_like(T0)
        T[:, :3, :3], T[:, :3, 3], T[:, 3, 3] = R, t, 1.0
        if self.fixed_frames:
            return T[:-1]
        # Gauge: the rigid transform that returns the first frame to its recorded pose.
        G = T0[-1:] @ invert(T[-1:])
        return G @ T[:-1]

    def prior_applies(self, fraction: float) -> bool:
        return self.odometry_weight > 0 and fraction >= self.start and len(self.recorded) >= 2

    def prior(self, fraction: float) -> torch.Tensor:
        """``odometry_weight`` times the mean squared disagreement, in noise units, of each
        consecutive pair's refined motion with its recorded one: drift is a slow sum of small
        errors, so the corrections may bend the path but not tear the steps apart."""
        if not self.prior_applies(fraction):
            return torch.zeros((), device=self.recorded.device)
        with torch.autocast(device_type=self.recorded.device.type, enabled=False):
            return self._odometry_prior(self.poses(self.every_frame))

    def _odometry_prior(self, T: torch.Tensor) -> torch.Tensor:
        """:meth:`prior` of every frame's refined pose T (F, 4, 4)."""
        E = self.steps_inverse @ (invert(T[:-1]) @ T[1:])
        # Squared residuals in noise units, never through a square root (smooth at zero);
        # ||R - I||_F^2 = 8 sin^2(angle / 2), about 2 angle^2.
        r_t2 = (E[:, :3, 3] ** 2).sum(dim=1) / self.step_sigma_t**2
        r_r2 = ((E[:, :3, :3] - torch.eye(3, device=E.device)) ** 2).sum(dim=(1, 2)) / 2 / self.step_sigma_r**2
        return self.odometry_weight * (r_t2 + r_r2).mean()

    def focal_scale(self, gate: float = 1.0) -> torch.Tensor:
        return (
            torch.exp(gate * self.log_focal)
            if self.log_focal is not None
            else torch.ones((), device=self.recorded.device)
        )

    def forward(self, frame_index: torch.Tensor, T_cam_world: torch.Tensor, intrinsics: torch.Tensor, fraction: float):
        """A training batch's cameras, refined once ``fraction`` of the training passed ``start``,
        and the odometry prior (zero where it does not apply): (T_cam_world (B, 3, 4),
        intrinsics (B, 4), prior ()). Each frame's pose is computed once per batch, however many
        of its rows the batch holds; with the prior, every frame's once, for both (a batch of
        thousands of rows touches nearly every frame, and one pass instead of two took a
        millisecond off each of the demo's 14,000 training steps)."""
        gate = 1.0 if fraction >= self.start else 0.0
        with torch.autocast(device_type=intrinsics.device.type, enabled=False):
            if self.prior_applies(fraction):
                T_world_cam = self.poses(self.every_frame, gate)
                T = invert(T_world_cam)[frame_index, :3, :]
                prior = self._odometry_prior(T_world_cam)
            else:
                frames, rows = torch.unique(frame_index, return_inverse=True)
                T = invert(self.poses(frames, gate))[rows, :3, :]
                prior = torch.zeros((), device=intrinsics.device)
            scale = self.focal_scale(gate)
            K = torch.cat([intrinsics[:, :2] * scale, intrinsics[:, 2:]], dim=1)
        return T, K, prior


class RefinedPoses(nn.Module):
    """What the map stores: the recorded and the refined camera-to-world poses (F, 4, 4) float64
    and the focal scale."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.register_buffer("recorded", torch.zeros(frames, 4, 4, dtype=torch.float64))
        self.register_buffer("refined", torch.zeros(frames, 4, 4, dtype=torch.float64))
        self.register_buffer("focal_scale", torch.ones(1, dtype=torch.float64))


@register_map_part("pose-refinement")
class PoseRefinementPart(MapPart):
    """The mapping poses refined with the head (module docstring); ``scr map --refine-poses
    mlp|free`` and the mapping node's ``refine_poses`` switch it on."""

    stage = "buffer"
    adjusts_cameras = True
    full_precision = ("recorded", "refined", "focal_scale")
    settings = (
        Setting(
            "mode",
            "free",
            "free: a correction per frame (the mode the drift benchmark measures); mlp: one MLP maps every recorded "
            "pose to its correction (ACE0's), shared by all frames, so it needs a lower lr",
            choices=("free", "mlp"),
        ),
        Setting(
            "start",
            0.5,
            "fraction of the training after which the poses move (the head first learns from the recorded ones)",
            0.0,
            0.95,
        ),
        Setting(
            "lr",
            3e-5,
            "learning rate of the corrections (AdamW, constant; radians and scene extents per step, about)",
            1e-8,
            1.0,
        ),
        Setting("width", 128, "mlp: hidden width", 8, 4096),
        Setting("layers", 3, "mlp: hidden layers", 1, 8),
        Setting("focal", False, "also refine one scale of the focal lengths"),
        Setting(
            "fixed_frames",
            0,
            "the first N mapping frames keep their recorded poses and hold the gauge (a grown map: the frames "
            "given with poses; scr map --add sets it); 0: every pose moves, the first frame holding the gauge",
            0,
            10_000_000,
        ),
        Setting(
            "odometry_weight",
            0.0,
            "weight of a prior that keeps each step between consecutive mapping frames near its recorded motion "
            "(2 % of the step, 0.5 deg/m of noise); 0: none",
            0.0,
            1000.0,
        ),
    )

    def __init__(self, module: nn.Module, info: dict | None = None) -> None:
        super().__init__(module, info)
        self.training_lr = float(self.info.get("lr", 3e-5))

    @classmethod
    def fit(cls, context: FitContext, settings: dict, frames=None, head=None, buffer=None) -> "PoseRefinementPart":
        recorded = np.stack([f.pose for f in frames])
        s = settings
        # Its own random stream: the head, built after this part, starts from the weights it
        # would have without refinement, so the two maps differ by the refinement alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed + 1)
            module = PoseRefiner(
                recorded,
                s["mode"],
                s["width"],
                s["layers"],
                s["focal"],
                s["start"],
                s["odometry_weight"],
                s["fixed_frames"],
            )
        module = module.to(context.device)
        info = {"mode": s["mode"], "lr": s["lr"], "start": s["start"], "focal": s["focal"]}
        if s["odometry_weight"] > 0:
            info["odometry_weight"] = s["odometry_weight"]
        if s["fixed_frames"]:
            info["fixed_frames"] = s["fixed_frames"]
        return cls(module, info)

    def settle(self) -> tuple[np.ndarray, float]:
        """After training: the refined camera-to-world poses (F, 4, 4) float64 and focal scale;
        the part keeps only them (:class:`RefinedPoses`) from now on."""
        refiner = self.module
        with torch.no_grad():
            frames = torch.arange(len(refiner.recorded), device=refiner.recorded.device)
            refined32 = refiner.poses(frames).double()
            recorded = refiner.recorded.double()
            # The correction, computed in float32, applied to the float64 recorded poses.
            delta = torch.linalg.solve(recorded, refined32)
            refined = recorded @ delta
            refined[:, :3, :3] = orthonormal(refined[:, :3, :3])
            refined[:, 3] = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64, device=refined.device)
            scale = float(refiner.focal_scale())
        stored = RefinedPoses(len(refined))
        stored.recorded.copy_(recorded.cpu())
        stored.refined.copy_(refined.cpu())
        stored.focal_scale.fill_(scale)
        self.module = stored
        moved = (refined[:, :3, 3] - recorded[:, :3, 3]).norm(dim=1).cpu().numpy()
        self.info.update(
            frames=len(refined),
            focal_scale=round(scale, 6),
            median_correction_m=round(float(np.median(moved)), 5),
            max_correction_m=round(float(np.max(moved)), 5),
        )
        return refined.cpu().numpy(), scale

    def training_figures(self) -> dict:
        return {"pose_refinement": self.info}

    def header(self) -> dict:
        return dict(self.info)

    @classmethod
    def from_header(cls, entry: dict, in_channels: int) -> "PoseRefinementPart":
        frames = entry.get("frames")
        if not (isinstance(frames, int) and 1 <= frames <= 10_000_000):
            raise ValueError(f"pose-refinement entry has no valid frame count ({frames!r})")
        return cls(RefinedPoses(frames), entry)

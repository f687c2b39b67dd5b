"""Correcting drifting mapping poses with a pose graph before the head trains (issue 27).

Odometry drift is what frames recorded far apart in time disagree about. This part measures
relative poses between overlapping mapping frames from their images (XFeat keypoints, depth,
PnP-RANSAC) and solves a pose graph of those and the recorded odometry steps
(:mod:`scr_ros.map_parts._pose_graph`). The corrected poses then replace the recorded ones for everything
that follows: the training buffer, any other part (``pose-refinement`` included, which then
refines the graph's poses), the map cloud, the poses stored with the map.

It needs depth (the edges are metric), and overlap between frames recorded apart in time: a
robot that drives its rooms twice, a hand-held camera that looks back. A recording that never
returns to a place keeps its drift, because nothing measures it.

The gauge is the first frame, which keeps its recorded pose: the map frame stays the odometry
frame of the recording. ``scr map --refine-poses graph`` and the mapping node's
``refine_poses: graph`` switch it on. The part does nothing at relocalization.

Shapes: poses (F, 4, 4) float64 camera-to-world, F mapping frames.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn

from ..settings import Setting
from ._pose_graph import GraphSettings, build_pose_graph
from .base import FitContext, MapPart, register_map_part

_DEFAULTS = GraphSettings()


class GraphPoses(nn.Module):
    """What the map stores: the recorded and the corrected camera-to-world poses (F, 4, 4) float64."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.register_buffer("recorded", torch.zeros(frames, 4, 4, dtype=torch.float64))
        self.register_buffer("corrected", torch.zeros(frames, 4, 4, dtype=torch.float64))


@register_map_part("pose-graph")
class PoseGraphPart(MapPart):
    """The mapping poses corrected by a pose graph of odometry steps and measured loop closures
    (module docstring)."""

    stage = "features"
    corrects_poses = True
    full_precision = ("recorded", "corrected")
    progress_stages = (("pose-graph", 0.15),)
    settings = (
        Setting(
            "neighbours",
            _DEFAULTS.neighbours,
            "frames each frame is matched with: its nearest by recorded position and view direction",
            1,
            100,
        ),
        Setting("keypoints", _DEFAULTS.keypoints, "XFeat keypoints per frame", 64, 16384),
        Setting(
            "min_inliers", _DEFAULTS.min_inliers, "PnP inliers an edge between two frames needs to be kept", 6, 10000
        ),
        Setting(
            "max_reprojection_px", _DEFAULTS.max_reprojection_px, "PnP-RANSAC inlier threshold (pixels)", 0.5, 50.0
        ),
        Setting(
            "odometry_translation_noise",
            _DEFAULTS.odometry_translation_noise,
            "noise of a recorded step's translation, as a share of the step's length",
            1e-4,
            10.0,
        ),
        Setting(
            "odometry_rotation_noise_deg_per_m",
            _DEFAULTS.odometry_rotation_noise_deg_per_m,
            "noise of a recorded step's rotation, degrees per metre of the step (at least per 5 cm)",
            1e-3,
            1000.0,
        ),
        Setting(
            "match_translation_noise_m",
            _DEFAULTS.match_translation_noise_m,
            "noise of a relative pose measured from the images (metres)",
            1e-5,
            10.0,
        ),
        Setting(
            "match_rotation_noise_deg",
            _DEFAULTS.match_rotation_noise_deg,
            "noise of a relative pose measured from the images (degrees)",
            1e-4,
            90.0,
        ),
        Setting(
            "min_travel_m",
            _DEFAULTS.min_travel_m,
            "only frames the recording reached this far apart are matched (metres of path, a quarter turn counting as "
            "a metre): nearer, the recorded steps are more exact than a measured edge, and what drifts is the long run",
            0.0,
            1000.0,
        ),
        Setting(
            "reject_sigma",
            _DEFAULTS.reject_sigma,
            "a measured edge further than this many noise units from the solution is dropped as a false match",
            1.0,
            1000.0,
        ),
    )

    @classmethod
    def fit(cls, context: FitContext, settings: dict, frames=None, head=None, buffer=None) -> "PoseGraphPart":
        graph = GraphSettings(**{f.name: settings[f.name] for f in dataclasses.fields(GraphSettings)})
        result = build_pose_graph(frames, graph, context.device, context.report, context.check_cancel)
        module = GraphPoses(len(frames))
        module.recorded.copy_(torch.as_tensor(np.stack([f.pose for f in frames]), dtype=torch.float64))
        module.corrected.copy_(torch.as_tensor(result.poses, dtype=torch.float64))
        return cls(module, result.figures)

    def corrected_poses(self) -> np.ndarray:
        """The corrected camera-to-world poses (F, 4, 4) float64, in mapping-frame order."""
        return self.module.corrected.double().cpu().numpy()

    def training_figures(self) -> dict:
        return {"pose_graph": self.info}

    def header(self) -> dict:
        return dict(self.info)

    @classmethod
    def from_header(cls, entry: dict, in_channels: int) -> "PoseGraphPart":
        frames = entry.get("frames")
        if not (isinstance(frames, int) and not isinstance(frames, bool) and 1 <= frames <= 10_000_000):
            raise ValueError(f"pose-graph entry has no valid frame count ({frames!r})")
        return cls(GraphPoses(frames), entry)

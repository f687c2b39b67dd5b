"""A model of odometry drift, for evaluating mapping from poses a robot would record.

Odometry integrates relative motion, and each step's error stays in everything after it. The
model replays a trajectory's steps with the errors odometry makes:

- ``scale``: every step's translation scaled (a wrong wheel radius, a VIO scale error);
- ``translation_noise``: per-axis Gaussian noise on each step's translation, as a fraction of
  the step's length;
- ``rotation_noise_deg_per_m``: a random rotation per step (uniform axis), its angle Gaussian
  with this many degrees of standard deviation per metre the step moves;
- ``yaw_bias_deg_per_m``: a steady heading drift about the world's up axis, degrees per metre
  travelled (gyro bias, wheel slip in turns); it turns the whole rest of the trajectory.

The first pose is kept (the odometry frame starts at the first frame), and the same model and
seed give the same drifted trajectory. Named levels: ``vio`` (visual-inertial: about 1 % of the
distance plus a slow yaw drift) and ``wheel`` (wheel odometry: about 3 % and 1.5 deg/m of yaw);
``parse_drift`` also takes ``NAME,KEY=VALUE,...`` or ``KEY=VALUE,...`` (e.g. ``vio,seed=3``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from ..datasets.base import Frame
from ..errors import ScrError
from ..geometry import invert_pose, make_pose


@dataclass(frozen=True)
class DriftModel:
    scale: float = 1.0
    translation_noise: float = 0.0
    rotation_noise_deg_per_m: float = 0.0
    yaw_bias_deg_per_m: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("scale", 0.5, 2.0),
            ("translation_noise", 0.0, 1.0),
            ("rotation_noise_deg_per_m", 0.0, 90.0),
            ("yaw_bias_deg_per_m", -90.0, 90.0),
        )
        for name, lo, hi in checks:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi):
                raise ScrError(f"drift model: {name} must be a number in [{lo}, {hi}], got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ScrError(f"drift model: seed must be an integer, got {self.seed!r}")

    def describe(self) -> dict:
        return dataclasses.asdict(self)


DRIFT_LEVELS: dict[str, DriftModel] = {
    # Mild, visual-inertial-like: 1 % scale, 2 % noise per step, 0.5 deg/m noise, 0.3 deg/m yaw.
    "vio": DriftModel(scale=1.01, translation_noise=0.02, rotation_noise_deg_per_m=0.5, yaw_bias_deg_per_m=0.3),
    # Wheel odometry: 3 % of the distance and 1.5 deg/m of heading drift.
    "wheel": DriftModel(scale=1.03, translation_noise=0.03, rotation_noise_deg_per_m=1.0, yaw_bias_deg_per_m=1.5),
}


def parse_drift(spec: str) -> DriftModel:
    """``vio``, ``wheel``, ``LEVEL,KEY=VALUE,...`` or ``KEY=VALUE,...`` -> a DriftModel."""
    fields = {f.name: f.type for f in dataclasses.fields(DriftModel)}
    base, values = DriftModel(), {}
    for k, item in enumerate(p.strip() for p in str(spec).split(",") if p.strip()):
        if "=" not in item:
            if k or item not in DRIFT_LEVELS:
                raise ScrError(f"drift {spec!r}: {item!r} is not a level ({', '.join(DRIFT_LEVELS)}) or KEY=VALUE")
            base = DRIFT_LEVELS[item]
            continue
        key, _, text = item.partition("=")
        key = key.strip()
        if key not in fields:
            raise ScrError(f"drift {spec!r}: unknown setting {key!r} (known: {', '.join(fields)})")
        try:
            values[key] = int(text) if key == "seed" else float(text)
        except ValueError:
            raise ScrError(f"drift {spec!r}: {key} must be a number, got {text!r}") from None
    if not spec or not str(spec).strip():
        raise ScrError("empty drift spec; use vio, wheel or KEY=VALUE,...")
    return dataclasses.replace(base, **values)


def up_axis(poses: np.ndarray) -> np.ndarray:
    """The world's up direction (3,) as the cameras see it: the mean of their image-up axes
    (minus the optical y axis), which a hand-held or robot camera keeps near the vertical."""
    up = -np.asarray(poses)[:, :3, 1].mean(axis=0)
    n = np.linalg.norm(up)
    return up / n if n > 1e-6 else np.array([0.0, 0.0, 1.0])


def drift_poses(poses: np.ndarray, model: DriftModel, up: np.ndarray | None = None) -> np.ndarray:
    """The camera-to-world poses (N, 4, 4) as drifting odometry would have recorded them; the
    first is unchanged. ``up``: the world's up axis (default: :func:`up_axis`)."""
    poses = np.asarray(poses, np.float64)
    if len(poses) == 0:
        return poses.copy()
    up = up_axis(poses) if up is None else np.asarray(up, np.float64) / np.linalg.norm(up)
    rng = np.random.default_rng(model.seed)
    out = [poses[0].copy()]
    for i in range(1, len(poses)):
        step = invert_pose(poses[i - 1]) @ poses[i]  # the motion in the previous camera's frame
        t = step[:3, 3]
        length = float(np.linalg.norm(t))
        # Drawn every step, however short, so a seed's noise does not depend on the path's shape.
        noise_t = rng.normal(size=3)
        axis = rng.normal(size=3)
        angle = rng.normal()
        t_drift = model.scale * t + model.translation_noise * length * noise_t
        rot_angle = np.radians(model.rotation_noise_deg_per_m * length) * angle
        R_noise = Rotation.from_rotvec(axis / max(np.linalg.norm(axis), 1e-12) * rot_angle).as_matrix()
        T = out[-1] @ make_pose(step[:3, :3] @ R_noise, t_drift)
        # Heading drift: the new pose turned about the up axis through the previous position.
        yaw = Rotation.from_rotvec(up * np.radians(model.yaw_bias_deg_per_m * length)).as_matrix()
        pivot = out[-1][:3, 3]
        # Back onto SO(3): real poses are orthonormal only to their file's precision, and the
        # chain would compound that over hundreds of steps.
        T[:3, :3] = Rotation.from_matrix(yaw @ T[:3, :3]).as_matrix()
        T[:3, 3] = pivot + yaw @ (T[:3, 3] - pivot)
        out.append(T)
    return np.stack(out)


def drifted_frames(frames: Sequence[Frame], model: DriftModel) -> list[Frame]:
    """The frames with the poses drifting odometry would have given them, in frame order."""
    drifted = drift_poses(np.stack([f.pose for f in frames]), model)
    return [dataclasses.replace(f, pose=T) for f, T in zip(frames, drifted)]

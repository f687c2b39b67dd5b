"""All settings of a mapping run (:class:`MappingConfig`) and the presets, partial dicts of them
(``scr map --preset``, the mapping node's ``preset``)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from .errors import ScrError
from .imaging import Augmentation


@dataclass
class MappingConfig:
    """All settings of a mapping run; presets are partial dicts of these fields."""

    image_height: int = 480
    buffer_size: int = 8_000_000
    samples_per_image: int = 1024
    max_buffer_passes: int = 100  # stop filling after this many passes even if not full
    batch_size: int = 5120
    epochs: float = 16.0
    lr_min: float = 5e-4
    lr_max: float = 5e-3
    weight_decay: float = 0.01
    augmentation: Augmentation = field(default_factory=Augmentation)
    head: str = "ace"
    head_config: dict = field(default_factory=dict)
    loss: str = "ace"
    loss_config: dict = field(default_factory=dict)
    score: bool = False  # head predicts SS-DVR's discriminability score; the loss weighs by it
    # The map parts to fit (scr_ros.map_parts), key -> settings (scr map --part KEY[=JSON],
    # --pca, --classifier): each part declares its settings, and the builder fills in defaults.
    parts: dict = field(default_factory=dict)
    precision: str = "auto"
    seed: int = 0
    # The implicit reconstruction stored with the map (shown as the map cloud in rviz): head
    # predictions on up to cloud_frames evenly spaced mapping frames, kept where they reproject
    # within cloud_max_error_px under the frame's known pose. 0 frames: no cloud.
    cloud_frames: int = 100
    cloud_max_points: int = 200_000
    cloud_max_error_px: float = 4.0

    def buffer_bytes(self, channels: int = 512, depth: bool = False) -> int:
        """Bytes of the training buffer for rows of ``channels`` (after any PCA): fp16 features,
        float32 pixel, int64 frame index, and a float32 depth when the loss uses depth."""
        return self.buffer_size * (2 * channels + 8 + 8 + (4 if depth else 0))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MappingConfig":
        d = upgrade_settings(d)
        if isinstance(d.get("augmentation"), dict):
            d["augmentation"] = Augmentation(**d["augmentation"])
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ScrError(f"unknown mapping settings: {', '.join(sorted(unknown))}")
        return cls(**d)


def upgrade_settings(d: dict) -> dict:
    """Mapping settings as written before the PCA and the keypoint classifier were map parts like
    the others (maps' ``training.config``, old ablation rows) -> today's, with ``parts``."""
    d = dict(d)
    parts = dict(d.get("parts") or {})
    pca_dim, pca_samples = d.pop("pca_dim", 0), d.pop("pca_samples", None)
    if pca_dim:
        parts["pca"] = {"dim": pca_dim, **({"samples": pca_samples} if pca_samples is not None else {})}
    classifier, classifier_config = d.pop("classifier", False), d.pop("classifier_config", None) or {}
    if classifier:
        parts["classifier"] = dict(classifier_config)
    if parts or "parts" in d:
        d["parts"] = parts
    return d


# What the cpu and test presets share: the loss and augmentation tuned on CPU, and a head narrowed
# for it (the cpu preset's own head is another, below). A 256-channel head trained longer beats a
# 512-channel one in the same time; ace-depth uses depth where frames have it and is plain ACE
# where they do not. Narrower augmentation than ACE's
# (scale 0.8-1.25, +-5 deg, which still covers an upright robot camera) leaves the small head
# less to fit: on the demo scene it moved 5cm/5deg from 89 % to 91 % at 24 epochs (dsift).
_CPU_TRAINING: dict = {
    "augmentation": {"scale_min": 0.8, "scale_max": 1.25, "rotation_deg": 5.0},
    "head_config": {"width": 256},
    "loss": "ace-depth",
    "loss_config": {"depth_weight": 10.0},
}

# The head settings a preset gives a head other than its own (scr map --head): the CPU presets
# narrow every head to 256 channels, whatever shape their own head has.
OTHER_HEADS: dict[str, dict] = {"cpu": {"width": 256}, "test": {"width": 256}}

PRESETS: dict[str, dict] = {
    # ACE's paper settings, for a GPU: 8M buffer, batch 5120, 16 epochs (~25k iterations),
    # 512-channel head, RGB-only reprojection loss.
    "ace": {},
    # Two CPU cores, ~500 frames in 4.5 to 10 minutes with the xfeat encoder (docs/cli.md). Training is
    # compute-bound (bf16 matrix products on two cores), so the recipe buys accuracy per second:
    # batch 2560 runs 2.3x the iterations per second of batch 5120, and more, noisier steps did
    # better in the same time; up to 12 buffer passes give small scenes (the 50 SUN3D mapping
    # frames) a buffer of differently augmented views instead of 6 passes' worth. Narrower
    # (128, 192) heads lost accuracy on SUN3D, a head without its residual block, 1M-row buffers
    # and +-15 deg rotation lost it on the demo scene; torch.compile was slower. Trials, commands
    # and figures: docs/cpu_recipe.md.
    "cpu": {
        **_CPU_TRAINING,
        "buffer_size": 1_500_000,
        "samples_per_image": 1024,
        "max_buffer_passes": 12,
        "epochs": 24.0,
        "batch_size": 2560,
        # Four layers of 384 channels instead of seven of 256 (no residual block), in about the
        # same time: maps hold better for views away from the mapped path (issue 29; the demo
        # 96 -> 99 % within 5 cm / 5°, queries 0.4-1 m from any similar mapping view 26 -> 43 %,
        # SUN3D within what the seed alone moves). docs/methods.md, "Accuracy away from the
        # mapped path".
        "head_config": {"width": 384, "num_blocks": 0},
    },
    # Under a minute on two CPU cores, for tests and smoke runs: 240 px images, small buffer.
    "test": {
        **_CPU_TRAINING,
        "image_height": 240,
        "buffer_size": 200_000,
        "samples_per_image": 512,
        "max_buffer_passes": 4,
        "epochs": 20.0,
        "batch_size": 2048,
    },
}


def preset(name: str, **overrides) -> MappingConfig:
    """A :class:`MappingConfig` from a preset name plus field overrides."""
    if name not in PRESETS:
        raise ScrError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return MappingConfig.from_dict(copy.deepcopy({**PRESETS[name], **overrides}))

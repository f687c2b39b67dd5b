"""The encoder base class, the registries of encoders (by name) and of weights-file
architectures, and the default encoder's name."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn as nn

from ..imaging import feature_pixels
from ..registry import Registry

# name -> zero-argument factory; ``--encoder NAME`` and a map's header name look it up.

ENCODERS = Registry("encoder")
register_encoder = ENCODERS.register
# architecture -> Encoder class with a ``from_file``: what a weights file written by
# ``scr pretrain-encoder`` declares in its header decides the class that reads it.
ARCHITECTURES = Registry("encoder architecture", name_attribute="ARCHITECTURE")
register_architecture = ARCHITECTURES.register
# XFeat's learned descriptors beat dense SIFT on real frames (SUN3D) and on the demo scene, RGB
# only and with depth, and cost less time per frame: docs/encoder_comparison.md.
DEFAULT_ENCODER = "xfeat"


class Encoder(nn.Module):
    """Base class. Subclasses set ``out_channels`` and ``stride`` and implement ``forward``."""

    out_channels: int = 512
    stride: int = 8
    # Feature (i, j) describes pixel (stride * j + pixel_offset, stride * i + pixel_offset).
    pixel_offset: float = 0.0

    def __init__(self) -> None:
        super().__init__()
        self.name = "unnamed"
        self.source: str | None = None  # where the weights came from (a path, a seed, ...)

    def feature_pixels(self, feat_h: int, feat_w: int) -> np.ndarray:
        """Pixel (x, y) each feature of a (feat_h, feat_w) output describes, row-major, (N, 2)."""
        return feature_pixels(feat_h, feat_w, self.stride, self.pixel_offset)

    def checksum(self) -> str:
        """SHA-256 of the weights (names, shapes and float32 values), independent of device/dtype."""
        h = hashlib.sha256()
        for key, value in sorted(self.state_dict().items()):
            t = value.detach().to("cpu", torch.float32).contiguous()
            h.update(key.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        """What a map header records about the encoder."""
        return {
            "name": self.name,
            "source": self.source,
            "sha256": self.checksum(),
            "out_channels": self.out_channels,
            "stride": self.stride,
            **({"pixel_offset": self.pixel_offset} if self.pixel_offset else {}),
        }

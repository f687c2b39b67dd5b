"""Scene-specific regression heads and their registry.

A head maps encoder features (N, C) to scene coordinates (N, 3) in the map frame, metres.
It is a per-pixel MLP: applying it to every feature of a (B, C, h, w) map is the same as ACE's
1x1 convolutions, and working on (N, C) rows lets training sample features freely from the
buffer. Heads are registered by name; a map stores the name and the constructor keywords
(``head.config``) so it can be rebuilt exactly.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

HEADS: dict[str, type["SceneHead"]] = {}


def register_head(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        if name in HEADS:
            raise ValueError(f"head {name!r} is already registered")
        HEADS[name] = cls
        cls.head_type = name
        return cls

    return wrap


class SceneHead(nn.Module):
    """Base class: ``forward(features (N, C)) -> scene coordinates (N, 3)``.

    Subclasses store their constructor keywords in ``self.config`` (JSON-serializable) and keep
    the mean mapping camera position in the ``mean`` buffer (predictions are offsets from it).
    """

    head_type = "base"

    def __init__(self, **config) -> None:
        super().__init__()
        self.config = dict(config)
        self.register_buffer("mean", torch.zeros(3))

    def set_mean(self, mean) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(3))

    def forward_map(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, C, h, w) -> scene coordinates (B, 3, h, w)."""
        B, C, h, w = features.shape
        rows = features.permute(0, 2, 3, 1).reshape(-1, C)
        return self(rows).reshape(B, h, w, 3).permute(0, 3, 1, 2)


@register_head("ace")
class AceHead(SceneHead):
    """ACE's head: a residual MLP of 512 channels with a homogeneous 4-channel output.

    Layout (every layer a linear map = a 1x1 convolution): three layers with a skip connection,
    ``num_blocks`` residual blocks of three layers, then two layers and the output layer.
    The output (x, y, z, w) is dehomogenized as (x, y, z) / h with
    ``h = softplus(w) + 1/max_scale`` clamped to ``1/min_scale``; softplus's beta is chosen so
    that w = 0 gives h = 1. Adding ``mean`` centres predictions on the mapping cameras.
    """

    def __init__(
        self,
        in_channels: int = 512,
        width: int = 512,
        num_blocks: int = 1,
        homogeneous: bool = True,
        min_scale: float = 0.01,
        max_scale: float = 4.0,
    ) -> None:
        super().__init__(
            in_channels=in_channels, width=width, num_blocks=num_blocks, homogeneous=homogeneous, min_scale=min_scale, max_scale=max_scale
        )
        _check_int("in_channels", in_channels, 1, 8192)
        _check_int("width", width, 1, 8192)
        _check_int("num_blocks", num_blocks, 0, 64)
        if not isinstance(homogeneous, bool):
            raise ValueError(f"homogeneous must be true or false, got {homogeneous!r}")
        if not (isinstance(min_scale, (int, float)) and isinstance(max_scale, (int, float)) and 0 < min_scale < max_scale and max_scale > 1):
            raise ValueError(f"need 0 < min_scale < max_scale and max_scale > 1, got min_scale={min_scale}, max_scale={max_scale}")
        self.skip = nn.Identity() if in_channels == width else nn.Linear(in_channels, width)
        self.stem = nn.ModuleList([nn.Linear(in_channels, width), nn.Linear(width, width), nn.Linear(width, width)])
        self.blocks = nn.ModuleList(
            nn.ModuleList([nn.Linear(width, width) for _ in range(3)]) for _ in range(num_blocks)
        )
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.out = nn.Linear(width, 4 if homogeneous else 3)
        self.homogeneous = homogeneous
        self.max_inv_scale = 1.0 / max_scale
        self.min_inv_scale = 1.0 / min_scale
        self.beta = math.log(2.0) / (1.0 - self.max_inv_scale)

    @staticmethod
    def _mlp(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            x = F.relu(layer(x))
        return x

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.skip(features) + self._mlp(self.stem, features)
        for block in self.blocks:
            x = x + self._mlp(block, x)
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        # The output layer and dehomogenization run in fp32 even under autocast: at a few
        # metres from the mean, half precision would round coordinates by centimetres.
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.out(x.float())
            if self.homogeneous:
                h = F.softplus(out[:, 3:4], beta=self.beta) + self.max_inv_scale
                xyz = out[:, :3] / h.clamp(max=self.min_inv_scale)
            else:
                xyz = out
            return xyz + self.mean


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def build_head(name: str, **config) -> SceneHead:
    """Instantiate a registered head; unknown names or keywords raise ``ValueError``."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; registered heads: {', '.join(sorted(HEADS))}")
    try:
        return HEADS[name](**config)
    except TypeError as exc:
        raise ValueError(f"bad configuration for head {name!r}: {exc}") from exc

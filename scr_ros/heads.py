"""Scene-specific regression heads and their registry.

A head maps encoder features (N, C) to scene coordinates (N, 3) in the map frame, metres.
It is a per-pixel MLP: applying it to every feature of a (B, C, h, w) map is the same as ACE's
1x1 convolutions, and working on (N, C) rows lets training sample features freely from the
buffer. Heads are registered by name; a map stores the name and the constructor keywords
(``head.config``) so it can be rebuilt exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import Registry

HEADS = Registry("head", name_attribute="head_type")
register_head = HEADS.register


class SceneHead(nn.Module):
    """Base class: ``forward(features (N, C)) -> scene coordinates (N, 3)``.

    Subclasses store their constructor keywords in ``self.config`` (JSON-serializable) and keep
    the mean mapping camera position in the ``mean`` buffer (predictions are offsets from it).
    A head built with ``score=True`` also predicts SS-DVR's discriminability ``s_hat`` (N,)
    per feature; :meth:`predict` returns it (``None`` for heads without it).
    """

    head_type = "base"
    predicts_score = False

    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """features (N, C) -> (scene coordinates (N, 3), s_hat (N,) or None)."""
        return self(features), None

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
    ``num_blocks`` residual blocks of three layers, then ``final_layers - 1`` layers and the
    output layer. The output (x, y, z, w) is dehomogenized as (x, y, z) / h with
    ``h = softplus(w) + 1/max_scale`` clamped to ``1/min_scale``; softplus's beta is chosen so
    that w = 0 gives h = 1. Adding ``mean`` centres predictions on the mapping cameras.

    ``score=True`` adds one output channel, SS-DVR's discriminability ``s_hat`` (eq. 10): it
    shares every layer but the last row of the output layer with the coordinates, as the paper
    describes ("share almost all parameters").
    """

    def __init__(
        self,
        in_channels: int = 512,
        width: int = 512,
        num_blocks: int = 1,
        homogeneous: bool = True,
        min_scale: float = 0.01,
        max_scale: float = 4.0,
        final_layers: int = 3,
        score: bool = False,
    ) -> None:
        super().__init__(
            in_channels=in_channels, width=width, num_blocks=num_blocks, homogeneous=homogeneous, min_scale=min_scale, max_scale=max_scale
        )
        # Written to the config only when not ACE's default, so maps from before these options
        # keep their exact header.
        if final_layers != 3:
            self.config["final_layers"] = final_layers
        if score:
            self.config["score"] = score
        _check_int("in_channels", in_channels, 1, 8192)
        _check_int("width", width, 1, 8192)
        _check_int("num_blocks", num_blocks, 0, 64)
        _check_int("final_layers", final_layers, 3, 16)
        for name, flag in (("homogeneous", homogeneous), ("score", score)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be true or false, got {flag!r}")
        if not (isinstance(min_scale, (int, float)) and isinstance(max_scale, (int, float)) and 0 < min_scale < max_scale and max_scale > 1):
            raise ValueError(f"need 0 < min_scale < max_scale and max_scale > 1, got min_scale={min_scale}, max_scale={max_scale}")
        self.skip = nn.Identity() if in_channels == width else nn.Linear(in_channels, width)
        self.stem = nn.ModuleList([nn.Linear(in_channels, width), nn.Linear(width, width), nn.Linear(width, width)])
        self.blocks = nn.ModuleList(
            nn.ModuleList([nn.Linear(width, width) for _ in range(3)]) for _ in range(num_blocks)
        )
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        # Layers beyond ACE's two sit between fc2 and the output (empty for ACE, so its state
        # dict keys are unchanged).
        self.tail = nn.ModuleList(nn.Linear(width, width) for _ in range(final_layers - 3))
        self.out = nn.Linear(width, (4 if homogeneous else 3) + (1 if score else 0))
        self.homogeneous = homogeneous
        self.predicts_score = score
        self.max_inv_scale = 1.0 / max_scale
        self.min_inv_scale = 1.0 / min_scale
        self.beta = math.log(2.0) / (1.0 - self.max_inv_scale)

    @staticmethod
    def _mlp(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            x = F.relu(layer(x))
        return x

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.predict(features)[0]

    def predict(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.skip(features) + self._mlp(self.stem, features)
        for block in self.blocks:
            x = x + self._mlp(block, x)
        x = self._mlp(self.tail, F.relu(self.fc2(F.relu(self.fc1(x)))))
        # The output layer and dehomogenization run in fp32 even under autocast: at a few
        # metres from the mean, half precision would round coordinates by centimetres.
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.out(x.float())
            if self.homogeneous:
                h = F.softplus(out[:, 3:4], beta=self.beta) + self.max_inv_scale
                xyz = out[:, :3] / h.clamp(max=self.min_inv_scale)
            else:
                xyz = out[:, :3]
            return xyz + self.mean, (out[:, -1] if self.predicts_score else None)


@register_head("deep")
class DeepHead(AceHead):
    """The deeper residual head of "Exploring Matching Rates" (supplement, section 2.1, Fig. 2).

    ACE's layout with four more residual blocks and two more final layers: six residual blocks
    of three layers (the skip-connected stem and five blocks) and five final layers (four
    hidden, one output), 512 channels, ACE's dehomogenization. The paper found ACE's head too
    shallow for hard scenes such as 7-Scenes stairs. The CPU presets narrow it like every head.
    """

    def __init__(self, in_channels: int = 512, width: int = 512, num_blocks: int = 5, final_layers: int = 5, **kwargs) -> None:
        super().__init__(in_channels=in_channels, width=width, num_blocks=num_blocks, final_layers=final_layers, **kwargs)


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def build_head(name: str, **config) -> SceneHead:
    """Instantiate a registered head; unknown names or keywords raise ``ValueError``."""
    cls = HEADS.lookup(name)
    try:
        return cls(**config)
    except TypeError as exc:
        raise ValueError(f"bad configuration for head {name!r}: {exc}") from exc

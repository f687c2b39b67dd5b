"""ACE's head (Brachmann et al. 2023) and the deeper one of "Exploring Matching Rates"."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Dehomogenize, SceneHead, check_int, register_head


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
            in_channels=in_channels,
            width=width,
            num_blocks=num_blocks,
            homogeneous=homogeneous,
            min_scale=min_scale,
            max_scale=max_scale,
        )
        # Written to the config only when not ACE's default, so maps from before these options
        # keep their exact header.
        if final_layers != 3:
            self.config["final_layers"] = final_layers
        if score:
            self.config["score"] = score
        check_int("in_channels", in_channels, 1, 8192)
        check_int("width", width, 1, 8192)
        check_int("num_blocks", num_blocks, 0, 64)
        check_int("final_layers", final_layers, 3, 16)
        for name, flag in (("homogeneous", homogeneous), ("score", score)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be true or false, got {flag!r}")
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
        self.dehomogenize = Dehomogenize(min_scale, max_scale)

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
                xyz = self.dehomogenize(out)
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

    def __init__(
        self, in_channels: int = 512, width: int = 512, num_blocks: int = 5, final_layers: int = 5, **kwargs
    ) -> None:
        super().__init__(
            in_channels=in_channels, width=width, num_blocks=num_blocks, final_layers=final_layers, **kwargs
        )

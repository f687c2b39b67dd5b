"""The ACE encoder architecture: ACE-format weights files, and ``random`` (untrained, a control)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import EncoderError
from .base import Encoder, register_encoder


class AceEncoder(Encoder):
    """The ACE encoder architecture (Brachmann et al., CVPR 2023).

    Four 3x3 convolutions (1->32->64->128->256, the last three with stride 2), then two residual
    blocks at 1/8 resolution, 512 output channels. Parameter names follow ACE's state dict, so
    ACE-format weights load unchanged. The input is a grey image in [0, 1]; ACE's normalization
    (mean 0.4, std 0.25) is applied inside.
    """

    MEAN, STD = 0.4, 0.25

    def __init__(self, out_channels: int = 512) -> None:
        super().__init__()
        self.name = "ace"
        self.out_channels = out_channels
        self.conv1 = nn.Conv2d(1, 32, 3, 1, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 2, 1)
        self.conv3 = nn.Conv2d(64, 128, 3, 2, 1)
        self.conv4 = nn.Conv2d(128, 256, 3, 2, 1)
        self.res1_conv1 = nn.Conv2d(256, 256, 3, 1, 1)
        self.res1_conv2 = nn.Conv2d(256, 256, 1, 1, 0)
        self.res1_conv3 = nn.Conv2d(256, 256, 3, 1, 1)
        self.res2_conv1 = nn.Conv2d(256, 512, 3, 1, 1)
        self.res2_conv2 = nn.Conv2d(512, 512, 1, 1, 0)
        self.res2_conv3 = nn.Conv2d(512, out_channels, 3, 1, 1)
        self.res2_skip = nn.Conv2d(256, out_channels, 1, 1, 0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 1, H, W) in [0, 1] -> features (B, C, ceil(H/8), ceil(W/8))."""
        x = (image - self.MEAN) / self.STD
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        skip = F.relu(self.conv4(x))
        x = F.relu(self.res1_conv1(skip))
        x = F.relu(self.res1_conv2(x))
        x = F.relu(self.res1_conv3(x))
        skip = skip + x
        x = F.relu(self.res2_conv1(skip))
        x = F.relu(self.res2_conv2(x))
        x = F.relu(self.res2_conv3(x))
        return self.res2_skip(skip) + x

    @classmethod
    def random(cls, seed: int = 0) -> "AceEncoder":
        """ACE architecture with He-normal weights drawn from numpy's PCG64 stream for ``seed``.

        numpy's generator is stable across versions and platforms, so the same seed gives the
        same weights (and checksum) everywhere. Biases are zero so the signal neither vanishes
        nor is swamped by biases through the ten layers.
        """
        enc = cls()
        rng = np.random.default_rng(seed)
        with torch.no_grad():
            for name, p in enc.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                else:
                    fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                    w = rng.standard_normal(tuple(p.shape)) * np.sqrt(2.0 / fan_in)
                    p.copy_(torch.from_numpy(w.astype(np.float32)))
        enc.name, enc.source = "random", f"seed:{seed}"
        return enc

    @classmethod
    def from_file(cls, path: str | Path) -> "AceEncoder":
        """Load ACE-format weights (``.pt``/``.pth`` via ``torch.load(weights_only=True)``, or
        ``.safetensors``). Keys may carry an ``encoder.`` prefix (a full ACE network checkpoint)."""
        path = Path(path)
        if not path.is_file():
            raise EncoderError(f"encoder weights file not found: {path}")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any parse failure means the file is unusable
            raise EncoderError(f"cannot read encoder weights {path}: {exc}") from exc
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise EncoderError(f"{path} does not hold a state dict of tensors")
        if any(k.startswith("encoder.") for k in state):
            state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
        skip = state.get("res2_skip.weight")
        out_channels = int(skip.shape[0]) if skip is not None and skip.dim() == 4 and skip.shape[0] > 0 else 512
        enc = cls(out_channels)
        expected = enc.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise EncoderError(
                f"{path} is not an ACE encoder state dict: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        for k, v in state.items():
            if tuple(v.shape) != tuple(expected[k].shape):
                raise EncoderError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
            if not torch.isfinite(v.float()).all():
                raise EncoderError(f"{path}: {k} contains NaN or infinite values")
        enc.load_state_dict({k: v.float() for k, v in state.items()})
        enc.name, enc.source = "ace-file", str(path.resolve())
        return enc


@register_encoder("random")
def _random_encoder() -> Encoder:
    # The ACE architecture untrained: a control that shows what learned weights buy.
    return AceEncoder.random(seed=0)

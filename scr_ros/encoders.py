"""Frozen, scene-agnostic feature encoders and their registry.

An encoder maps a grey image in [0, 1], shape (B, 1, H, W), to dense features (B, C, H/8, W/8).
Feature (i, j) describes the image around pixel (8j, 8i) (see :func:`scr_ros.imaging.feature_pixels`).

Encoders are chosen by name (``--encoder random``) or by a weights file
(``--encoder path/to/weights.pt``) holding the ACE architecture's state dict; ACE's own
``ace_encoder_pretrained.pt`` loads this way. Every encoder has a SHA-256 checksum of its
weights, which a map records so it can refuse to run with a different encoder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import EncoderError


class Encoder(nn.Module):
    """Base class. Subclasses set ``out_channels`` and ``stride`` and implement ``forward``."""

    out_channels: int = 512
    stride: int = 8

    def __init__(self) -> None:
        super().__init__()
        self.name = "unnamed"
        self.source: str | None = None  # where the weights came from (a path, a seed, ...)

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
        }


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
            state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
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


# --------------------------------------------------------------------------------------------
# Registry

ENCODERS: dict[str, Callable[[], Encoder]] = {}
DEFAULT_ENCODER = "random"


def register_encoder(name: str):
    """Decorator registering a zero-argument factory under ``name``."""

    def wrap(factory: Callable[[], Encoder]):
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        ENCODERS[name] = factory
        return factory

    return wrap


@register_encoder("random")
def _random_encoder() -> Encoder:
    # The demo's encoder until the project ships pretrained weights: a fixed random projection.
    return AceEncoder.random(seed=0)


def load_encoder(spec: str | None = None) -> Encoder:
    """Build an encoder from a registered name or a weights-file path, in eval mode, frozen."""
    spec = spec or DEFAULT_ENCODER
    if spec in ENCODERS:
        enc = ENCODERS[spec]()
    elif Path(spec).suffix in (".pt", ".pth", ".safetensors") or Path(spec).exists():
        enc = AceEncoder.from_file(spec)
    else:
        raise EncoderError(f"unknown encoder {spec!r}: not a registered name ({', '.join(sorted(ENCODERS))}) nor a weights file")
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc


def load_encoder_for_map(described: dict, override: str | None = None) -> Encoder:
    """The encoder a map was built with, from its header entry (or ``override``), checksum-verified."""
    spec = override or (described.get("source") if described.get("name") == "ace-file" else described.get("name"))
    enc = load_encoder(spec)
    if enc.checksum() != described.get("sha256"):
        raise EncoderError(
            f"encoder {spec!r} has weights sha256 {enc.checksum()[:12]}..., but the map was built with "
            f"{described.get('name')!r} sha256 {str(described.get('sha256'))[:12]}...; features would not match the map"
        )
    return enc

"""``dsift-ctx``: dense SIFT plus learned context layers, the project's pretrained encoder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import EncoderError
from .base import Encoder, register_architecture, register_encoder
from .dsift import DenseSiftEncoder
from .weights import checked_state, read_scr_weights, write_scr_weights

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
PRETRAINED_WEIGHTS = WEIGHTS_DIR / "dsift_ctx.safetensors"


@register_architecture("dsift-ctx")
class SiftContextEncoder(Encoder):
    """The project's pretrained encoder: dense SIFT plus learned context layers (``dsift-ctx``).

    A weight-free :class:`DenseSiftEncoder` describes each 8x8 patch (384 channels); learned
    layers at stride 8 look at the descriptors around it (3x3 convolutions dilated 1, 2 and 4,
    so about 56 px beyond the SIFT window on each side) and add ``context_channels`` features
    that tell apart patches SIFT alone confuses. Output: the SIFT channels followed by the learned
    ones, each at unit RMS, (B, 384 + context_channels, ceil(H/8), ceil(W/8)).

    Why not the ACE architecture: learning its full-resolution stem from scratch takes GPU-days;
    on a CPU the SIFT stem gives the gradient statistics for free and pretraining only has to
    learn the context (``scr pretrain-encoder``; see scr_ros/weights/ for the shipped weights
    and their model card).
    """

    VERSION = 1  # bump when the layout of the learned tensors changes

    def __init__(self, width: int = 128, context_channels: int = 128):
        super().__init__()
        self.stem = DenseSiftEncoder()
        self.width, self.context_channels = int(width), int(context_channels)
        self.reduce = nn.Conv2d(self.stem.out_channels, width, 1)
        self.context = nn.ModuleList([nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in (1, 2, 4)])
        self.project = nn.Conv2d(width, context_channels, 1)
        self.out_channels = self.stem.out_channels + context_channels
        self.name, self.source = "dsift-ctx", "untrained"

    def config(self) -> dict:
        return {
            "architecture": self.ARCHITECTURE,
            "version": self.VERSION,
            "width": self.width,
            "context_channels": self.context_channels,
            "stem": self.stem.source,
        }

    def checksum(self) -> str:
        # The learned tensors and the SIFT stem's version: either changing changes the features.
        return hashlib.sha256((super().checksum() + self.stem.checksum()).encode()).hexdigest()

    def context_features(self, sift: torch.Tensor) -> torch.Tensor:
        """sift (B, 384, h, w) -> learned context features (B, context_channels, h, w), unit RMS."""
        x = F.relu(self.reduce(sift))
        for conv in self.context:
            x = x + F.relu(conv(x))
        c = self.project(x).float()
        return c / (c.pow(2).mean(dim=1, keepdim=True).sqrt() + 1e-3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        sift = self.stem(image)
        return torch.cat([sift, self.context_features(sift).to(sift.dtype)], 1)

    # -------------------------------------------------------------- weights files

    def learned_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("stem.")}

    def save_weights(self, path: str | Path, metadata: dict | None = None) -> str:
        """Write the learned tensors as fp16 safetensors (atomically); returns the file's SHA-256."""
        return write_scr_weights(path, {**self.config(), **(metadata or {})}, self.learned_state(), torch.float16)

    @classmethod
    def from_file(cls, path: str | Path, card: str | Path | None = None) -> "SiftContextEncoder":
        """Load weights written by ``scr pretrain-encoder``, refusing a file whose SHA-256 is not
        the one its model card (``card``, default: the ``.md`` beside the file) records."""
        config, tensors = read_scr_weights(path, card, cls.ARCHITECTURE, cls.VERSION)
        enc = cls(width=int(config.get("width", 128)), context_channels=int(config.get("context_channels", 128)))
        enc.load_state_dict(checked_state(path, tensors, enc.learned_state(), cls.ARCHITECTURE), strict=False)
        enc.name, enc.source = "dsift-ctx-file", str(Path(path).resolve())
        return enc


@register_encoder("dsift-ctx")
def _pretrained_encoder() -> Encoder:
    if not PRETRAINED_WEIGHTS.is_file():
        raise EncoderError(
            f"the pretrained weights {PRETRAINED_WEIGHTS} are missing from this installation; reinstall scr_ros or "
            "use --encoder dsift"
        )
    enc = SiftContextEncoder.from_file(PRETRAINED_WEIGHTS)
    enc.name, enc.source = "dsift-ctx", f"scr_ros/weights/{PRETRAINED_WEIGHTS.name}"
    return enc

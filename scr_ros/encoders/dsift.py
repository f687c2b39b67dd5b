"""Dense SIFT: the weight-free baseline encoder (``dsift``)."""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F

from ..errors import EncoderError
from .base import Encoder, register_encoder


class DenseSiftEncoder(Encoder):
    """A weight-free dense descriptor: SIFT-style gradient histograms on the stride-8 grid.

    For every feature position and every spatial bin width ``b`` in ``bin_sizes`` it describes
    the surrounding 4b x 4b window by 4 x 4 spatial bins of 8 orientation bins (128 values):
    gradient magnitudes are split between the two nearest orientation bins and pooled with a
    triangular (bilinear) spatial kernel of half-width ``b``, as SIFT does, then weighted by a
    Gaussian window, L2-normalized, clipped at 0.2 and renormalized. The default widths
    (12, 24, 48 px) match OpenCV SIFT keypoints of size 8, 16 and 32, so one feature sees up to
    192 px of context. Each width must be the smallest one times 1, 2, 4 or 8; wider bins are
    pooled on histograms averaged down by that factor, so every scale costs the same small filter.

    Output: (B, 128 * len(bin_sizes), ceil(H/8), ceil(W/8)), scaled to unit RMS per value.
    """

    VERSION = 1  # bump when the numbers this produces change: maps record the checksum

    def __init__(self, bin_sizes: tuple[int, ...] = (12, 24, 48), orientations: int = 8, spatial_bins: int = 4):
        super().__init__()
        base = min(bin_sizes)
        if base % 2 or any(b % base or (b // base) not in (1, 2, 4, 8) for b in bin_sizes):
            raise EncoderError(f"dense SIFT bin sizes must be an even width times 1, 2, 4 or 8, got {bin_sizes}")
        self.base_bin = base
        self.name = "dsift"
        self.bin_sizes = tuple(int(b) for b in bin_sizes)
        self.orientations = orientations
        self.spatial_bins = spatial_bins
        self.out_channels = orientations * spatial_bins**2 * len(self.bin_sizes)
        self.source = f"v{self.VERSION}:bins={','.join(map(str, self.bin_sizes))}:o={orientations}:s={spatial_bins}"

    def checksum(self) -> str:
        return hashlib.sha256(f"dsift:{self.source}".encode()).hexdigest()

    @staticmethod
    def _box(x: torch.Tensor, k: int, dim: int, left: int) -> torch.Tensor:
        """Sum over ``k`` consecutive samples along ``dim``, starting ``left`` samples before each."""
        pad = [0, 0, 0, 0]
        i = 0 if dim == 3 else 2
        pad[i], pad[i + 1] = left + 1, k - 1 - left
        c = F.pad(x, pad).cumsum(dim)
        n = x.shape[dim]
        return c.narrow(dim, k, n) - c.narrow(dim, 0, n)

    def _triangle(self, x: torch.Tensor) -> torch.Tensor:
        """Separable triangular filter of half-width ``base_bin``: two boxes per axis, shifted by
        one sample against each other so the result stays centred (running sums: O(1) per pixel)."""
        k = self.base_bin
        for dim in (3, 2):
            x = self._box(self._box(x, k, dim, k // 2), k, dim, k // 2 - 1)
        return x / float(k**4)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float()
        B, _, H, W = x.shape
        fh, fw = -(-H // self.stride), -(-W // self.stride)
        gx = F.pad(x[:, :, :, 2:] - x[:, :, :, :-2], (1, 1, 0, 0)) * 0.5
        gy = F.pad(x[:, :, 2:, :] - x[:, :, :-2, :], (0, 0, 1, 1)) * 0.5
        mag = torch.sqrt(gx * gx + gy * gy)
        o = (torch.atan2(gy, gx) % (2 * math.pi)) * (self.orientations / (2 * math.pi))
        o0 = o.floor()
        frac = o - o0
        o0 = o0.long() % self.orientations
        hist = torch.zeros(B, self.orientations, H, W, dtype=x.dtype, device=x.device)
        hist.scatter_add_(1, o0, mag * (1 - frac))
        hist.scatter_add_(1, (o0 + 1) % self.orientations, mag * frac)
        offsets = [(k - (self.spatial_bins - 1) / 2) * self.base_bin for k in range(self.spatial_bins)]
        sigma = self.spatial_bins * self.base_bin / 2.0
        out = []
        for b in self.bin_sizes:
            f = b // self.base_bin
            level = F.avg_pool2d(hist, f, ceil_mode=True) if f > 1 else hist
            pooled = self._triangle(level)
            step = self.stride // f
            pad = int(max(abs(o) for o in offsets)) + step
            pooled = F.pad(pooled, (pad, pad, pad, pad))
            cells = []
            for oy in offsets:
                for ox in offsets:
                    weight = math.exp(-(oy**2 + ox**2) / (2 * sigma**2))
                    y0, x0 = pad + int(oy), pad + int(ox)
                    cells.append(pooled[:, :, y0 : y0 + step * fh : step, x0 : x0 + step * fw : step] * weight)
            d = torch.cat(cells, 1)
            d = d / (d.norm(dim=1, keepdim=True) + 0.02)
            d = d.clamp(max=0.2)
            d = d / (d.norm(dim=1, keepdim=True) + 1e-6)
            out.append(d)
        return torch.cat(out, 1) * math.sqrt(self.orientations * self.spatial_bins**2)


@register_encoder("dsift")
def _dense_sift_encoder() -> Encoder:
    return DenseSiftEncoder()

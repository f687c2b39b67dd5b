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

Each encoder is a module of this folder that registers a factory under its name
(``@register_encoder``); :func:`~scr_ros.registry.import_parts` imports them all, so adding an
encoder is adding a file.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EncoderError
from ..registry import import_parts
from .base import ARCHITECTURES, DEFAULT_ENCODER, ENCODERS, Encoder, register_architecture, register_encoder
from .weights import scr_weights_architecture

import_parts(__name__, __path__)

from .ace import AceEncoder  # noqa: E402 - the built-in encoders, for direct use
from .dsift import DenseSiftEncoder  # noqa: E402
from .dsift_ctx import PRETRAINED_WEIGHTS, SiftContextEncoder  # noqa: E402
from .xfeat import XFEAT_SHA256, XFeatEncoder  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ENCODER",
    "ENCODERS",
    "PRETRAINED_WEIGHTS",
    "XFEAT_SHA256",
    "AceEncoder",
    "DenseSiftEncoder",
    "Encoder",
    "SiftContextEncoder",
    "XFeatEncoder",
    "load_encoder",
    "load_encoder_for_map",
    "register_architecture",
    "register_encoder",
]


def load_encoder(spec: str | None = None) -> Encoder:
    """Build an encoder from a registered name or a weights-file path, in eval mode, frozen."""
    spec = spec or DEFAULT_ENCODER
    if spec in ENCODERS:
        enc = ENCODERS[spec]()
    elif (architecture := scr_weights_architecture(Path(spec))) is not None:
        if architecture not in ARCHITECTURES:
            raise EncoderError(
                f"{spec}: architecture {architecture!r} is not one this scr_ros reads "
                f"({', '.join(sorted(ARCHITECTURES))})"
            )
        enc = ARCHITECTURES[architecture].from_file(spec)
    elif Path(spec).suffix in (".pt", ".pth", ".safetensors") or Path(spec).exists():
        enc = AceEncoder.from_file(spec)
    else:
        raise EncoderError(
            f"unknown encoder {spec!r}: not a registered name ({', '.join(sorted(ENCODERS))}) nor a weights file"
        )
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
            "a map does not choose files to open: give that file with --encoder PATH (or the node's encoder "
            "parameter), "
            "it is checked against the map's encoder checksum"
        )
    else:
        raise EncoderError(
            f"this map was built with encoder {name!r}, which this scr_ros does not have "
            f"({', '.join(sorted(ENCODERS))})"
        )
    enc = load_encoder(spec)
    if enc.checksum() != described.get("sha256"):
        raise EncoderError(
            f"encoder {spec!r} has weights sha256 {enc.checksum()[:12]}..., but the map was built with "
            f"{described.get('name')!r} sha256 {str(described.get('sha256'))[:12]}...; features would not match the map"
        )
    return enc

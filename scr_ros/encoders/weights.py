"""Weights files of trained encoders: safetensors with a config header, checked against the
SHA-256 their model card records; never pickles."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

from ..errors import EncoderError
from ..fileio import atomic_write_bytes


def write_scr_weights(path: str | Path, config: dict, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> str:
    """Write an encoder's learned tensors (as ``dtype``) and its config header as safetensors,
    atomically; returns the file's SHA-256, which the model card records."""
    from safetensors.torch import save

    header = {"scr_ros_encoder": json.dumps(config, sort_keys=True)}
    data = save({k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}, metadata=header)
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def read_scr_weights(
    path: str | Path, card: str | Path | None, architecture: str, version: int
) -> tuple[dict, dict[str, torch.Tensor]]:
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
        raise EncoderError(
            f"{path}: architecture {config.get('architecture')!r} version {config.get('version')} is not one this "
            "scr_ros reads"
        )
    return config, tensors


def checked_state(
    path: str | Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], architecture: str
) -> dict[str, torch.Tensor]:
    """``tensors`` as float32, refused unless names and shapes are ``expected``'s and every value is finite."""
    if set(tensors) != set(expected):
        raise EncoderError(
            f"{path}: tensors {sorted(tensors)} do not match the {architecture} layout {sorted(expected)}"
        )
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise EncoderError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
        if v.is_floating_point() and not torch.isfinite(v.float()).all():
            raise EncoderError(f"{path}: {k} contains NaN or infinite values")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}


def card_checksum(card: Path) -> str:
    """The weights SHA-256 a model card records, on its ``weights sha256:`` line."""
    if not card.is_file():
        raise EncoderError(
            f"model card {card} not found: pretrained weights load only beside the card that records their checksum"
        )
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

"""The model card written next to pretrained weights, and its comparison section."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..device import hardware_description
from ..fileio import atomic_write_text, replace_between_markers
from .config import SCENE_SEED_BASE
from .scenes import RANDOMIZATION

if TYPE_CHECKING:
    from .trainer import Pretrainer

COMPARISON_BEGIN = "<!-- comparison: written by benchmarks/encoders.py -->"
COMPARISON_END = "<!-- end comparison -->"


def write_model_card(
    path: Path, trainer: Pretrainer, weights_sha256: str, command: str, comparison: str | None = None
) -> None:
    """The model card beside the weights: how they were made and what they measured."""
    cfg = trainer.cfg
    losses = trainer.losses
    marks = sorted({max(1, round(cfg.steps * f)) for f in (0.01, 0.1, 0.25, 0.5, 0.75, 1.0)})
    curve = "\n".join(
        f"| {m} | {np.mean(losses[max(0, m - max(1, cfg.steps // 50)) : m]):.3f} |" for m in marks if m <= len(losses)
    )
    first_seed = SCENE_SEED_BASE + cfg.seed * 10_000
    amp = str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "off, fp32"
    text = f"""# Encoder model card: `{trainer.encoder.ARCHITECTURE}` v{trainer.encoder.VERSION}

{trainer.init.card_summary(cfg, trainer.encoder)}

- weights sha256: `{weights_sha256}`
- feature checksum (what maps record): `{trainer.encoder.checksum()}`

## How they were made

- command: `{command}`
- training data: {cfg.scenes} synthetic rooms from scr_ros's renderer, scene seeds
  {first_seed}..{first_seed + cfg.scenes - 1} (never a named or benchmark scene),
  {cfg.frames_per_scene} views each, {cfg.crops_per_frame} augmented {cfg.window}x{cfg.window}-cell windows per view
  ({cfg.scenes * cfg.frames_per_scene * cfg.crops_per_frame} windows)
- objective: ACE-style, one shared encoder and one head per scene (ACE head, width {cfg.head_width}),
  trained jointly; loss = Euclidean distance (m) to the scene coordinate from rendered depth
  (depth targets converge much faster than the reprojection loss and are exact in rendered scenes)
- steps: {trainer.step} x {cfg.batch_scenes} scenes x {cfg.windows_per_scene} windows,
  AdamW (weight decay {cfg.weight_decay}),
  peak lr {cfg.lr_encoder} encoder / {cfg.lr_head} heads, {cfg.warmup_steps} warm-up steps, cosine decay
- seed: {cfg.seed}; precision: {cfg.precision} (autocast {amp})
- hardware: {hardware_description(trainer.device)}
- wall time: {trainer.elapsed_s / 60:.1f} min of training (pool building not included)
- final loss (mean over the last 5 % of steps): {trainer.final_loss():.3f} m

Data generator settings (domain randomization):

```json
{json.dumps(RANDOMIZATION, indent=1)}
```

Full configuration:

```json
{json.dumps(cfg.to_dict(), indent=1)}
```

Loss during training (mean over the preceding 2 % of steps):

| step | loss (m) |
|---|---|
{curve}

## Comparison

{COMPARISON_BEGIN}
{comparison or "Not measured yet: run `python benchmarks/encoders.py`."}
{COMPARISON_END}
"""
    atomic_write_text(path, text)


def replace_comparison(card: Path, table: str) -> None:
    """Put ``table`` between the comparison markers of a model card (the checksum line stays)."""
    replace_between_markers(card, COMPARISON_BEGIN, COMPARISON_END, table, "comparison section")


def command_line(argv: list[str] | None = None) -> str:
    return " ".join(["scr"] + list(argv if argv is not None else sys.argv[1:]))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

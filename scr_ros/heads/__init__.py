"""Scene-specific regression heads and their registry.

A head maps encoder features (N, C) to scene coordinates (N, 3) in the map frame, metres.
It is a per-pixel MLP: applying it to every feature of a (B, C, h, w) map is the same as ACE's
1x1 convolutions, and working on (N, C) rows lets training sample features freely from the
buffer. Heads are registered by name; a map stores the name and the constructor keywords
(``head.config``) so it can be rebuilt exactly.
"""

from ..registry import import_parts
from .base import HEADS, SceneHead, build_head, check_int, register_head

import_parts(__name__, __path__)

from .ace import AceHead, DeepHead  # noqa: E402 - the built-in heads, for direct use

__all__ = ["HEADS", "AceHead", "DeepHead", "SceneHead", "build_head", "check_int", "register_head"]

"""Parts a map carries besides its head: fitted at a stage of mapping, stored in the map file,
applied at relocalization.

Each part is one class registered in :data:`MAP_PARTS` under the name it has in the map file
(header entry ``KEY``, tensors ``KEY.*``). The engines never name a part:

- :class:`~scr_ros.map_builder.MapBuilder` asks every registered part whether the mapping
  config wants it (:meth:`MapPart.wanted`) and fits it at its ``stage``: ``features`` parts
  (R-SCoRe's PCA) on a sample of encoder features before the training buffer fills, after which
  the head reads their output; ``trained`` parts (Matching Rates' keypoint classifier) on the
  training buffer once the head is trained.
- :mod:`scr_ros.mapfile` writes each part's :meth:`~MapPart.header` and tensors, and rebuilds
  it with :meth:`~MapPart.from_header`, checking shapes before it allocates anything.
- :class:`~scr_ros.relocalize.Relocalizer` passes the encoder features through every part's
  :meth:`~MapPart.transform` (in registration order) and asks the part that provides the signal
  a selector needs (``provides``) for it.

Adding a part: a module in this folder with a :class:`MapPart` subclass registered by
``@register_map_part("KEY")``; the map's header and tensors get ``KEY`` and nothing else
changes. Parts are fitted, applied and rebuilt in :func:`ordered` order: ``features`` parts
first (the classifier reads what the PCA outputs).

A part may also give each image a *global encoding* (``gives_context``: GLACE's and R-SCoRe's,
:mod:`.global_encoding`), appended to every feature the head reads; at query time it offers
several hypotheses and the relocalizer keeps the pose with most inliers.

Shapes: features (N, C) -> transform -> (N, C') [+ context (D,) -> (N, C' + D)] -> head;
``signal(features (N, C'))`` -> (N,).
"""

from ..registry import import_parts
from .base import MAP_PARTS, STAGES, MapPart, head_input, ordered, register_map_part, transform_features

import_parts(__name__, __path__)

from .classifier import ClassifierPart  # noqa: E402 - the built-in parts, for direct use
from .projection import PcaPart  # noqa: E402

__all__ = ["MAP_PARTS", "STAGES", "ClassifierPart", "MapPart", "PcaPart", "head_input", "ordered", "register_map_part", "transform_features"]

"""Parts a map carries besides its head: fitted at a stage of mapping, stored in the map file,
applied at relocalization.

Each part is one class registered in :data:`MAP_PARTS` under the name it has in the map file
(header entry ``KEY``, tensors ``KEY.*``), with its settings declared on the class. The engines
never name a part:

- :class:`~scr_ros.mapping.MapBuilder` fits every part the mapping config lists
  (``MappingConfig.parts``: key -> settings) at its ``stage``: ``features`` parts (R-SCoRe's
  PCA, the global encodings) on mapping frames before the training buffer fills, after which the
  buffer holds their output; ``buffer`` parts (SS-DVR's partitions) on the buffer before the
  head trains; ``trained`` parts (Matching Rates' keypoint classifier) on the buffer once the
  head is trained. A part sees a :class:`~scr_ros.fit_context.FitContext`, not the builder.
- :mod:`scr_ros.mapfile` writes each part's :meth:`~MapPart.header` and tensors, and rebuilds
  it with :meth:`~MapPart.from_header`, checking shapes before it allocates anything.
- :class:`~scr_ros.relocalize.Relocalizer` passes the encoder features through every part's
  :meth:`~MapPart.transform` (in :func:`ordered` order) and asks the part that provides the
  signal a selector needs (``provides``) for it.

Adding a part: a module in this folder with a :class:`MapPart` subclass registered by
``@register_map_part("KEY")`` and its ``settings``; ``scr map --part KEY[=JSON]``, the mapping
node's ``map_parts`` and ``NAME_SETTING`` parameters, the docs table and the map header pick it
up, and nothing else changes.

A part may also give each image a *global encoding* (``gives_global_encoding``: GLACE's and
R-SCoRe's, :mod:`.global_encoding`), appended to every feature the head reads; at query time
it offers several hypotheses and the relocalizer keeps the pose with most inliers.

Shapes: features (N, C) -> transform -> (N, C') [+ encoding (D,) -> (N, C' + D)] -> head;
``signal(features (N, C'))`` -> (N,).
"""

from ..registry import import_parts
from .base import (
    MAP_PARTS,
    STAGES,
    FitContext,
    MapPart,
    TrainingBuffer,
    append_encoding,
    ordered,
    register_map_part,
    transform_features,
)

import_parts(__name__, __path__)

from .classifier import KeypointClassifierPart  # noqa: E402 - the built-in parts, for direct use
from .projection import PcaPart  # noqa: E402

__all__ = [
    "MAP_PARTS",
    "STAGES",
    "FitContext",
    "KeypointClassifierPart",
    "MapPart",
    "PcaPart",
    "TrainingBuffer",
    "append_encoding",
    "ordered",
    "register_map_part",
    "transform_features",
]

"""Image retrieval: one global descriptor per image from the encoder's dense features, and the
nearest mapping images of a query.

Global encodings (GLACE, R-SCoRe) need, at query time, the mapping images that look most like
the query. The descriptors that find them are registered here by name (``vlad``, ``gem``): an
:class:`ImageDescriptor` is fitted on mapping feature maps, turns a feature map (B, C, h, w)
into unit descriptors (B, dim), and is stored in the map with the part that uses it.
:func:`retrieve` ranks a database of descriptors by cosine similarity.

Adding a descriptor: a module in this folder with an :class:`ImageDescriptor` subclass
registered by ``@register_descriptor("NAME")``.
"""

from ..registry import import_parts
from .base import DESCRIPTORS, ImageDescriptor, build_descriptor, register_descriptor, retrieve

import_parts(__name__, __path__)

__all__ = ["DESCRIPTORS", "ImageDescriptor", "build_descriptor", "register_descriptor", "retrieve"]

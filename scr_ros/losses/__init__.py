"""Training losses for scene coordinate heads, and their registry.

A loss is built with the total number of training iterations (schedules depend on progress) and
called with the head's predictions and the batch that produced them.

Batch tensors (all on the training device, float32):

* ``coords``  (N, 3) predicted scene coordinates, world frame;
* ``pixels``  (N, 2) the pixel each feature was taken at, in the original image;
* ``T_cam_world`` (N, 3, 4) world-to-camera transforms of the samples' frames;
* ``intrinsics`` (N, 4) ``fx, fy, cx, cy`` of the samples' frames;
* ``depth`` (N,) optional: measured depth (metres, z) at the pixel, NaN where unknown. Only losses
  with ``uses_depth = True`` get it, and the MapBuilder loads depth images only for them.
* ``score`` (N,) optional: the head's discriminability ``s_hat`` (heads built with ``score=True``).
  With it, each sample's loss ``l`` becomes SS-DVR's ``s * l + alpha * ln(1 / s)`` with
  ``s = 1 + exp(s_hat)`` (eq. 12): the optimum ``s = alpha / l`` makes ``s`` large where the
  head can fit the point and small where it cannot (repetitive texture, flat regions).
"""

from ..registry import import_parts
from .base import LOSSES, build_loss, register_loss

import_parts(__name__, __path__)

from .ace import AceDepthLoss, AceReprojectionLoss  # noqa: E402 - the built-in losses, for direct use

__all__ = ["LOSSES", "AceDepthLoss", "AceReprojectionLoss", "build_loss", "register_loss"]

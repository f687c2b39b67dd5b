"""rosbag2 tooling: benchmark datasets -> bags, and the nodes' code paths run over bags offline.

- :mod:`.layout`   topic names, frame ids, QoS, the camera mount
- :mod:`.convert`  ``scr bag convert``: a dataset split -> rosbag2 (mcap or sqlite3)
- :mod:`.reader`   ``scr bag info`` and reading images / camera info / TF / ground truth
- :mod:`.tf`       an interpolating TF buffer for offline lookups
- :mod:`.mapping`  ``scr bag map``: the mapping node's recording path fed from a bag
- :mod:`.replay`   ``scr bag replay``: the relocalizer node's logic over a bag, scored
"""

from .convert import convert
from .layout import BagError, Frames, Topics
from .reader import BagSource

__all__ = ["BagError", "BagSource", "Frames", "Topics", "convert"]

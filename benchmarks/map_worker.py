#!/usr/bin/env python3
"""One mapping run for benchmarks, as ``torchrun`` starts it on each worker (or alone):

    torchrun --nproc_per_node 2 benchmarks/map_worker.py DATASET OUT.safetensors PRESET

The library call ``scr map`` makes (``pipeline.build_map``); rank 0 writes the map.
"""

from __future__ import annotations

import sys

from scr_ros import distributed
from scr_ros.pipeline import build_map


def main() -> int:
    dataset, out, preset = sys.argv[1:4]
    build_map(dataset, out, preset_name=preset)
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

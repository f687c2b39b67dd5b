"""Run by test_global_encodings under ``torchrun --nproc_per_node 2`` (and in-process as the one-worker
reference): fill a small training buffer of the tiny scene and train ACE's head for a few
iterations in fp32, then save the whole buffer (gathered from the workers in buffer order) and
the head's weights from rank 0."""

from __future__ import annotations

import sys

import numpy as np
import torch

from scr_ros import distributed
from scr_ros.datasets import open_dataset
from scr_ros.encoders import load_encoder
from scr_ros.heads import build_head
from scr_ros.mapping import MapBuilder
from scr_ros.mapping_config import preset


def run(out: str) -> None:
    torch.set_num_threads(1)
    frames = open_dataset("synthetic:tiny").frames("train")
    cfg = preset("test", buffer_size=20_000, precision="fp32", epochs=0.5)
    distributed.init_from_env(torch.device("cpu"))
    builder = MapBuilder(load_encoder(None), cfg, device="cpu")
    buf = builder.fill_buffer(frames)
    index = buf.global_index[: buf.size] if buf.global_index is not None else torch.arange(buf.size)
    whole = {
        name: distributed.gather_rows(getattr(buf, name)[: buf.size], index)
        for name in ("features", "pixels", "frame_index")
    }
    torch.manual_seed(0)
    head = build_head("ace", in_channels=64, width=256)
    head.set_mean(np.mean([f.pose[:3, 3] for f in frames], axis=0))
    iterations, _ = builder.train(head, buf)
    if distributed.is_main():
        torch.save({**whole, "passes": buf.passes, "iterations": iterations, "head": head.state_dict()}, out)
    distributed.shutdown()


if __name__ == "__main__":
    run(sys.argv[1])

#!/usr/bin/env python3
"""Can the mapping recipe triangulate when features are perfectly view-invariant?

    python benchmarks/oracle_features.py [--scene tiny] [--epochs 40] [--loss ace]

Fills the training buffer as `scr map` does, then replaces every feature with an "oracle": a
random Fourier encoding of the sample's true 3D point (from the scene's depth), identical in every
view. It trains the head with the chosen loss (RGB-only `ace` by default) and reports the median
3D error and the median ratio of predicted to true distance from the camera, on the buffer rows.
A recipe that triangulates gives errors of millimetres and a ratio of 1; comparing with the same
figures for a real encoder (--encoder dsift, no oracle) shows how much view invariance the encoder
lacks.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from scr_ros.datasets import open_dataset
from scr_ros.encoders import load_encoder
from scr_ros.geometry import backproject
from scr_ros.heads import build_head
from scr_ros.mapping import MapBuilder
from scr_ros.mapping_config import preset


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scene", default="tiny")
    p.add_argument("--epochs", type=float, default=40.0)
    p.add_argument("--buffer", type=int, default=120_000)
    p.add_argument("--loss", default="ace")
    p.add_argument("--encoder", default="dsift", help="used to fill the buffer; with --no-oracle its features are kept")
    p.add_argument("--no-oracle", action="store_true", help="train on the encoder's features instead (the comparison)")
    args = p.parse_args()
    torch.manual_seed(0)
    frames = open_dataset(f"synthetic:{args.scene}").frames("train")
    encoder = load_encoder(args.encoder)
    cfg = preset("test", buffer_size=args.buffer, epochs=args.epochs, loss=args.loss, loss_config={}, head_config={})
    builder = MapBuilder(encoder, cfg, device="cpu")
    buf = builder.fill_buffer(frames)
    px, fi = buf.pixels[: buf.size].numpy(), buf.frame_index[: buf.size].numpy()
    truth = np.zeros((buf.size, 3))
    for k in np.unique(fi):
        rows = fi == k
        depth = frames[k].load_depth()
        q = np.round(px[rows]).astype(int)
        truth[rows] = backproject(px[rows], depth[q[:, 1], q[:, 0]], frames[k].camera, frames[k].pose)
    channels = encoder.out_channels
    if not args.no_oracle:
        B = np.random.default_rng(0).normal(0.0, 4.0, (3, 192))
        buf.features = torch.tensor(np.concatenate([np.sin(truth @ B), np.cos(truth @ B)], 1), dtype=torch.float16)
        channels = 384
    head = build_head("ace", in_channels=channels)
    head.set_mean(np.mean([f.pose[:3, 3] for f in frames], axis=0))
    iterations, loss = builder.train(head, buf)
    with torch.no_grad():
        pred = head(buf.features[: buf.size].float()).numpy()
    centres = np.array([f.pose[:3, 3] for f in frames])[fi]
    err = np.linalg.norm(pred - truth, axis=1)
    ratio = np.linalg.norm(pred - centres, axis=1) / np.linalg.norm(truth - centres, axis=1)
    label = "oracle features" if not args.no_oracle else f"{args.encoder} features"
    print(
        f"{label}, loss {args.loss}, {iterations} iterations: median 3D error {np.median(err) * 100:.1f} cm, "
        f"median depth ratio {np.median(ratio):.3f} (1 = triangulated), final loss {loss:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

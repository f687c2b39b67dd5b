#!/usr/bin/env python3
"""Head training speed on this machine: iterations per second by width, depth, batch and precision.

    python benchmarks/head_speed.py [--channels 64] [--iterations 40] [--compile]

Times the mapping training step (buffer row gather, head forward under autocast, ACE loss,
backward, AdamW) on a synthetic 1.5M-row fp16 buffer, with the time split by part. It is what
`docs/cpu_recipe.md` cites for the choice of head and batch; `--compile` adds the same step under
`torch.compile`. Run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from scr_ros.device import cpu_has_fast_bf16, hardware_description
from scr_ros.heads import build_head
from scr_ros.losses import build_loss

CASES = [  # (width, residual blocks, batch, precision)
    (256, 1, 5120, "bf16"),
    (256, 1, 5120, "fp32"),
    (256, 1, 5120, "fp16"),
    (256, 1, 2560, "bf16"),
    (256, 1, 10240, "bf16"),
    (256, 0, 5120, "bf16"),
    (192, 1, 5120, "bf16"),
    (128, 1, 5120, "bf16"),
    (128, 1, 5120, "fp32"),
]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


def measure(
    channels: int, width: int, blocks: int, batch: int, precision: str, iterations: int, compile_step: bool = False
) -> dict:
    torch.manual_seed(0)
    rows, frames = 1_500_000, 50
    features = torch.randn(rows, channels).half()
    pixels = torch.rand(rows, 2) * 640
    frame_index = torch.randint(0, frames, (rows,))
    T_cam_world = torch.eye(4)[:3].repeat(frames, 1, 1)
    T_cam_world[:, 2, 3] = 2.0
    intrinsics = torch.tensor([[500.0, 500.0, 320.0, 240.0]]).repeat(frames, 1)
    head = build_head("ace", in_channels=channels, width=width, num_blocks=blocks)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    loss_fn = build_loss("ace", total_iterations=1000)
    dtype = DTYPES[precision]

    def forward(f, p, T, K, it):
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            coords, _ = head.predict(f)
        return loss_fn(coords.float(), p, T, K, it)[0]

    step = torch.compile(forward) if compile_step else forward
    parts = dict.fromkeys(("gather", "forward+loss", "backward", "optimizer"), 0.0)
    warmup = 5
    t_first = time.perf_counter()
    for it in range(warmup + iterations):
        if it == warmup:
            parts = dict.fromkeys(parts, 0.0)
            first_s = time.perf_counter() - t_first
            t_start = time.perf_counter()
        t0 = time.perf_counter()
        idx = torch.randint(0, rows, (batch,))
        fi = frame_index[idx]
        f, p, T, K = features[idx].float(), pixels[idx], T_cam_world[fi], intrinsics[fi]
        t1 = time.perf_counter()
        loss = step(f, p, T, K, it)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            parts[k] += dt
    total = time.perf_counter() - t_start
    return {
        "width": width,
        "blocks": blocks,
        "batch": batch,
        "precision": precision,
        "compiled": compile_step,
        "it_per_s": iterations / total,
        "samples_per_s": iterations * batch / total,
        "warmup_s": first_s,
        "ms": {k: 1000 * v / iterations for k, v in parts.items()},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--channels", type=int, default=64, help="encoder channels (64: xfeat, 384: dsift)")
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--compile", action="store_true", help="also time the step under torch.compile")
    args = p.parse_args()
    print(
        f"{hardware_description(torch.device('cpu'))}; native bf16: {cpu_has_fast_bf16()}; {args.channels} input "
        "channels"
    )
    print(
        "| width | blocks | batch | precision | compiled | it/s | samples/s | gather / forward+loss / backward / "
        "optimizer (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    cases = [(*c, False) for c in CASES] + ([(256, 1, 5120, "bf16", True)] if args.compile else [])
    for width, blocks, batch, precision, compiled in cases:
        iterations = (
            max(3, args.iterations // 10) if precision == "fp16" else args.iterations
        )  # fp16 on a CPU is very slow
        r = measure(args.channels, width, blocks, batch, precision, iterations, compiled)
        ms = " / ".join(f"{v:.1f}" for v in r["ms"].values())
        extra = f" (first 5 steps incl. compilation: {r['warmup_s']:.0f} s)" if compiled else ""
        print(
            f"| {width} | {blocks} | {batch} | {precision} | {'yes' if compiled else 'no'} | "
            f"{r['it_per_s']:.1f}{extra} | {r['samples_per_s']:,.0f} | {ms} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

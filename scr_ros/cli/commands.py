"""The ``scr`` commands other than ``scr bag``: each takes the parsed arguments, calls the
library and prints; :func:`scr_ros.cli.main` dispatches to them and turns their errors into
``scr: error:`` lines and exit statuses."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .. import distributed
from ..datasets import open_dataset
from ..demo import run_demo
from ..errors import MappingCancelled, ScrError
from ..evaluation.reports import (
    format_table,
    growth_line,
    mapping_poses_line,
    plot_results,
    skipped_frames_line,
    write_csv,
    write_poses,
    write_report,
)
from ..evaluation.rerun_log import require_rerun, write_localize_recording, write_map_recording
from ..fileio import check_output_file, check_output_folder
from ..pipeline import build_map, localize, write_mapping_trajectory
from ..pretrain import PretrainConfig, Pretrainer, command_line, write_model_card
from ..progress import ProgressBar
from .options import (
    overrides_from_options,
    relocalizer_config,
)


def cmd_map(args) -> int:
    t0 = time.perf_counter()
    for path, what in ((args.refined_poses, "trajectory file"), (args.rerun, "rerun recording")):
        if path is not None:
            check_output_file(path, what)
    if args.rerun is not None:
        require_rerun()
    scene_map = build_map(
        args.dataset,
        args.out,
        preset_name=args.preset,
        device=args.device,
        encoder_spec=args.encoder,
        head=args.head,
        split=args.split,
        seed=args.seed,
        precision=args.precision,
        loss=args.loss,
        depth=args.depth,
        head_config=args.head_config,
        drift=args.simulate_drift,
        add=args.add,
        add_odometry=args.add_odometry,
        add_split=args.add_split,
        add_truth=args.add_truth,
        growth=args.growth_config,
        **overrides_from_options(args),
    )
    if not distributed.is_main():
        return 0  # rank 0 of a torchrun launch writes the map and reports
    tr = scene_map.training
    growth = tr.get("growth")
    # A grown map's training record is its last fit's; the rounds before it are in growth_line.
    print(
        ("last fit's mapping time" if growth else "mapping time")
        + f": {tr['seconds']:.1f} s (buffer {tr['buffer_seconds']:.1f} s, "
        + (f"labels {tr['label_seconds']:.1f} s, " if "label_seconds" in tr else "")
        + f"training {tr['train_seconds']:.1f} s, "
        f"{tr['iterations']} iterations, final loss {tr['final_loss']:.3f}); total {time.perf_counter() - t0:.1f} s"
    )
    labels = tr.get("labels") or tr.get("partitions")
    if labels:
        print(
            "labels: scene points from "
            f"{'depth' if labels['label_source'] == 'depth' else 'a first ACE-style stage (RGB only)'}, "
            f"{labels['labelled_rows']:.0%} of the training rows, {labels['propagated_rows']:.0%} more by propagation"
        )
    if growth:
        print(growth_line(growth))
    poses_line = mapping_poses_line(tr)
    if poses_line:
        print(poses_line)
    skipped = skipped_frames_line(tr)
    if skipped:
        print(f"scr: warning: {skipped}", file=sys.stderr)
    print(f"map written to {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    if args.refined_poses is not None:
        print(f"mapping poses written to {write_mapping_trajectory(scene_map, args.refined_poses)} (TUM format)")
    if args.rerun is not None:
        truth = (
            np.stack([f.pose for f in open_dataset(args.dataset).frames(args.split)]) if args.simulate_drift else None
        )
        print(f"3D recording written to {write_map_recording(scene_map, args.rerun, truth)} (rerun FILE.rrd)")
    return 0


def cmd_localize(args) -> int:
    for path, what in (
        (args.report, "report"),
        (args.poses, "poses file"),
        (args.csv, "CSV file"),
        (args.plot, "plot"),
        (args.rerun, "rerun recording"),
    ):
        if path is not None:
            check_output_file(path, what)
    if args.rerun is not None:
        require_rerun()
    results, report, ds, scene_map = localize(
        args.map,
        args.dataset,
        args.split,
        args.device,
        args.encoder,
        config=relocalizer_config(args),
        pipelined=not args.sequential,
    )
    if args.rerun is not None:
        write_localize_recording(scene_map, ds, results, args.rerun)
    write_report(report, args.report)
    if args.poses:
        write_poses(results, args.poses)
    if args.csv:
        write_csv(results, args.csv)
    if args.plot:
        plot_results(results, args.plot, title=f"{args.dataset} ({args.split})")
    print(format_table(report))
    print(f"report written to {args.report}")
    return 0


def cmd_demo(args) -> int:
    out = check_output_folder(args.out, "demo output folder")
    report = run_demo(out, quick=args.quick, device=args.device)
    print(format_table(report))
    print(f"  {'total time'.ljust(16)}  {report['demo_seconds']:.1f} s")
    print(f"wrote {out}/: report.json, frames.csv, poses.txt, plot.png, map.safetensors, scene/")
    return 0


# Settings of `scr pretrain-encoder` that a checkpoint fixes; --resume refuses different ones.
_PRETRAIN_OPTIONS = ("init", "scenes", "steps", "seed", "frames_per_scene", "batch_scenes", "precision")


def cmd_pretrain_encoder(args) -> int:
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ScrError(f"--out must name a .safetensors file, got {out}")
    checkpoint = Path(args.checkpoint) if args.checkpoint else out.with_name(out.stem + ".ckpt.safetensors")
    for path, what in ((out, "weights file"), (out.with_suffix(".md"), "model card"), (checkpoint, "checkpoint")):
        check_output_file(path, what)
    bar = ProgressBar()
    given = {field: getattr(args, field) for field in _PRETRAIN_OPTIONS if getattr(args, field) is not None}
    if args.resume:
        trainer = Pretrainer.from_checkpoint(args.resume, args.device, progress=bar)
        clash = {k: (v, getattr(trainer.cfg, k)) for k, v in given.items() if getattr(trainer.cfg, k) != v}
        if clash:
            raise ScrError(
                "the checkpoint was made with other settings: "
                + ", ".join(f"--{k.replace('_', '-')} {old} (asked {new})" for k, (new, old) in clash.items())
                + "; drop those options to resume, or start a new run"
            )
        print(f"resuming {args.resume} at step {trainer.step} of {trainer.cfg.steps}", file=sys.stderr)
    else:
        cfg = PretrainConfig(**given)
        if args.checkpoint_every is not None:
            cfg.checkpoint_every = args.checkpoint_every
        trainer = Pretrainer(cfg, args.device, progress=bar)
    cfg = trainer.cfg
    print(
        f"pretraining {trainer.encoder.ARCHITECTURE} on {trainer.device} "
        f"(precision {str(trainer.amp_dtype).replace('torch.', '') if trainer.amp_dtype else 'fp32'}): {cfg.scenes} "
        "synthetic scenes x "
        f"{cfg.frames_per_scene} views, {cfg.steps} steps of {cfg.batch_scenes} scenes x {cfg.windows_per_scene} "
        f"windows; checkpoints to {checkpoint}",
        file=sys.stderr,
    )
    try:
        trainer.run(checkpoint)
    except (KeyboardInterrupt, MappingCancelled):
        bar.close()  # before the message, so the bar does not overwrite it
        print(f"scr: interrupted at step {trainer.step}; continue with --resume {checkpoint}", file=sys.stderr)
        return 130
    finally:
        bar.close()
    digest = trainer.encoder.save_weights(
        out, metadata={"steps": trainer.step, "seed": cfg.seed, "final_loss": trainer.final_loss()}
    )
    card = out.with_suffix(".md")
    write_model_card(card, trainer, digest, command_line())
    trainer.save_checkpoint(checkpoint)
    print(f"{trainer.step} steps in {trainer.elapsed_s / 60:.1f} min, final loss {trainer.final_loss():.3f} m")
    print(f"weights written to {out} (sha256 {digest[:12]}...), model card {card}")
    return 0

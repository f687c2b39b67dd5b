"""Argument groups shared by ``scr map`` / ``scr bag map`` and ``scr localize`` / ``scr bag replay``,
and their translation into library settings."""

from __future__ import annotations

import argparse
import textwrap

from .. import pipeline
from ..device import CPU_PRECISION_ENV, PRECISIONS
from ..errors import ScrError
from ..heads import HEADS
from ..losses import LOSSES
from ..map_parts import MAP_PARTS
from ..ransac import MAX_POSITION_STD
from ..relocalize import RelocalizerConfig
from ..selectors import SELECTORS, build_selector
from ..settings import Setting, cell, json_object, settings_help

DEVICES = ["auto", "cpu", "cuda"]
PRECISION_CHOICES = list(PRECISIONS)
PRECISION_HELP = (
    f"autocast precision (auto: fp16 on CUDA; on a CPU bf16 where it has native bf16, else fp32, "
    f"or what {CPU_PRECISION_ENV}=fp32|bf16 says)"
)


def add_method_arguments(p: argparse.ArgumentParser, depth: bool = True) -> None:
    """The paper methods a map can be built with (``scr map``, ``scr bag map``, which has its
    own ``--depth``)."""
    g = p.add_argument_group("methods from the papers (see docs/ablation.md for their measured effect)")
    g.add_argument(
        "--head", default=None, metavar="NAME", help=f"registered head: {', '.join(HEADS)} (default: the preset's, ace)"
    )
    g.add_argument(
        "--head-config",
        type=json_option,
        default=None,
        metavar="JSON",
        help="head settings on top of the preset's, e.g. '{\"clusters\": 50}' for GLACE's position decoder "
        "(default: the head's, some chosen from the mapping cameras)",
    )
    g.add_argument(
        "--loss", default=None, metavar="NAME", help=f"registered loss: {', '.join(LOSSES)} (default: the preset's)"
    )
    if depth:
        g.add_argument(
            "--depth",
            default=None,
            action=argparse.BooleanOptionalAction,
            help="--depth: train with the frames' depth as well (ace-depth loss, SS-DVR eq. 16-17); --no-depth: "
            "RGB only (ace loss); default: the preset's loss",
        )
    g.add_argument(
        "--score",
        action="store_true",
        help="head also predicts a discriminability score; localization drops low-score points (SS-DVR)",
    )
    g.add_argument(
        "--classifier",
        action="store_true",
        help="train a keypoint classifier that ranks correspondences for RANSAC (Matching Rates)",
    )
    g.add_argument(
        "--finetune",
        type=float,
        default=None,
        metavar="EPOCHS",
        help="with --classifier: fine-tune the head on the keypoints it accepts for EPOCHS epochs",
    )
    g.add_argument(
        "--pca",
        type=int,
        default=None,
        metavar="DIM",
        help="compact map: PCA of the encoder features to DIM channels, stored in the map (R-SCoRe uses 128)",
    )
    g.add_argument(
        "--refine-poses",
        default="none",
        choices=list(pipeline.REFINE_POSES),
        help="for poses from drifting odometry: graph (correct them by a pose graph of loop closures measured between "
        "the mapping frames, before training; needs depth), or refine them with the head (ACE0): mlp (one MLP maps "
        "every recorded pose to its correction), free (a correction per frame); none (the poses as recorded; default)",
    )
    g.add_argument(
        "--part",
        action="append",
        default=[],
        metavar="KEY[=JSON]",
        help=f"also fit the registered map part KEY ({', '.join(MAP_PARTS)}) with settings as a JSON object, e.g. "
        "--part 'partitions={\"structural\": 32}'; "
        "each part's settings are listed below",
    )
    # A group for its description only: the settings are given through --part (the parser is
    # made with RawDescriptionHelpFormatter, so each part keeps its own paragraph).
    p.add_argument_group(
        "map parts and their settings (--part KEY='{\"SETTING\": VALUE}'; default; range)",
        "\n".join(
            textwrap.fill(f"{key}: {settings_help(cls.settings)}.", 100, subsequent_indent="    ")
            for key, cls in MAP_PARTS.items()
        ),
    )


def json_option(text: str) -> dict:
    """argparse's ``type`` for an option that takes a JSON object."""
    return json_object(text, "the value", argparse.ArgumentTypeError)


def overrides_from_options(args) -> dict:
    """MappingConfig overrides from :func:`add_method_arguments`' options."""
    return pipeline.method_overrides(
        args.score, args.classifier, args.finetune or 0.0, args.pca or 0, parse_parts(args.part), args.refine_poses
    )


def parse_parts(specs: list[str]) -> dict:
    """``--part KEY`` / ``--part KEY=JSON`` options -> {key: settings}."""
    parts = {}
    for spec in specs:
        key, _, text = spec.partition("=")
        parts[key] = json_object(text, f"--part {spec}: the settings", ScrError)
    return parts


def _option(selector: str, setting: Setting) -> tuple[str, str]:
    """A selector setting's option and its argparse destination: ``--NAME-SETTING``."""
    flag = f"--{selector}-{setting.name}".replace("_", "-")
    return flag, flag[2:].replace("-", "_")


def add_selector_arguments(p: argparse.ArgumentParser) -> None:
    """How ``scr localize`` / ``scr bag replay`` pick the correspondences RANSAC sees: the
    selector, and an option for every setting every registered selector declares."""
    g = p.add_argument_group("correspondence selection")
    g.add_argument(
        "--selector",
        default="auto",
        choices=["auto", *SELECTORS],
        help="auto: the map's classifier, else its score, else all (default)",
    )
    g.add_argument(
        "--selector-config",
        type=json_option,
        default=None,
        metavar="JSON",
        help="selector settings as a JSON object: the chosen selector's, or selector name -> settings (with "
        "--selector auto)",
    )
    for name, cls in SELECTORS.items():
        for setting in cls.settings:
            flag, dest = _option(name, setting)
            rng = setting.allowed()
            g.add_argument(
                flag,
                dest=dest,
                default=None,
                metavar=setting.name.upper(),
                **_argument_type(setting),
                help=f"{name} selector: {setting.help} (default {cell(setting.default)}{'; ' + rng if rng else ''})",
            )
    g.add_argument(
        "--hypotheses",
        type=int,
        default=0,
        metavar="N",
        help="maps with a global encoding: localize with N encodings (the query's own and/or those of the N "
        "nearest mapping images) and keep the pose with most inliers (default: the map's)",
    )
    g.add_argument(
        "--query-height",
        type=int,
        default=0,
        metavar="PX",
        help="resize queries to this height before the encoder (default 0: the map's mapping height); lower is "
        "faster and less accurate",
    )
    g.add_argument(
        "--max-position-std",
        type=float,
        default=MAX_POSITION_STD,
        metavar="STD",
        help="refuse (as lost, with the reason) a fix whose published covariance has a position standard deviation "
        f"above STD, in the map's units: inliers on far content constrain the rotation, not the position "
        f"(default {MAX_POSITION_STD:g}; 0: no check; the node's max_position_std)",
    )


def _argument_type(setting: Setting) -> dict:
    if setting.type is bool:
        return {"action": argparse.BooleanOptionalAction}
    if setting.type is dict:
        return {"type": json_option}
    return {"type": setting.type}


def relocalizer_config(args) -> RelocalizerConfig:
    """The :class:`~scr_ros.relocalize.RelocalizerConfig` of :func:`add_selector_arguments`' options."""
    settings: dict[str, dict] = {}
    given = args.selector_config or {}
    if given and all(isinstance(v, dict) for v in given.values()) and set(given) <= set(SELECTORS):
        settings = {name: dict(v) for name, v in given.items()}
    elif given:
        if args.selector == "auto":
            raise ScrError(
                '--selector-config with --selector auto takes selector name -> settings, e.g. \'{"classifier": '
                '{"top_k": 500}}\''
            )
        settings[args.selector] = dict(given)
    for name, cls in SELECTORS.items():
        for setting in cls.settings:
            flag, dest = _option(name, setting)
            value = getattr(args, dest)
            if value is None:
                continue
            if settings.get(name, {}).get(setting.name, value) != value:
                raise ScrError(f"{flag} and --selector-config give {name}'s {setting.name} different values")
            settings.setdefault(name, {})[setting.name] = value
    for name, values in settings.items():
        build_selector(name, **values)  # refuse an unknown selector or a bad setting now, not at the first frame
    if args.max_position_std < 0:
        raise ScrError(f"--max-position-std {args.max_position_std:g}: give 0 (no check) or a positive std")
    return RelocalizerConfig(
        selector=args.selector,
        selector_settings=settings,
        hypotheses=args.hypotheses,
        query_height=args.query_height,
        max_position_std=args.max_position_std,
    )

"""Argument groups shared by ``scr map`` / ``scr bag map`` and ``scr localize`` / ``scr bag replay``,
and their translation into library settings."""

from __future__ import annotations

import argparse
import json

from .. import pipeline
from ..errors import ScrError
from ..heads import HEADS
from ..losses import LOSSES
from ..map_parts import MAP_PARTS
from ..relocalize import RelocalizerConfig
from ..selectors import SELECTORS

DEVICES = ["auto", "cpu", "cuda"]
PRECISION_CHOICES = ["auto", "fp32", "fp16", "bf16"]


def add_method_arguments(p: argparse.ArgumentParser, depth: bool = True) -> None:
    """The paper methods a map can be built with (``scr map``, ``scr bag map``, which has its
    own ``--depth``)."""
    g = p.add_argument_group("methods from the papers (see docs/ablation.md for their measured effect)")
    g.add_argument("--head", default=None, metavar="NAME", help=f"registered head: {', '.join(HEADS)} (default: the preset's, ace)")
    g.add_argument(
        "--head-config", type=_json_object, default=None, metavar="JSON",
        help='head settings on top of the preset\'s, e.g. \'{"clusters": 50}\' for GLACE\'s position decoder (default: the head\'s, some chosen from the mapping cameras)',
    )
    g.add_argument("--loss", default=None, metavar="NAME", help=f"registered loss: {', '.join(LOSSES)} (default: the preset's)")
    if depth:
        g.add_argument(
            "--depth", default=None, action=argparse.BooleanOptionalAction,
            help="--depth: train with the frames' depth as well (ace-depth loss, SS-DVR eq. 16-17); --no-depth: RGB only (ace loss); default: the preset's loss",
        )
    g.add_argument("--score", action="store_true", help="head also predicts a discriminability score; localization drops low-score points (SS-DVR)")
    g.add_argument("--classifier", action="store_true", help="train a keypoint classifier that ranks correspondences for RANSAC (Matching Rates)")
    g.add_argument("--finetune", type=float, default=None, metavar="EPOCHS", help="with --classifier: fine-tune the head on the keypoints it accepts for EPOCHS epochs")
    g.add_argument("--pca", type=int, default=None, metavar="DIM", help="compact map: PCA of the encoder features to DIM channels, stored in the map (R-SCoRe uses 128)")
    generic = sorted(key for key, cls in MAP_PARTS.items() if not cls.switch)
    g.add_argument(
        "--part", action="append", default=[], metavar="KEY[=JSON]",
        help=f"also fit the registered map part KEY, with settings as a JSON object ({', '.join(generic) or 'none registered besides the switches above'})",
    )


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text}")
    return value


def method_overrides(args) -> dict:
    """MappingConfig overrides from :func:`add_method_arguments`' options."""
    return pipeline.method_overrides(args.score, args.classifier, args.finetune or 0.0, args.pca or 0, parse_parts(args.part))


def parse_parts(specs: list[str]) -> dict:
    """``--part KEY`` / ``--part KEY=JSON`` options -> {key: settings}."""
    parts = {}
    for spec in specs:
        key, _, text = spec.partition("=")
        try:
            parts[key] = json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            raise ScrError(f"--part {spec}: the settings are not JSON ({exc})") from None
    return parts


def add_selector_arguments(p: argparse.ArgumentParser) -> None:
    """How ``scr localize`` / ``scr bag replay`` pick the correspondences RANSAC sees."""
    d = RelocalizerConfig()
    g = p.add_argument_group("correspondence selection")
    g.add_argument("--selector", default="auto", choices=["auto", *SELECTORS], help="auto: the map's classifier, else its score, else all (default)")
    g.add_argument("--score-percentile", type=float, default=d.score_percentile, metavar="PCT", help=f"score selector: drop points scoring below this percentile of the frame's scores (default {d.score_percentile}, SS-DVR's)")
    g.add_argument("--classifier-min-probability", type=float, default=d.classifier_min_probability, metavar="P", help=f"classifier selector: keep points with P(inlier) >= P (default {d.classifier_min_probability})")
    g.add_argument("--classifier-top-k", type=int, default=d.classifier_top_k, metavar="K", help=f"classifier selector: at most the K most likely (0: no cap; default {d.classifier_top_k})")
    g.add_argument("--classifier-grid", type=int, default=d.classifier_grid, metavar="G", help=f"classifier selector: spread the capped pick over GxG image cells (0: plain ranking; default {d.classifier_grid})")
    g.add_argument("--hypotheses", type=int, default=d.hypotheses, metavar="N", help="maps with a global encoding: localize with N encodings (the query's own and/or those of the N nearest mapping images) and keep the pose with most inliers (default: the map's)")


def relocalizer_config(args) -> RelocalizerConfig:
    """The :class:`~scr_ros.relocalize.RelocalizerConfig` of :func:`add_selector_arguments`' options."""
    return RelocalizerConfig(
        selector=args.selector, score_percentile=args.score_percentile,
        classifier_min_probability=args.classifier_min_probability, classifier_top_k=args.classifier_top_k,
        classifier_grid=args.classifier_grid, hypotheses=args.hypotheses,
    )

"""The library API: build a map from a dataset, localize a dataset's frames in a map.

This is the whole path in two calls, the one the CLI, the demo, the bag tool, the mapping node,
the benchmarks and the tests use::

    from scr_ros.pipeline import build_map, localize

    scene_map = build_map("synthetic:tiny", "tiny.safetensors", preset_name="test")
    results, report, dataset, scene_map = localize("tiny.safetensors", "synthetic:tiny", split="test")
    print(report["accuracy"]["5cm_5deg"])

``build_map``: frames -> :class:`~scr_ros.mapping.MapBuilder` (encoder -> training buffer ->
head training -> map point cloud) -> map file. ``localize``: map file -> per frame
:class:`~scr_ros.relocalize.Relocalizer` (encoder -> head -> selector -> PnP-RANSAC) -> pose
errors and a report. Both check what they can (output paths, dataset files, settings) before
the long work starts. What they say goes to :mod:`logging` (the ``scr_ros`` loggers: INFO for
what is being done, WARNING for what was skipped), and a progress bar shows on stderr when that
log shows INFO lines (:func:`~scr_ros.progress.console_progress`), as under the ``scr`` command.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__, distributed
from .datasets import Dataset, open_dataset
from .datasets.base import check_frames
from .device import resolve_device
from .encoders import load_encoder, load_encoder_for_map
from .errors import ScrError
from .evaluation.drift import DriftModel, drifted_frames, parse_drift
from .evaluation.localization import (
    SIMILAR_VIEW_DEG,
    localize_frames,
    mapping_truth,
    mapping_truth_report,
    nearest_view_distances,
    posed_frames,
    recorded_poses,
    summarize,
    view_distance_report,
)
from .evaluation.trajectory import trajectory_errors, write_tum
from .fileio import check_output_file
from .growth import GROWTH_SETTINGS, added_frames, grow, registration_errors
from .heads import HEADS
from .map_parts import MAP_PARTS
from .mapfile import SceneMap, load_map, not_a_map
from .mapping import MapBuilder
from .mapping_config import OTHER_HEADS, MappingConfig, preset
from .progress import Progress, ProgressBar, counter
from .relocalize import Relocalizer, RelocalizerConfig
from .settings import resolve

log = logging.getLogger(__name__)


def mapping_config(
    preset_name: str,
    head: str | None = None,
    loss: str | None = None,
    depth: bool | None = None,
    head_config: dict | None = None,
    **overrides,
) -> MappingConfig:
    """The preset's config with a head, loss or depth choice applied (``scr map --head/--loss/--depth``).

    Naming the preset's own head or loss keeps its tuned settings (e.g. the cpu preset's depth
    weight); another loss starts from its defaults, another head gets the preset's
    ``OTHER_HEADS`` settings (the CPU presets narrow every head to 256 channels). ``depth``
    True selects ``ace-depth`` (SS-DVR's beta = 0.1 unless the preset tunes it), False the
    RGB-only ``ace`` loss, None the preset's choice. ``head_config``: head settings on top of
    the preset's (``scr map --head-config``).
    ``overrides`` are :class:`~scr_ros.mapping_config.MappingConfig` fields.
    """
    cfg = preset(preset_name, **overrides)
    if head and head != cfg.head:
        HEADS.lookup(head)
        cfg.head, cfg.head_config = head, copy.deepcopy(OTHER_HEADS.get(preset_name, {}))
    if head_config:
        if not isinstance(head_config, dict):
            raise ScrError(f"head settings must be a JSON object, got {head_config!r}")
        cfg.head_config = {**cfg.head_config, **head_config}
    if loss and loss != cfg.loss:
        cfg.loss, cfg.loss_config = loss, {}
    if depth is not None:
        wanted = "ace-depth" if depth else "ace"
        if loss and loss != wanted:
            raise ScrError(f"--loss {loss} contradicts --{'' if depth else 'no-'}depth (which means loss {wanted})")
        if cfg.loss != wanted:
            cfg.loss, cfg.loss_config = wanted, {}
    return cfg


# --refine-poses / the mapping node's refine_poses: none, the pose-refinement part's modes, or
# graph: the pose-graph part (loop closures measured from the images, solved before training).
REFINE_POSES = ("none", "mlp", "free", "graph")


def refine_poses_part(mode: str) -> tuple[str, dict]:
    """The map part and settings a --refine-poses mode other than none switches on."""
    return ("pose-graph", {}) if mode == "graph" else ("pose-refinement", {"mode": mode})


# scr bag map --depth and the mapping node's depth_loss: what each choice means for mapping_config.
DEPTH_CHOICES = {"auto": None, "on": True, "off": False}


def method_overrides(
    score: bool = False,
    classifier: bool = False,
    finetune_epochs: float = 0.0,
    pca_dim: int = 0,
    parts: dict | None = None,
    refine_poses: str = "none",
) -> dict:
    """MappingConfig overrides for the papers' switches as ``scr map``, ``scr bag map`` and the
    mapping node name them, translated here and nowhere else: SS-DVR's ``score``, and the map
    parts to fit, ``parts`` (key -> settings: ``--part KEY[=JSON]``, the node's ``map_parts``)
    with the shorthands ``classifier`` (Matching Rates' keypoint classifier, ``finetune_epochs``
    of fine-tuning the head on what it accepts), ``pca_dim`` (R-SCoRe's PCA) and ``refine_poses``
    (``mlp`` or ``free``: the mapping poses refined with the head, ACE0; ``graph``: corrected by a
    pose graph of measured loop closures before training; ``none``: as recorded).
    A part's settings are checked against its declaration when the build starts."""
    for key, settings in (parts or {}).items():
        MAP_PARTS.lookup(key)
        if not isinstance(settings, dict):
            raise ScrError(f"the settings of map part {key!r} must be a JSON object, got {settings!r}")
    parts = {key: dict(settings) for key, settings in (parts or {}).items()}

    def shorthand(key: str, setting: str, value) -> None:
        given = parts.setdefault(key, {})
        if setting is not None:
            if given.get(setting, value) != value:
                raise ScrError(
                    f"map part {key}: {setting} is given twice with different values ({given[setting]!r} and {value!r})"
                )
            given[setting] = value

    if classifier:
        shorthand("classifier", "finetune_epochs" if finetune_epochs else None, float(finetune_epochs))
    elif finetune_epochs:
        raise ScrError("--finetune fine-tunes on the keypoint classifier's selection; add --classifier")
    if pca_dim:
        shorthand("pca", "dim", int(pca_dim))
    if refine_poses not in REFINE_POSES:
        raise ScrError(f"refine_poses must be one of {', '.join(REFINE_POSES)}, got {refine_poses!r}")
    if refine_poses != "none":
        key, settings = refine_poses_part(refine_poses)
        shorthand(key, None, None)
        for setting, value in settings.items():
            shorthand(key, setting, value)
    out: dict = {"parts": parts} if parts else {}
    if score:
        out["score"] = True
    return out


def open_dataset_reporting(spec: str, bar: ProgressBar) -> Dataset:
    """:func:`~scr_ros.datasets.open_dataset`, showing a synthetic scene's rendering on ``bar``
    (closed afterwards, so what the caller prints next starts on a line of its own)."""
    ds = open_dataset(spec, progress=counter(bar, "render"))
    bar.close()
    return ds


def build_map(
    dataset_spec: str,
    out: str | Path,
    *,
    preset_name: str = "cpu",
    device: str = "auto",
    encoder_spec: str | None = None,
    head: str | None = None,
    split: str = "train",
    seed: int = 0,
    precision: str = "auto",
    loss: str | None = None,
    progress=None,
    cancel=None,
    source: str | None = None,
    depth: bool | None = None,
    drift: str | DriftModel | None = None,
    add: Sequence[str] = (),
    add_odometry: Sequence[str] = (),
    add_split: str = "train",
    add_truth: bool = False,
    growth: dict | None = None,
    **overrides,
) -> SceneMap:
    """Map ``split`` of a dataset and save the map (atomically) to ``out``; returns the map.

    Args:
        dataset_spec: a dataset folder or ``synthetic:NAME``.
        out: the map file to write; refused up front when it cannot be written or is not a map.
        preset_name, head, loss, depth, overrides: the training settings (:func:`mapping_config`).
        encoder_spec: a registered encoder name or a weights file (default: the default encoder).
        progress: called with :class:`~scr_ros.progress.Progress` reports (default: a bar on
            stderr when the log shows INFO lines).
        cancel: anything with ``is_set()``; the build stops with MappingCancelled when it is set.
        source: where the frames came from, for the map header, when ``dataset_spec`` is an
            intermediate folder (``scr bag map``, the mapping node).
        add, add_odometry: datasets whose ``add_split`` frames grow the map (:mod:`scr_ros.growth`):
            ``add`` as images only, ``add_odometry`` with their poses as drifting odometry
            (relative motion only); ``add_truth``: score the registered poses against their
            datasets' own poses (read for that alone); ``growth``: the rounds' settings
            (``GROWTH_SETTINGS``).
        drift: map from the poses drifting odometry would have recorded instead of the
            dataset's (:mod:`scr_ros.evaluation.drift`: ``vio``, ``wheel`` or a spec); the true poses stay
            the dataset's, for scoring. The map records the model and how far the poses drifted.

    Started by ``torchrun --nproc_per_node N`` this is one of N workers training one head with
    DistributedDataParallel (:mod:`scr_ros.distributed`); rank 0 reports progress and writes
    the map, the others return the same map unsaved.
    """
    out = Path(out)
    check_output_file(out, "map", not_a_map)  # before minutes of work, not after
    distributed.init_from_env(resolve_device(device))
    bar = ProgressBar(False if progress is not None or not distributed.is_main() else None)
    ds = open_dataset_reporting(dataset_spec, bar)
    frames = ds.frames(split)
    check_frames(frames, f"{split} frames")
    cfg = mapping_config(preset_name, head, loss, depth, seed=seed, precision=precision, **overrides)
    drift_model = parse_drift(drift) if isinstance(drift, str) else drift
    if drift_model is not None:
        truth = np.stack([f.pose for f in frames])
        frames = drifted_frames(frames, drift_model)
        drifted = trajectory_errors(np.stack([f.pose for f in frames]), truth, align=False)
    if depth and not any(f.depth_path for f in frames):
        raise ScrError(f"--depth: the {split} frames of {dataset_spec} have no depth images")
    added = []
    for k, (spec, odometry) in enumerate([(a, False) for a in add] + [(a, True) for a in add_odometry]):
        more = open_dataset_reporting(spec, bar).frames(add_split)
        check_frames(more, f"{add_split} frames of {spec} (to add)")
        added += added_frames(more, odometry, sequence=k, keep_truth=add_truth)
    if added:
        resolve(GROWTH_SETTINGS, growth, "map growth")  # before any work
        if distributed.world_size() > 1:
            raise ScrError("growing a map (--add) runs in one process, not under torchrun")
    encoder = load_encoder(encoder_spec)
    builder = MapBuilder(encoder, cfg, device=device, progress=progress or bar, cancel=cancel)
    if distributed.is_main():
        extras = (["score"] if cfg.score else []) + [f"map part {key}" for key in builder.part_settings]
        log.info(
            f"mapping {len(frames)} frames of {ds.layout} dataset {ds.root} on {builder.device} "
            f"(preset {preset_name}, encoder {encoder.name}, head {cfg.head}, loss "
            f"{cfg.loss}{''.join(', ' + e for e in extras)}"
            f"{', depth from the frames' if builder.uses_depth and frames[0].depth_path else ''}); training buffer: "
            f"{cfg.buffer_size:,} samples, at most "
            f"{cfg.buffer_bytes(builder.row_channels, builder.uses_depth) / 2**30:.2f} GiB"
            f"{f' over {distributed.world_size()} workers' if distributed.world_size() > 1 else ''}"
        )
    try:
        if added:
            scene_map = grow(
                frames,
                added,
                encoder,
                cfg,
                growth,
                device=device,
                progress=progress or bar,
                cancel=cancel,
                preset_name=preset_name,
            )
            scene_map.training["growth"]["added_datasets"] = [*add, *add_odometry]
            scene_map.training["growth"]["odometry_datasets"] = list(add_odometry)
            scene_map.training["growth"]["add_split"] = add_split
            errors = registration_errors(scene_map, added)
            if errors is not None:
                # Scored against the added datasets' own poses, which the build never read.
                scene_map.training["growth"]["registered_pose_errors"] = errors
        else:
            scene_map = builder.build(frames, preset_name=preset_name)
    finally:
        bar.close()
    scene_map.training["dataset"] = source or str(dataset_spec)
    scene_map.training["split"] = split
    if drift_model is not None:
        scene_map.training["simulated_drift"] = {**drift_model.describe(), "pose_error": drifted}
    if distributed.is_main():
        scene_map.save(out)
    return scene_map


def localize(
    map_path: str | Path,
    dataset_spec: str,
    split: str = "test",
    device: str = "auto",
    encoder_spec: str | None = None,
    config: RelocalizerConfig | None = None,
    pipelined: bool = True,
):
    """Localize ``split`` of a dataset in the map at ``map_path``; ``pipelined``: each frame's
    RANSAC overlaps the next frame's encoder and head (the same poses, faster on two cores;
    :func:`~scr_ros.evaluation.localization.localize_frames`).

    Returns ``(results, report, dataset, scene_map)``: one
    :class:`~scr_ros.evaluation.localization.FrameResult` per readable frame, the summary report (accuracy at
    the standard thresholds, medians, timings, provenance), the opened dataset and the map.
    An unreadable query image is skipped and listed in the report, not fatal.
    """
    scene_map = load_map(map_path)
    encoder = load_encoder_for_map(scene_map.encoder, override=encoder_spec)
    bar = ProgressBar()
    ds = open_dataset_reporting(dataset_spec, bar)
    frames = ds.frames(split)
    reloc = Relocalizer(scene_map, encoder, device=device, config=config)
    t0 = time.perf_counter()
    skipped: list[dict] = []

    def skip(name: str, reason: str) -> None:
        # One unreadable query image must not cost the evaluation of all the others.
        skipped.append({"frame": name, "reason": reason})
        log.warning("frame %s skipped: %s", name, reason)

    try:
        results = localize_frames(
            reloc,
            frames,
            lambda i, n, r: bar(Progress("localize", i, n, time.perf_counter() - t0)),
            on_skip=skip,
            pipelined=pipelined,
        )
    finally:
        bar.close()
    if not results:
        raise ScrError(
            f"no {split} frame of {dataset_spec} could be read ({len(skipped)} skipped; first: "
            f"{skipped[0]['reason'] if skipped else 'none'})"
        )
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
        pipelined=bool(pipelined and reloc.splits_in_two),
        device=str(reloc.device),
        scr_ros_version=__version__,
    )
    truth = mapping_truth(scene_map, ds)
    # A grown map's added frames have no truth here: scoring and distance bands use the posed
    # ones, so a grown map's bands are those of the map it grew from.
    n = posed_frames(scene_map)
    if truth is not None:
        recorded = recorded_poses(scene_map)
        report.update(
            mapping_truth_report(
                results, scene_map.mapping_poses[:n], None if recorded is None else recorded[:n], truth
            )
        )
    # The mapping views in the queries' world: their truth where the dataset has it (drifted or
    # refined poses are in the odometry's frame), else the poses the map was built from.
    views = truth if truth is not None else (None if scene_map.mapping_poses is None else scene_map.mapping_poses[:n])
    if views is not None:
        distances = nearest_view_distances(np.stack([r.T_gt for r in results]), views)
        for r, d in zip(results, distances):
            r.nearest_view_m = float(d)
        report["by_view_distance"] = view_distance_report(results)
        report["by_view_distance_note"] = (
            "queries by the distance from their true camera centre to the nearest mapping camera whose optical axis "
            f"is within {SIMILAR_VIEW_DEG:.0f} deg of theirs ("
            + ("the mapping frames' truth" if truth is not None else "the poses the map was built from")
            + (", the frames it grew from, not the added ones" if "growth" in scene_map.training else "")
            + ")"
        )
    return results, report, ds, scene_map


def write_mapping_trajectory(scene_map: SceneMap, path: str | Path) -> Path:
    """The map's mapping poses (refined, when the build refined them) as a TUM trajectory;
    frames without a capture stamp get their index as the stamp (seconds)."""
    if scene_map.mapping_poses is None:
        raise ScrError("this map holds no mapping poses (maps before format 4 do not)")
    stamps = [s * 1e-9 if s is not None else float(i) for i, s in enumerate(scene_map.mapping_stamps_ns)]
    refined = "pose-refinement" in scene_map.parts
    comment = (
        f"mapping poses of {scene_map.training.get('dataset', 'a map')} ({'refined' if refined else 'as recorded'})"
    )
    return write_tum(path, stamps, scene_map.mapping_poses, comment=comment)

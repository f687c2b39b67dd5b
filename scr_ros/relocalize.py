"""Relocalizer: one image -> camera pose, via encoder, head and PnP-RANSAC.

    image --to_gray/resize--> encoder --features--> [PCA] [partition fusion] [+ global encoding] --> head
        --scene coordinates--> selector --> RANSAC --> pose

Every feature gives one 2D-3D correspondence: its pixel in the original image and the scene
coordinate the head predicts for it. A selector (``selectors``) may keep only the promising
ones: by the head's discriminability score, or by the map's keypoint classifier. A frame with
fewer than ``min_inliers`` RANSAC inliers is reported *lost* with a reason and no pose.

A map with a global encoding (GLACE, R-SCoRe) gives the head one of several encodings per
query (the query's own descriptor, or those of the mapping images it retrieves); each
hypothesis runs head, selector and RANSAC, and the pose with most inliers is kept.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from .device import autocast, autocast_dtype, resolve_device, synchronize
from .encoders import Encoder, load_encoder_for_map
from .errors import EncoderError, ScrError
from .geometry import PinholeCamera
from .imaging import apply_affine, invert_affine, prepare, to_gray
from .map_parts import append_encoding
from .mapfile import SceneMap
from .ransac import (
    COVARIANCE_INFLATION,
    MAX_POSITION_STD,
    MIN_STD_ROTATION_DEG,
    MIN_STD_TRANSLATION,
    RansacConfig,
    pose_covariance,
    position_std,
    published_covariance,
    refine_pose,
    solve_pnp,
)
from .selectors import auto_selector_name, build_selector


def threads_beside_ransac() -> int:
    """torch's CPU threads for a pipelined relocalizer (``scr localize``, the node, ``scr bag
    replay``): one fewer than now, at least one, since RANSAC takes a core of its own (on two
    cores, one torch thread measured 9.0 frames/s against 7.6 with both: docs/development.md)."""
    return max(1, torch.get_num_threads() - 1)


@contextmanager
def ransac_thread() -> Iterator[ThreadPoolExecutor]:
    """A one-worker executor for the second halves of pipelined frames (:meth:`Relocalizer.back`
    or :meth:`~scr_ros.node_logic.relocalizer_core.RelocalizerCore.finish`), with torch on
    :func:`threads_beside_ransac` threads while it lives and on as many as before afterwards.
    One worker keeps the frames finished in order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_beside_ransac())
    try:
        with ThreadPoolExecutor(max_workers=1) as back:
            yield back
    finally:
        torch.set_num_threads(threads)


@dataclass
class RelocalizerConfig:
    ransac: RansacConfig = field(default_factory=RansacConfig)
    min_inliers: int = 100  # a correct pose on a 640x480 frame typically has several hundred
    precision: str = "auto"  # autocast for encoder and head, as in mapping
    # Which correspondences RANSAC sees: auto (the map's classifier, else its score, else all)
    # or a registered selector's name; ``selector_settings``: selector name -> its settings
    # (each selector declares them; unset ones take its defaults).
    selector: str = "auto"
    selector_settings: dict[str, dict] = field(default_factory=dict)
    # Global-encoding hypotheses per query for maps that have a global encoding (0: the map's
    # own default; R-SCoRe's gains level off past 10).
    hypotheses: int = 0
    # Height (px) the query is resized to before the encoder; 0: the map's mapping height. Lower
    # is faster (fewer patches for encoder, head and RANSAC) at some accuracy: docs/cli.md.
    query_height: int = 0
    # A fix is refused (lost) when the largest position standard deviation of its published
    # covariance exceeds this (metres, map units; 0: no check): inliers on far content constrain
    # the rotation, not the position. The published covariance is the inlier-geometry one times
    # ``covariance_inflation`` plus the floors (ransac.py says why and how they were chosen).
    max_position_std: float = MAX_POSITION_STD
    covariance_inflation: float = COVARIANCE_INFLATION
    covariance_min_std_translation: float = MIN_STD_TRANSLATION
    covariance_min_std_rotation_deg: float = MIN_STD_ROTATION_DEG

    def __post_init__(self) -> None:
        if self.query_height and self.query_height < 64:
            raise ScrError(f"query_height {self.query_height}: give 0 (the map's height) or at least 64 pixels")


@dataclass
class Localization:
    """Result for one frame. ``T_world_cam`` is ``None`` when the frame is lost."""

    success: bool
    reason: str
    T_world_cam: np.ndarray | None
    num_inliers: int
    num_correspondences: int
    pixels: np.ndarray  # (N, 2) in the original image
    scene_coords: np.ndarray  # (N, 3) map frame
    inlier_mask: np.ndarray  # (N,) bool
    timings_ms: dict
    ransac_iterations: int = 0
    num_candidates: int = 0  # finite correspondences before selection (num_correspondences: after)
    selector: str = "all"
    ransac_inliers: int = 0  # RANSAC's inliers among the num_correspondences it saw
    hypothesis: int = 0  # which global-encoding hypothesis gave the result (0 for maps without)
    hypotheses: int = 1  # how many were tried
    # Maps whose head or a part classifies points (HSCNet's regions, SS-DVR's partitions): the
    # predicted label (N,) of each scene coordinate, and its name.
    labels: np.ndarray | None = None
    labels_name: str | None = None
    # The published covariance (6, 6) of T_world_cam (ROS order, world axes) and its largest
    # position standard deviation; None / NaN without a pose.
    covariance: np.ndarray | None = None
    position_std: float = float("nan")

    # num_inliers / inlier_mask count every finite correspondence that agrees with the final pose;
    # after a selector that is more than RANSAC saw, since the pose is refined on all of them.

    @property
    def inlier_ratio(self) -> float:
        """RANSAC's inlier ratio: inliers among the correspondences it was given."""
        return self.ransac_inliers / self.num_correspondences if self.num_correspondences else 0.0


@dataclass
class Front:
    """What the first half of a localization hands the second (:meth:`Relocalizer.front`): the
    correspondences (pixels (N, 2), scene coordinates (N, 3)), the selector's signals, the
    points' labels, the camera, the selector, the stage timings so far and the start time."""

    pixels: np.ndarray
    coords: np.ndarray
    signals: dict
    labels: np.ndarray | None
    camera: PinholeCamera
    selector: object
    timings: dict
    t_start: float


class Relocalizer:
    """Localizes images against one :class:`SceneMap`.

    Args:
        scene_map: the map (its encoder entry is checked against ``encoder``).
        encoder: the encoder; by default rebuilt from the map header and checksum-verified.
        device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
        config: RANSAC and acceptance settings.
    """

    def __init__(
        self,
        scene_map: SceneMap,
        encoder: Encoder | None = None,
        device="auto",
        config: RelocalizerConfig | None = None,
    ):
        self.map = scene_map
        self.config = config or RelocalizerConfig()
        self.device = resolve_device(device)
        if encoder is None:
            encoder = load_encoder_for_map(scene_map.encoder)
        elif encoder.checksum() != scene_map.encoder["sha256"]:
            raise EncoderError(
                f"encoder {encoder.name!r} does not match the map's encoder {scene_map.encoder['name']!r} "
                "(checksums differ)"
            )
        self.encoder = encoder.to(self.device).eval()
        self.head = scene_map.head.to(self.device).eval()
        self.parts = [part.to(self.device) for part in scene_map.parts.values()]
        self.encoding_part = next((p for p in self.parts if p.gives_global_encoding), None)
        # What names each point's label, if anything: the head's classes, else a part's.
        self.labels_name = self.head.labels_name or next((p.labels_name for p in self.parts if p.labels_name), None)
        # Per-correspondence signals this map gives selectors: the head's score, and the parts'.
        self.signals = ({"score"} if self.head.predicts_score else set()) | {
            p.provides for p in self.parts if p.provides
        }
        self.amp_dtype = autocast_dtype(self.device, self.config.precision)
        self.selector  # refuse a selector this map cannot serve now rather than at the first frame

    @property
    def selector(self):
        """The selector ``config`` asks for (built per call: the node may change the config live)."""
        name = self.config.selector
        if name == "auto":
            name = auto_selector_name(self.signals)
        selector = build_selector(name, **self.config.selector_settings.get(name, {}))
        if selector.needs is not None and selector.needs not in self.signals:
            raise ScrError(f"selector '{name}' needs {selector.requires}")
        return selector

    @torch.no_grad()
    def encode(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray, dict]:
        """image -> encoder features (1, C, h, w), the pixels (h*w, 2) they stand for in the
        original image, and timings (ms)."""
        t0 = time.perf_counter()
        img, A = prepare(to_gray(image), self.config.query_height or self.map.image_height)
        x = torch.from_numpy(np.ascontiguousarray(img))[None, None].to(self.device)
        t1 = time.perf_counter()
        with autocast(self.device, self.amp_dtype):
            feats = self.encoder(x)
        synchronize(self.device)
        t2 = time.perf_counter()
        pixels = apply_affine(invert_affine(A), self.encoder.feature_pixels(*feats.shape[2:]))
        return feats, pixels, {"preprocess": (t1 - t0) * 1e3, "encoder": (t2 - t1) * 1e3}

    @torch.no_grad()
    def encodings(self, feats: torch.Tensor) -> list[torch.Tensor | None]:
        """The global-encoding hypotheses for a query's features (``[None]`` for maps without)."""
        if self.encoding_part is None:
            return [None]
        return list(self.encoding_part.query_encodings(feats, self.config.hypotheses))

    def local_rows(self, feats: torch.Tensor) -> tuple[torch.Tensor, np.ndarray | None]:
        """Encoder features (1, C, h, w) -> the rows (h*w, C') the head reads before any global
        encoding (the map parts' transforms, e.g. the PCA), and the point labels of a part that
        gives them (else None)."""
        x, labels = feats[0].reshape(feats.shape[1], -1).T, None
        with autocast(self.device, self.amp_dtype):
            for part in self.parts:
                if part.labels_name and not self.head.labels_name:
                    labels = part.point_labels(x).cpu().numpy()
                x = part.transform(x)
        return x, labels

    @torch.no_grad()
    def predict(
        self, feats: torch.Tensor, encoding: torch.Tensor | None = None, selector=None, rows: tuple | None = None
    ) -> tuple[np.ndarray, dict, np.ndarray | None]:
        """Encoder features (1, C, h, w) -> scene coordinates (h*w, 3), the selector's signals and
        each point's label (None for maps without). ``rows``: ``local_rows(feats)`` when
        already computed (once per frame, however many hypotheses)."""
        x, labels = self.local_rows(feats) if rows is None else rows
        signals = {}
        with autocast(self.device, self.amp_dtype):
            coords, score, head_labels = self.head.predict_labels(append_encoding(x, encoding))
            needed = None if selector is None else selector.needs
            for part in self.parts:
                if needed is not None and part.provides == needed:
                    signals[needed] = part.signal(x)
        if score is not None:
            signals["score"] = score.float().cpu().numpy()
        if head_labels is not None:
            labels = head_labels.cpu().numpy()
        return coords.float().cpu().numpy().astype(np.float64), signals, labels

    @torch.no_grad()
    def correspondences(self, image: np.ndarray, selector=None) -> tuple[np.ndarray, np.ndarray, dict, dict]:
        """Dense 2D-3D correspondences for ``image`` (RGB uint8 or grey): pixels (N, 2) in the
        original image, scene coordinates (N, 3), the signals the selector needs (a dict with
        ``score`` (N,) when the head predicts one and the signal a map part provides when the
        selector needs it, e.g. the classifier's ``probability``; its time counts in the
        ``head`` stage) and stage timings (ms). ``selector``: the one that will pick from them
        (default: none, so no part computes a signal). With a global encoding: the first
        hypothesis's."""
        feats, pixels, timings = self.encode(image)
        t0 = time.perf_counter()
        coords, signals, _ = self.predict(feats, self.encodings(feats)[0], selector)
        timings["head"] = (time.perf_counter() - t0) * 1e3
        return pixels, coords, signals, timings

    @property
    def splits_in_two(self) -> bool:
        """Whether :meth:`localize` is :meth:`front` then :meth:`back`, so the two halves of
        consecutive frames can overlap (:func:`scr_ros.evaluation.localization.localize_frames`); not for maps
        that weigh several global-encoding hypotheses, which need RANSAC between them."""
        return self.encoding_part is None

    def front(self, image: np.ndarray, camera: PinholeCamera) -> Front:
        """The first half of :meth:`localize` (encoder and head), for maps that
        :attr:`splits_in_two`."""
        t_start = time.perf_counter()
        self._check_size(image, camera)
        selector = self.selector
        feats, pixels, timings = self.encode(image)
        t0 = time.perf_counter()
        coords, signals, labels = self.predict(feats, None, selector)
        timings["head"] = (time.perf_counter() - t0) * 1e3
        return Front(pixels, coords, signals, labels, camera, selector, timings, t_start)

    def back(self, front: Front) -> Localization:
        """The second half of :meth:`localize` (selector, RANSAC, acceptance)."""
        f = front
        result = self._solve(f.pixels, f.coords, f.signals, f.camera, f.selector, f.timings, f.t_start)
        result.hypothesis, result.hypotheses = 0, 1
        result.labels, result.labels_name = f.labels, self.labels_name
        return result

    @staticmethod
    def _check_size(image: np.ndarray, camera: PinholeCamera) -> None:
        h, w = np.asarray(image).shape[:2]
        if (w, h) != (camera.width, camera.height):
            raise ValueError(
                f"image is {w}x{h} but the intrinsics are for {camera.width}x{camera.height}; scale them with "
                "camera.scaled()"
            )

    def localize(self, image: np.ndarray, camera: PinholeCamera) -> Localization:
        """Estimate ``T_world_cam`` for ``image`` taken with ``camera`` (intrinsics of this image)."""
        if self.splits_in_two:
            return self.back(self.front(image, camera))
        t_start = time.perf_counter()
        self._check_size(image, camera)
        selector = self.selector
        feats, pixels, timings = self.encode(image)
        encodings = self.encodings(feats)
        rows = None
        best = None
        for k, encoding in enumerate(encodings):
            t0 = time.perf_counter()
            rows = self.local_rows(feats) if rows is None else rows  # once a frame; its time counts in "head"
            coords, signals, labels = self.predict(feats, encoding, selector, rows=rows)
            head_ms = (time.perf_counter() - t0) * 1e3
            result = self._solve(pixels, coords, signals, camera, selector, dict(timings, head=head_ms), t_start)
            result.hypothesis, result.hypotheses = k, len(encodings)
            result.labels, result.labels_name = labels, self.labels_name
            if best is not None:
                for stage in ("head", "select", "ransac", "refine"):
                    if stage in result.timings_ms or stage in best.timings_ms:
                        result.timings_ms[stage] = result.timings_ms.get(stage, 0.0) + best.timings_ms.get(stage, 0.0)
            if best is None or result.num_inliers > best.num_inliers:
                best = result
            else:
                best.timings_ms = result.timings_ms
        best.timings_ms["total"] = (time.perf_counter() - t_start) * 1e3
        return best

    def _solve(self, pixels, coords, signals, camera, selector, timings, t_start) -> Localization:
        """Selector, RANSAC and acceptance for one set of correspondences."""
        t0 = time.perf_counter()
        finite = np.flatnonzero(np.all(np.isfinite(coords), axis=1))
        picked = finite[selector(len(finite), pixels=pixels[finite], **{k: v[finite] for k, v in signals.items()})]
        t1 = time.perf_counter()
        result = solve_pnp(pixels[picked], coords[picked], camera, self.config.ransac)
        t2 = time.perf_counter()
        inliers = np.zeros(len(pixels), bool)
        n = len(picked)
        counts = {"num_candidates": len(finite), "selector": selector.name}
        if result is not None:
            counts["ransac_inliers"] = result.num_inliers
            T, inliers[picked[result.inlier_mask]] = result.T_world_cam, True
            if n < len(finite):
                # RANSAC saw a selection; the final pose uses every correspondence that agrees.
                T, mask = refine_pose(pixels[finite], coords[finite], T, camera, self.config.ransac)
                inliers[:] = False
                inliers[finite[mask]] = True
        t3 = time.perf_counter()
        timings["select"], timings["ransac"] = (t1 - t0) * 1e3, (t2 - t1) * 1e3
        if n < len(finite):
            timings["refine"] = (t3 - t2) * 1e3
        timings["total"] = (t3 - t_start) * 1e3
        if result is None:
            return Localization(False, "RANSAC found no pose", None, 0, n, pixels, coords, inliers, timings, **counts)
        num_inliers = int(inliers.sum())
        covariance, std = None, float("nan")
        if num_inliers >= max(self.config.min_inliers, 4):
            c = self.config
            covariance = published_covariance(
                pose_covariance(T, pixels[inliers], coords[inliers], camera),
                c.covariance_inflation,
                c.covariance_min_std_translation,
                np.radians(c.covariance_min_std_rotation_deg),
            )
            std = position_std(covariance)
            counts.update(covariance=covariance, position_std=std)
        reason = ""
        if num_inliers < self.config.min_inliers:
            reason = f"only {num_inliers} inliers (< {self.config.min_inliers})"
        elif self.config.max_position_std > 0 and not std <= self.config.max_position_std:
            reason = (
                f"position not constrained: the inliers do not constrain the position (std {std:.2f} > "
                f"max_position_std {self.config.max_position_std:g}; far content?)"
            )
        return Localization(
            not reason,
            reason,
            None if reason else T,
            num_inliers,
            n,
            pixels,
            coords,
            inliers,
            timings,
            result.iterations,
            **counts,
        )

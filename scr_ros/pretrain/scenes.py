"""Domain randomization: random rooms, lights and photometric changes for pretraining."""

from __future__ import annotations

import cv2
import numpy as np

from ..renderer import Light, SceneConfig
from ..renderer.textures import EXTRA_FAMILIES, FAMILIES
from .config import SCENE_SEED_BASE

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
    "photometric": {
        "gain": [0.55, 1.6],
        "gamma": [0.65, 1.5],
        "blur_sigma_px": [0.0, 1.6],
        "blur_probability": 0.5,
        "noise_std": [0.0, 0.03],
        "jpeg_quality": [30, 90],
        "jpeg_probability": 0.3,
    },
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
    return Light(
        pos,
        tuple(float(c) for c in rng.uniform(*L["colour_channel"], size=3)),
        float(rng.uniform(*L["ambient"])),
        float(rng.uniform(*L["intensity"])),
    )


def photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, gamma, blur, noise and JPEG artefacts on a grey image in [0, 1] (float32)."""
    P = RANDOMIZATION["photometric"]
    img = np.clip(img * rng.uniform(*P["gain"]), 0.0, 1.0) ** rng.uniform(*P["gamma"])
    if rng.random() < P["blur_probability"]:
        img = cv2.GaussianBlur(img, (0, 0), max(0.05, rng.uniform(*P["blur_sigma_px"])))
    img = img + rng.standard_normal(img.shape).astype(np.float32) * rng.uniform(*P["noise_std"])
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    if rng.random() < P["jpeg_probability"]:
        ok, enc = cv2.imencode(
            ".jpg", (img * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*P["jpeg_quality"]))]
        )
        img = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    return img

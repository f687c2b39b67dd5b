"""Named synthetic scenes (``synthetic:NAME``), rendered once into a posed folder and cached.

The folder has ``train/`` (the mapping trajectory) and ``test/`` (the query trajectory) and a
``scene.json`` with the generating config. Rendering goes to a temporary folder that is renamed
into place when complete, so an interrupted render is never mistaken for a scene.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..errors import DatasetError
from ..fileio import atomic_write_json
from ..renderer import RENDERER_VERSION, IntegratedConfig, SceneConfig, integrated_rooms
from ..renderer.textures import FAMILIES
from .base import Dataset
from .posed_folder import open_posed_folder, write_frame, write_intrinsics, write_mount

_TINY = SceneConfig(
    seed=4,
    room_size=(3.5, 3.0, 2.5),
    width=320,
    height=240,
    focal=262.5,
    mapping_frames=120,
    query_frames=30,
    num_objects=6,
    texel_density=160.0,
)

SCENES: dict[str, SceneConfig | IntegratedConfig] = {
    # The demo scene: a 6 x 5 x 2.8 m room, 12 pieces of furniture.
    "default": SceneConfig(),
    "lighting": SceneConfig(seed=1, lighting_change=True),
    "repetitive": SceneConfig(seed=2, repetitive_texture=True),
    "large": SceneConfig(seed=3, room_size=(10.0, 8.0, 3.0), num_objects=24, mapping_frames=600, query_frames=150),
    # Small and fast: the end-to-end tests' fixture and `scr demo --quick` (a 3.5 x 3 m room at 320x240).
    "tiny": _TINY,
    # Four tiny-sized rooms in one map (like 12-Scenes' i19): rooms 0 and 1 have the same walls,
    # rooms 0 and 2 the same furniture, room 3 is unlike the others; 100 mapping and 25 query
    # frames each. Local appearance repeats across rooms, so a head without global context
    # has to average their coordinates.
    # A wheeled robot in the demo-sized room: a camera at 0.55 m on a base driving two laps, the
    # query lap 0.3 m from both (scr bag convert writes its odometry and camera mount).
    "robot": SceneConfig(seed=5, path="robot"),
    "robot-tiny": SceneConfig(
        seed=6,
        path="robot",
        room_size=(4.5, 4.0, 2.5),
        width=320,
        height=240,
        focal=262.5,
        mapping_frames=160,
        query_frames=40,
        num_objects=8,
        texel_density=160.0,
    ),
    # Views away from the mapped path (issue 29's benchmark): the demo's mapping loops with queries
    # 0.2 to 1 m and more off them, at other heights and tilts; the robot's laps with a query lap
    # weaving 0.6 m outside and inside them.
    "away": SceneConfig(query_path="away"),
    "robot-away": SceneConfig(seed=5, path="robot", query_path="away"),
    # An open site: a hand-held walk along a rooftop railing (the close foreground), buildings 20
    # to 40 m away and the sky (no depth) behind them; the query walk runs 0.3 m behind the mapping
    # walks ("rooftop-away": 0.3 to 1.5 m behind, higher and lower).
    "rooftop": SceneConfig(
        seed=8, path="rooftop", room_size=(60.0, 50.0, 22.0), mapping_frames=300, query_frames=80, num_objects=0
    ),
    "rooftop-away": SceneConfig(
        seed=8,
        path="rooftop",
        query_path="away",
        room_size=(60.0, 50.0, 22.0),
        mapping_frames=300,
        query_frames=80,
        num_objects=0,
    ),
    "integrated": IntegratedConfig(
        integrated_rooms(
            dataclasses.replace(_TINY, mapping_frames=100, query_frames=25),
            seeds=[20, 21, 22, 23],
            wall_seeds=[100, 100, None, None],
            furniture_seeds=[200, None, 200, None],
        )
    ),
}


def cache_root() -> Path:
    env = os.environ.get("SCR_ROS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scr_ros"


def _key_dict(config: SceneConfig) -> dict:
    config_dict = config.to_dict()
    # Fields added later are left out at their defaults, so older scenes keep their key.
    if tuple(config_dict["texture_families"]) == FAMILIES:
        del config_dict["texture_families"]
    for name in ("wall_seed", "furniture_seed"):
        if config_dict[name] is None:
            del config_dict[name]
    for name, default in (
        ("path", "walk"),
        ("camera_height", 0.55),
        ("camera_tilt_deg", 5.0),
        ("query_offset", 0.3),
        ("query_path", "between"),
    ):
        if config_dict.get(name) == default:
            del config_dict[name]
    return config_dict


def config_digest(config: SceneConfig | IntegratedConfig) -> str:
    """Cache key: the config and the renderer version (a renderer change must not reuse old pixels)."""
    if isinstance(config, IntegratedConfig):
        config_dict = {"rooms": [_key_dict(r) for r in config.rooms], "gap": config.gap}
    else:
        config_dict = _key_dict(config)
    key = {"renderer_version": RENDERER_VERSION, "config": config_dict}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def render_to_folder(
    config: SceneConfig | IntegratedConfig,
    out: Path,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> Path:
    """Render the mapping and query trajectories of ``config`` into the posed folder ``out``."""
    out = Path(out)
    if out.exists():
        raise DatasetError(f"{out} already exists; remove it or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        scene = config.build()
        jobs = [("train", i, False) for i in range(config.mapping_frames)] + [
            ("test", i, True) for i in range(config.query_frames)
        ]
        for split in ("train", "test"):
            write_intrinsics(tmp / split, scene.camera)
        mount = config.base_to_camera() if hasattr(config, "base_to_camera") else None
        if mount is not None:
            write_mount(tmp, mount)

        def one(job):
            split, i, query = job
            rgb, depth, T = scene.render_frame(i, query)
            write_frame(tmp / split, f"{i:06d}", rgb, T, depth)

        with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
            for done, _ in enumerate(pool.map(one, jobs), 1):
                if progress:
                    progress(done, len(jobs))
        atomic_write_json(
            tmp / "scene.json",
            {"generator": "scr_ros.renderer", "renderer_version": RENDERER_VERSION, "config": config.to_dict()},
        )
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def resolve_scene(name: str) -> SceneConfig | IntegratedConfig:
    if name not in SCENES:
        raise DatasetError(f"unknown synthetic scene {name!r}; available: {', '.join(SCENES)}")
    return SCENES[name]


def open_synthetic(
    name_or_config: str | SceneConfig | IntegratedConfig, cache: Path | None = None, progress=None
) -> Dataset:
    """The dataset of a named scene (or a config), rendering it into the cache on first use."""
    config = resolve_scene(name_or_config) if isinstance(name_or_config, str) else name_or_config
    label = name_or_config if isinstance(name_or_config, str) else "custom"
    folder = (cache or cache_root()) / "synthetic" / f"{label}-{config_digest(config)}"
    if not folder.is_dir():
        try:
            render_to_folder(config, folder, progress)
        except DatasetError:
            if not folder.is_dir():  # another process may have rendered it meanwhile
                raise
    ds = open_posed_folder(folder)
    ds.layout, ds.description = "synthetic", f"synthetic scene {label!r} ({config.to_dict()})"
    return ds

"""``scr demo``: render the bundled synthetic scene, map it, relocalize its query trajectory.

Everything lands in one folder: ``scene/`` (the rendered posed folder), ``map.safetensors``,
``report.json`` (with ``mapping_seconds``), ``frames.csv``, ``poses.txt`` and ``plot.png``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .datasets.synthetic import SCENES, render_to_folder
from .errors import ScrError
from .evaluation.reports import plot_results, write_csv, write_poses, write_report
from .pipeline import build_map, localize
from .progress import ProgressBar, counter
from .renderer import RENDERER_VERSION

# The default demo: the 640x480 'default' room with the cpu preset, sized to finish in under
# ten minutes on two CPU cores. --quick: the small 'tiny' room with the test preset.
DEMO = {"scene": "default", "preset": "cpu"}
QUICK = {"scene": "tiny", "preset": "test"}

log = logging.getLogger(__name__)


def run_demo(out: Path, quick: bool = False, device: str = "auto") -> dict:
    settings = QUICK if quick else DEMO
    config = SCENES[settings["scene"]]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scene_dir = out / "scene"
    t0 = time.perf_counter()
    if scene_dir.exists():
        try:
            meta = json.loads((scene_dir / "scene.json").read_text())
            existing = (meta["config"], meta.get("renderer_version"))
        except (OSError, ValueError, KeyError):
            existing = None
        if existing != (json.loads(json.dumps(config.to_dict())), RENDERER_VERSION):
            raise ScrError(f"{scene_dir} holds a different or incomplete scene; remove it or choose another --out")
        say = f"reusing the rendered scene in {scene_dir}"
    else:
        bar = ProgressBar()
        t = time.perf_counter()
        render_to_folder(config, scene_dir, counter(bar, "render"))
        bar.close()
        size = f"{config.width}x{config.height}"
        say = (
            f"rendered {config.mapping_frames} mapping + {config.query_frames} query frames ({size}) "
            f"in {time.perf_counter() - t:.1f} s"
        )
    log.info(f"[1/3] scene '{settings['scene']}': {say}")
    log.info(f"[2/3] mapping with preset '{settings['preset']}'")
    map_path = out / "map.safetensors"
    scene_map = build_map(str(scene_dir), map_path, preset_name=settings["preset"], device=device)
    log.info(f"[3/3] relocalizing {config.query_frames} query frames")
    results, report, ds, _ = localize(map_path, str(scene_dir), "test", device)
    report["mapping_seconds"] = scene_map.training["seconds"]
    report["demo_seconds"] = round(time.perf_counter() - t0, 1)
    report["scene"] = settings["scene"]
    report["preset"] = settings["preset"]
    write_report(report, out / "report.json")
    write_csv(results, out / "frames.csv")
    write_poses(results, out / "poses.txt")
    plot_results(
        results,
        out / "plot.png",
        mapping_poses=[f.pose for f in ds.frames("train")],
        title=f"scr demo: scene '{settings['scene']}'",
    )
    return report

"""A 3D recording a person can open, with the Rerun viewer (``rerun FILE.rrd``).

``scr map``, ``scr localize`` and ``scr bag replay`` take ``--rerun FILE.rrd`` and write:

- ``map/cloud``: the map's point cloud, coloured as the images saw it;
- ``mapping/recorded``, ``mapping/refined``, ``mapping/truth``: the mapping trajectory as it was
  recorded, as the build refined it, and the truth where the dataset has it (line strips);
- ``queries/estimated`` and ``queries/truth``: the queries' estimated and true positions, the
  estimates labelled with their inlier counts, each joined to its truth by a line.

Everything is in the map frame (the ``map`` of REP-105). ``rerun-sdk`` is an optional
dependency (``pip install 'scr_ros[viz]'``); without it the option is refused before any work
starts. The file is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ScrError
from ..fileio import current_umask
from .localization import mapping_truth, recorded_poses

COLOURS = {
    "recorded": (230, 120, 40),
    "refined": (40, 160, 230),
    "truth": (60, 200, 60),
    "estimated": (220, 40, 220),
    "lost": (120, 120, 120),
}


def require_rerun():
    """The rerun module, or a ScrError saying how to install it."""
    try:
        import rerun
    except ImportError:
        raise ScrError(
            "--rerun needs the rerun-sdk package: pip install 'scr_ros[viz]' (or pip install rerun-sdk)"
        ) from None
    return rerun


class RerunFile:
    """A recording written to ``path`` when the ``with`` block ends without an error (a failed one
    leaves no file)."""

    def __init__(self, path: str | Path, application: str = "scr_ros") -> None:
        self.rr = require_rerun()
        self.path = Path(path)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".rrd", dir=self.path.parent if str(self.path.parent) else "."
        )
        os.close(fd)
        self.tmp = Path(tmp)
        self.rec = self.rr.RecordingStream(application)
        self.rec.save(str(self.tmp))
        self.rec.log("/", self.rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)

    def __enter__(self) -> "RerunFile":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()

    def cloud(self, xyz: np.ndarray | None, rgb: np.ndarray | None) -> None:
        if xyz is not None and len(xyz):
            self.rec.log(
                "map/cloud", self.rr.Points3D(np.asarray(xyz, np.float32), colors=rgb, radii=0.01), static=True
            )

    def trajectory(self, name: str, poses: np.ndarray | None) -> None:
        """A camera trajectory (N, 4, 4) as a line strip ``mapping/NAME``."""
        if poses is None or not len(poses):
            return
        positions = np.asarray(poses)[:, :3, 3].astype(np.float32)
        colour = COLOURS.get(name, (200, 200, 200))
        self.rec.log(f"mapping/{name}", self.rr.LineStrips3D([positions], colors=[colour], radii=0.005), static=True)

    def queries(
        self,
        names: Sequence[str],
        estimated: Sequence[np.ndarray | None],
        truth: Sequence[np.ndarray | None],
        inliers: Sequence[int],
    ) -> None:
        """Query estimates (positions, labelled with name and inliers) and their truths, joined."""
        est = [(n, T, k) for n, T, k in zip(names, estimated, inliers) if T is not None]
        if est:
            self.rec.log(
                "queries/estimated",
                self.rr.Points3D(
                    np.stack([T[:3, 3] for _, T, _ in est]).astype(np.float32),
                    colors=[COLOURS["estimated"]] * len(est),
                    labels=[f"{n}: {k} inliers" for n, _, k in est],
                    radii=0.02,
                ),
                static=True,
            )
        known = [T for T in truth if T is not None]
        if known:
            self.rec.log(
                "queries/truth",
                self.rr.Points3D(
                    np.stack([T[:3, 3] for T in known]).astype(np.float32),
                    colors=[COLOURS["truth"]] * len(known),
                    radii=0.02,
                ),
                static=True,
            )
        pairs = [
            np.stack([E[:3, 3], G[:3, 3]]).astype(np.float32)
            for E, G in zip(estimated, truth)
            if E is not None and G is not None
        ]
        if pairs:
            self.rec.log(
                "queries/error", self.rr.LineStrips3D(pairs, colors=[COLOURS["lost"]], radii=0.003), static=True
            )

    def close(self) -> Path:
        self.rec.flush()  # blocks until written (the default in every rerun-sdk since 0.20)
        self.rr.disconnect(self.rec)
        os.chmod(self.tmp, 0o666 & ~current_umask())  # as any other output (mkstemp made it 0600)
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        try:
            self.rr.disconnect(self.rec)
        finally:
            self.tmp.unlink(missing_ok=True)


def write_map_recording(scene_map, path: str | Path, truth: np.ndarray | None = None) -> Path:
    """``scr map --rerun``: the map cloud and the mapping trajectory (recorded, refined, and
    ``truth`` (F, 4, 4) when known, e.g. with simulated drift)."""
    with RerunFile(path) as out:
        _log_map(out, scene_map, truth)
    return out.path


def _log_map(out: "RerunFile", scene_map, truth: np.ndarray | None) -> None:
    """The map cloud and the mapping trajectory: as recorded, as refined or corrected by the pose
    graph (when it was) and true."""
    recorded = recorded_poses(scene_map)
    out.cloud(scene_map.cloud_xyz, scene_map.cloud_rgb)
    if recorded is not None:
        out.trajectory("recorded", recorded)
        out.trajectory("refined", scene_map.mapping_poses)
    else:
        out.trajectory("recorded", scene_map.mapping_poses)
    out.trajectory("truth", truth)


def write_localize_recording(scene_map, dataset, results, path: str | Path) -> Path:
    """``scr localize --rerun``: the map's recording plus the queries, estimated and true."""
    return _write_with_queries(scene_map, mapping_truth(scene_map, dataset), results, path)


def _write_with_queries(scene_map, truth, results, path) -> Path:
    with RerunFile(path) as out:
        _log_map(out, scene_map, truth)
        out.queries(
            [r.name for r in results],
            [r.T_est for r in results],
            [r.T_gt for r in results],
            [r.num_inliers for r in results],
        )
    return out.path


def write_replay_recording(scene_map, results, path: str | Path) -> Path:
    """``scr bag replay --rerun``: the map's recording plus the replayed frames (the bag's ground
    truth as their truth)."""
    return _write_with_queries(scene_map, None, results, path)

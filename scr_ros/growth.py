"""Growing a map into views it was not built from (ACE0's loop, Brachmann et al., ECCV 2024).

A scene-coordinate map interpolates between its mapping views and extrapolates poorly. Frames a
robot recorded beyond them (images, and maybe drifting odometry) can extend it, a ring at a time:

1. **Round 0** maps the frames that come with poses (short training: ``early_share`` of the
   preset's buffer, so of its time).
2. **Register.** The current map localizes every added frame not yet registered. A fix counts
   when it has ``min_inliers`` inliers, its position is constrained (``max_position_std``), and
   its neighbours in the added sequence support it and do not contradict it (:func:`decide`):
   with odometry, the relative motion to each neighbour with a pose must match the odometry's;
   without, a neighbour k frames away must be within k times the sequence's typical step (times
   ``neighbour_steps``): the median step between its consecutive frames with poses, never below
   the posed frames' (:func:`sequence_motion`; every other frame of a walk, or a recording at a
   lower frame rate, moves farther per frame than the posed frames do). With odometry, an added
   frame the map cannot localize yet (but that did not localize elsewhere) takes the pose
   odometry carries from a localized frame at most ``odometry_carry_frames`` away.
3. **Refit** on the posed and all registered frames, the registered frames' poses refined with
   the head (the ``pose-refinement`` part, its ``fixed_frames`` holding the posed frames), again
   short; its refined poses become the registered frames' estimates.
4. Repeat 2-3 until a round registers nothing new or ``rounds`` rounds ran; the last fit uses the
   preset's full training.

Added frames' own poses are never read here: :func:`added_frames` replaces them with NaN (a use
would show at once) and keeps them aside only for scoring (``scr map --add-truth``). The map
records the added frames (``mapping_frames`` from ``training["growth"]["posed_frames"]`` on,
their poses in ``mapping_poses``), how each pose was obtained and in which round, and each
round's figures.

Shapes: poses are camera-to-world (4, 4) float64 in the posed frames' world.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .datasets.base import Frame
from .encoders import Encoder
from .errors import MappingCancelled, ScrError
from .evaluation.metrics import pose_error
from .mapfile import SceneMap
from .mapping import MapBuilder
from .mapping_config import MappingConfig
from .progress import Progress
from .ransac import MAX_POSITION_STD
from .relocalize import Relocalizer, RelocalizerConfig
from .settings import Setting, resolve

log = logging.getLogger(__name__)

GROWTH_SETTINGS = (
    Setting("rounds", 3, "registration rounds at most (each registers, then refits)", 1, 20),
    Setting(
        "early_share",
        0.2,
        "share of the preset's training buffer (and so of its time) the fits before the last one use",
        0.05,
        1.0,
    ),
    # ACE0's registration threshold (its ``registration_confidence``). On `away` (issue 40) 300
    # let in three wrong registrations at 301-406 inliers; the right ones had 640-2120.
    Setting("min_inliers", 500, "inliers an added frame's fix needs to register", 10, 100_000),
    Setting(
        "max_position_std",
        MAX_POSITION_STD,
        "largest position standard deviation (map units) of a registering fix's covariance; 0: no check",
        0.0,
        1e6,
    ),
    Setting("neighbours", 2, "added frames on each side whose poses are compared with a registering one", 1, 20),
    Setting(
        "neighbour_steps",
        4.0,
        "without odometry: a neighbour k frames away may be k times this many typical steps away (and k "
        "times this many typical turns); typical: the added sequence's median per frame, at least the posed "
        "frames'",
        1.0,
        100.0,
    ),
    Setting(
        "odometry_tolerance",
        0.15,
        "with odometry: share of the odometry's motion between two frames their poses may disagree with it by "
        "(plus one typical step of the posed frames, and 5 degrees)",
        0.0,
        10.0,
    ),
    Setting(
        "odometry_carry_frames",
        3,
        "with odometry: an added frame the map cannot localize yet takes the pose odometry carries from a "
        "localized frame at most this many frames away; 0: never",
        0,
        1000,
    ),
)

ODOMETRY_ROTATION_TOLERANCE_DEG = 5.0
MIN_TURN_DEG = 2.0  # the typical turn used for the neighbour check is at least this
# A sequence's own scale is capped at this many times the posed frames': fixes that are mostly
# wrong must not stretch the check until they agree with one another.
MAX_SEQUENCE_SCALE = 10.0
MIN_SEQUENCE_PAIRS = 3  # fewer pairs than this: a lone wrong fix could set the scale; keep the posed frames'


@dataclass
class AddedFrame:
    """A frame to add: its image and camera (``frame.pose`` is NaN), its odometry pose (the
    drifting camera-to-odometry pose, only relative motion is used) and the dataset's pose,
    kept for scoring only."""

    frame: Frame
    odometry: np.ndarray | None = None
    truth: np.ndarray | None = field(default=None, repr=False)
    # Which recording: (added dataset, the name's folder part, e.g. a 7-Scenes seq-01 or a
    # SUN3D fragment); neighbours and odometry are compared within one only.
    sequence: tuple = (0, "")


@dataclass
class Registration:
    pose: np.ndarray  # camera-to-world (4, 4)
    how: str  # "localized" or "odometry"
    round: int
    inliers: int = 0


def added_frames(
    frames: Sequence[Frame], odometry: bool, sequence: int = 0, keep_truth: bool = False
) -> list[AddedFrame]:
    """The frames of an ``--add`` (``odometry`` False) or ``--add-odometry`` dataset, in capture
    order: poses hidden (NaN), odometry kept where asked, the dataset's poses kept aside for
    scoring only with ``keep_truth`` (``--add-truth``). ``sequence`` numbers the dataset; its
    recordings (the frame names' folder parts) are sequences of their own."""
    nan = np.full((4, 4), np.nan)
    return [
        AddedFrame(
            dataclasses.replace(f, pose=nan.copy()),
            f.pose.copy() if odometry else None,
            f.pose.copy() if keep_truth else None,
            (sequence, f.name.rpartition("/")[0]),
        )
        for f in frames
    ]


def typical_motion(poses: np.ndarray) -> tuple[float, float]:
    """The median step (map units) and turn (degrees, at least MIN_TURN_DEG) between consecutive
    poses (F, 4, 4); the scale the neighbour checks are set in."""
    if len(poses) < 2:
        raise ScrError("growing a map needs at least two frames with poses")
    errors = np.array([pose_error(a, b) for a, b in zip(poses[:-1], poses[1:])])
    step = float(np.median(errors[:, 0]))
    if not step > 0:
        raise ScrError("the posed frames do not move (median step 0): cannot set the neighbour checks' scale")
    return step, max(float(np.median(errors[:, 1])), MIN_TURN_DEG)


def sequence_motion(
    posed: dict[int, np.ndarray], added: Sequence[AddedFrame], step: float, turn_deg: float
) -> dict[tuple, tuple[float, float]]:
    """Each added sequence's typical step and turn per frame: the medians over its consecutive
    frames that both have poses (``posed``: added index -> pose), at least the posed frames'
    ``step`` / ``turn_deg`` and at most MAX_SEQUENCE_SCALE times them; a sequence with fewer than
    MIN_SEQUENCE_PAIRS such pairs has none. Consecutive pairs only: a wrong fix spoils the two
    pairs it is in, and the median holds while most of them are right."""
    per_frame: dict[tuple, list[tuple[float, float]]] = {}
    for i in sorted(posed):
        if i + 1 in posed and added[i + 1].sequence == added[i].sequence:
            per_frame.setdefault(added[i].sequence, []).append(pose_error(posed[i], posed[i + 1]))
    scale = {}
    for seq, rows in per_frame.items():
        if len(rows) < MIN_SEQUENCE_PAIRS:
            continue
        dt, dr = np.median(np.asarray(rows), axis=0)
        scale[seq] = (
            float(np.clip(dt, step, MAX_SEQUENCE_SCALE * step)),
            float(np.clip(dr, turn_deg, MAX_SEQUENCE_SCALE * turn_deg)),
        )
    return scale


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.inv(a) @ b


def agrees(
    i: int,
    j: int,
    T_i: np.ndarray,
    T_j: np.ndarray,
    added: Sequence[AddedFrame],
    settings: dict,
    step: float,
    turn_deg: float,
) -> bool:
    """Whether frames i and j's poses are consistent: with odometry on both, their relative
    motion is the odometry's (``step``: the posed frames' typical step, slack for noise); else
    they are no further apart than their distance in the sequence allows (``step``, ``turn_deg``:
    the sequence's typical motion per frame, :func:`sequence_motion`)."""
    odo_i, odo_j = added[i].odometry, added[j].odometry
    if odo_i is not None and odo_j is not None:
        expected = _relative(odo_i, odo_j)
        dt, dr = pose_error(_relative(T_i, T_j), expected)
        moved = float(np.linalg.norm(expected[:3, 3]))
        return dt <= settings["odometry_tolerance"] * moved + step and dr <= ODOMETRY_ROTATION_TOLERANCE_DEG + (
            settings["odometry_tolerance"] * pose_error(np.eye(4), expected)[1]
        )
    k = abs(i - j)
    dt, dr = pose_error(T_i, T_j)
    return dt <= k * settings["neighbour_steps"] * step and dr <= k * settings["neighbour_steps"] * turn_deg


def decide(
    candidates: dict[int, tuple[np.ndarray, int]],
    registered: dict[int, Registration],
    added: Sequence[AddedFrame],
    settings: dict,
    step: float,
    turn_deg: float,
    round_number: int,
) -> tuple[dict[int, Registration], dict[int, str]]:
    """Which of this round's confident fixes (``candidates``: added index -> (pose, inliers))
    register, and which added frames take an odometry-carried pose. Returns the new
    registrations and the refused candidates with why.

    A candidate registers when at least one of its posed neighbours (registered, or this round's
    candidates) agrees with it and no more contradict it than agree; it is refused when a frame
    registered in an earlier round contradicts it, or more neighbours contradict it than agree:
    a fix on a repeated structure lands far from where its neighbours are. One that no posed
    neighbour supports yet waits (neither registered nor refused)."""
    n, window = len(added), settings["neighbours"]
    posed = {j: r.pose for j, r in registered.items()}
    posed.update({j: T for j, (T, _) in candidates.items()})
    scale = sequence_motion(posed, added, step, turn_deg)
    new: dict[int, Registration] = {}
    refused: dict[int, str] = {}
    unsupported: set[int] = set()
    for i, (T, inliers) in sorted(candidates.items()):
        agree, disagree, against_earlier = 0, 0, []
        for j in range(max(0, i - window), min(n, i + window + 1)):
            if j == i or j not in posed or added[j].sequence != added[i].sequence:
                continue
            odometry = added[i].odometry is not None and added[j].odometry is not None
            s_step, s_turn = (step, turn_deg) if odometry else scale.get(added[i].sequence, (step, turn_deg))
            if agrees(i, j, T, posed[j], added, settings, s_step, s_turn):
                agree += 1
            else:
                disagree += 1
                if j in registered:
                    against_earlier.append(j)
        if against_earlier:
            refused[i] = f"contradicts registered frame {added[against_earlier[0]].frame.name}"
        elif disagree > agree:
            refused[i] = f"contradicts {disagree} of its {agree + disagree} neighbours with poses"
        elif not agree:
            unsupported.add(i)  # nothing to check it against yet: a later round may
        else:
            new[i] = Registration(T, "localized", round_number, inliers)
    carry = settings["odometry_carry_frames"]
    if carry:
        sources = {j: r for j, r in {**registered, **new}.items() if r.how == "localized"}
        for i in range(n):
            if i in registered or i in new or i in refused or i in candidates or added[i].odometry is None:
                continue
            near = [
                j
                for j in sources
                if abs(j - i) <= carry and added[j].odometry is not None and added[j].sequence == added[i].sequence
            ]
            if near:
                j = min(near, key=lambda j: abs(j - i))
                pose = sources[j].pose @ _relative(added[j].odometry, added[i].odometry)
                new[i] = Registration(pose, "odometry", round_number)
    return new, refused


def grow(
    posed: Sequence[Frame],
    added: Sequence[AddedFrame],
    encoder: Encoder,
    config: MappingConfig,
    settings: dict | None = None,
    *,
    device="auto",
    progress: Callable[[Progress], None] | None = None,
    cancel=None,
    preset_name: str | None = None,
) -> SceneMap:
    """Map ``posed`` and grow the map into ``added`` (module docstring); returns the last map,
    with ``training["growth"]`` saying what each round did (and a log line for each round and fit)."""
    s = resolve(GROWTH_SETTINGS, settings, "map growth")
    if not added:
        raise ScrError("no frames to add")
    step, turn = typical_motion(np.stack([f.pose for f in posed]))
    parts = {key: dict(v) for key, v in config.parts.items()}
    refine = parts.setdefault("pose-refinement", {})
    refine.setdefault("fixed_frames", len(posed))
    if refine["fixed_frames"] != len(posed):
        raise ScrError(
            f"map growth: pose-refinement's fixed_frames must be the {len(posed)} posed frames, got "
            f"{refine['fixed_frames']}"
        )
    short = dataclasses.replace(
        config, buffer_size=max(1, int(round(config.buffer_size * s["early_share"]))), parts=parts
    )
    full = dataclasses.replace(config, parts=parts)
    reloc_config = RelocalizerConfig(
        min_inliers=s["min_inliers"], max_position_std=s["max_position_std"], precision=config.precision
    )
    t_start = time.perf_counter()
    registered: dict[int, Registration] = {}
    rounds: list[dict] = []
    # The whole job's progress, in fits' shares (round 0 and the refits short, the last fit
    # whole): planned as if every round refits, so it only ever runs ahead at the end.
    planned = s["early_share"] * s["rounds"] + 1.0
    done = [0.0]

    def report(share: float):
        def forward(p: Progress) -> None:
            if progress is not None:
                within = p.overall if p.overall is not None else p.fraction
                overall = min(1.0, (done[0] + share * within) / planned)
                progress(dataclasses.replace(p, overall=overall))

        return forward

    def fit(cfg: MappingConfig, label: str) -> SceneMap:
        frames = list(posed) + [
            dataclasses.replace(added[i].frame, pose=registered[i].pose) for i in sorted(registered)
        ]
        log.info(f"{label}: fitting on {len(posed)} posed and {len(registered)} registered frames")
        share = cfg.buffer_size / config.buffer_size
        builder = MapBuilder(encoder, cfg, device=device, progress=report(share), cancel=cancel)
        scene_map = builder.build(frames, preset_name=preset_name)
        done[0] += share
        # The refined poses of the registered frames are their estimates from now on.
        for i, T in zip(sorted(registered), scene_map.mapping_poses[len(posed) :]):
            registered[i].pose = np.asarray(T, dtype=np.float64)
        return scene_map

    t0 = time.perf_counter()
    # Round 0 on the posed frames alone has nothing to refine: no pose-refinement part.
    without_refinement = {k: v for k, v in parts.items() if k != "pose-refinement"}
    scene_map = fit(dataclasses.replace(short, parts=without_refinement), "round 0")
    rounds.append({"round": 0, "fit_frames": len(posed), "seconds": round(time.perf_counter() - t0, 3)})
    for number in range(1, s["rounds"] + 1):
        t0 = time.perf_counter()
        candidates, lost = _localize_unregistered(
            scene_map, encoder, added, registered, reloc_config, device, report(0.0), cancel
        )
        new, refused = decide(candidates, registered, added, s, step, turn, number)
        registered.update(new)
        how = [r.how for r in new.values()]
        row = {
            "round": number,
            "registered_new": len(new),
            "localized": how.count("localized"),
            "odometry": how.count("odometry"),
            "refused": len(refused),
            "not_localized": lost,
            "registered_total": len(registered),
        }
        log.info(
            f"round {number}: {len(new)} added frames registered ({row['localized']} localized, "
            f"{row['odometry']} by odometry), {len(refused)} refused (contradicted), {lost} not localized; "
            f"{len(registered)} of {len(added)} registered"
        )
        last = not new or number == s["rounds"] or len(registered) == len(added)
        if new or last:
            scene_map = fit(full if last else short, f"round {number}" + (" (final fit)" if last else ""))
            row["fit_frames"] = len(posed) + len(registered)
        row["seconds"] = round(time.perf_counter() - t0, 3)
        rounds.append(row)
        if last:
            break
    order = sorted(registered)
    scene_map.training["growth"] = {
        "posed_frames": len(posed),
        "added_frames": len(added),
        "registered": len(registered),
        "index": order,  # into the added frames, in the order of their mapping_frames / mapping_poses
        "how": [registered[i].how for i in order],
        "round_registered": [registered[i].round for i in order],
        "inliers": [registered[i].inliers for i in order],
        "not_registered": [added[i].frame.name for i in range(len(added)) if i not in registered],
        "settings": s,
        "rounds": rounds,
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    return scene_map


def _localize_unregistered(
    scene_map: SceneMap,
    encoder: Encoder,
    added: Sequence[AddedFrame],
    registered: dict[int, Registration],
    config: RelocalizerConfig,
    device,
    progress,
    cancel=None,
) -> tuple[dict[int, tuple[np.ndarray, int]], int]:
    """The confident fixes of the added frames not yet registered, and how many were lost."""
    reloc = Relocalizer(scene_map, encoder, device=device, config=config)
    todo = [i for i in range(len(added)) if i not in registered]
    out: dict[int, tuple[np.ndarray, int]] = {}
    t0 = time.perf_counter()
    for k, i in enumerate(todo):
        if cancel is not None and cancel.is_set():
            raise MappingCancelled("map growth cancelled")
        loc = reloc.localize(added[i].frame.load_image(), added[i].frame.camera)
        if loc.success:
            out[i] = (np.asarray(loc.T_world_cam, dtype=np.float64), int(loc.num_inliers))
        progress(Progress("register", k + 1, len(todo), time.perf_counter() - t0))
    return out, len(todo) - len(out)


def registration_errors(scene_map: SceneMap, added: Sequence[AddedFrame]) -> dict | None:
    """The registered frames' pose errors against the added datasets' own poses (scoring only,
    ``--add-truth``): median and largest, centimetres and degrees. The added poses share the
    posed frames' world (as a benchmark's halves of one dataset do)."""
    g = scene_map.training.get("growth")
    if not g or not g["registered"]:
        return None
    poses = scene_map.mapping_poses[g["posed_frames"] :]
    errors = np.array([pose_error(T, added[i].truth) for i, T in zip(g["index"], poses) if added[i].truth is not None])
    if not len(errors):
        return None
    return {
        "frames": int(len(errors)),
        "median_cm": round(float(np.median(errors[:, 0])) * 100, 3),
        "max_cm": round(float(np.max(errors[:, 0])) * 100, 3),
        "median_deg": round(float(np.median(errors[:, 1])), 3),
        "max_deg": round(float(np.max(errors[:, 1])), 3),
    }

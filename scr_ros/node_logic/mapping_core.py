"""Everything the mapping node decides, without ROS.

The node (``scr_ros/ros/mapping_node.py``) decodes messages, finds the camera pose at the image
stamp (in TF, or in a pose topic through :class:`PoseBuffer`) and hands the frame to
:class:`MappingCore`, which

- validates it (pose finite and a rotation, intrinsics fit the image, depth fits the image),
- picks keyframes by motion (:class:`KeyframePolicy`: translation, rotation, time fallback),
- writes each keyframe to the session folder at once (:class:`SessionRecorder`, the posed-folder
  layout ``scr map`` reads; recording resumes into an existing folder), and
- builds the map on a worker thread (:class:`MapBuildJob`) with progress, ETA and cancel, writing
  the map atomically through the same ``build_map`` that ``scr map`` runs.
"""

from __future__ import annotations

import bisect
import collections
import datetime as _dt
import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..datasets.base import read_pose_file
from ..datasets.posed_folder import open_posed_folder, write_frame
from ..errors import MappingCancelled, MessageError, ScrError
from ..evaluation.reports import skipped_frames_line
from ..evaluation.trajectory import interpolate_pose
from ..fileio import atomic_write_json
from ..geometry import PinholeCamera, camera_for_image, check_transform, rotation_angle_deg
from ..pipeline import build_map
from .frames import mount_matrix
from .map_odom import CLOCK_JUMP_NS
from .params import MAPPING_PARAMS, extend_arguments, mapping_methods, validate
from .rejections import Rejections

FRAME_NAME = re.compile(r"^frame_(\d{6,})$")


class KeyframePolicy:
    """A frame is a keyframe when the camera moved ``min_translation`` metres or turned
    ``min_rotation_deg`` since the last keyframe, or ``max_interval_s`` passed (0 disables the
    time fallback). The first frame is always a keyframe; with all three thresholds 0 every
    frame is (``scr bag map`` on a dataset bag whose frames are already chosen)."""

    def __init__(self, min_translation: float, min_rotation_deg: float, max_interval_s: float) -> None:
        self.min_translation, self.min_rotation_deg, self.max_interval_s = (
            min_translation,
            min_rotation_deg,
            max_interval_s,
        )
        self.last: tuple[np.ndarray, int] | None = None

    def decide(self, T_world_cam: np.ndarray, stamp_ns: int) -> str:
        """Why this frame is a keyframe (``first``, ``moved ...``, ``turned ...``, ``time``), or ``""``."""
        if self.last is None:
            return "first"
        if self.min_translation == self.min_rotation_deg == self.max_interval_s == 0:
            return "every frame"
        T_last, stamp_last = self.last
        moved = float(np.linalg.norm(T_world_cam[:3, 3] - T_last[:3, 3]))
        turned = rotation_angle_deg(T_last[:3, :3].T @ T_world_cam[:3, :3])
        if self.min_translation > 0 and moved >= self.min_translation:
            return f"moved {moved:.3f} m"
        if turned >= self.min_rotation_deg > 0:
            return f"turned {turned:.1f} deg"
        if self.max_interval_s > 0 and (stamp_ns - stamp_last) * 1e-9 >= self.max_interval_s:
            return "time"
        return ""

    def accept(self, T_world_cam: np.ndarray, stamp_ns: int) -> None:
        self.last = (np.array(T_world_cam, dtype=np.float64), int(stamp_ns))


class SessionRecorder:
    """Keyframes on disk in the posed-folder layout, one atomic file at a time.

    ::

        SESSION/rgb/frame_000000.png          image (the last file written for a frame)
        SESSION/poses/frame_000000.txt        4x4 camera-to-world in the pose frame
        SESSION/intrinsics/frame_000000.txt   fx fy cx cy width height of that image
        SESSION/depth/frame_000000.png        optional, 16-bit millimetres
        SESSION/meta/frame_000000.json        stamp, camera frame id, pose frame, keyframe reason
        SESSION/session.json                  what this folder is

    Opening an existing folder resumes it: numbering continues, and side files of a frame whose
    image was never written (the node died mid-frame) are removed.
    """

    def __init__(self, folder: str | Path, pose_frame: str = "map") -> None:
        self.folder = Path(folder)
        self.pose_frame = pose_frame
        self.folder.mkdir(parents=True, exist_ok=True)
        info = self.folder / "session.json"
        if info.is_file():
            try:
                old = json.loads(info.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ScrError(f"{info} is not readable JSON ({exc}); move the folder away or repair it") from None
            if old.get("pose_frame") not in (None, pose_frame):
                raise ScrError(
                    f"{self.folder} holds poses in frame {old.get('pose_frame')!r}, not {pose_frame!r}; record into "
                    "another folder"
                )
        else:
            atomic_write_json(
                info,
                {
                    "format": "scr_ros.session",
                    "pose_frame": pose_frame,
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                },
            )
        self.removed_partial = self._remove_partial_frames()
        names = self.frame_names()
        self.next_index = int(FRAME_NAME.match(names[-1]).group(1)) + 1 if names else 0
        self.count = len(names)

    def frame_names(self) -> list[str]:
        rgb = self.folder / "rgb"
        names = [p.stem for p in rgb.glob("frame_*.png")] if rgb.is_dir() else []
        return sorted((n for n in names if FRAME_NAME.match(n)), key=lambda n: int(FRAME_NAME.match(n).group(1)))

    def _remove_partial_frames(self) -> list[str]:
        complete = set(self.frame_names())
        removed = set()
        for sub in ("poses", "intrinsics", "depth", "meta"):
            d = self.folder / sub
            for p in d.glob("frame_*") if d.is_dir() else ():
                if p.stem not in complete:
                    p.unlink()
                    removed.add(p.stem)
        for p in self.folder.rglob(".*.tmp"):  # temporary files of interrupted atomic writes
            p.unlink()
        return sorted(removed)

    def last_keyframe(self) -> tuple[np.ndarray, int] | None:
        """Pose and stamp of the newest recorded frame, so keyframe selection resumes where it was."""
        names = self.frame_names()
        if not names:
            return None
        name = names[-1]
        meta_path = self.folder / "meta" / f"{name}.json"
        try:
            stamp = int(json.loads(meta_path.read_text())["stamp_ns"])
        except (OSError, ValueError, KeyError, TypeError):
            stamp = 0
        return read_pose_file(self.folder / "poses" / f"{name}.txt"), stamp

    def add(
        self,
        image: np.ndarray,
        T_world_cam: np.ndarray,
        camera: PinholeCamera,
        stamp_ns: int,
        frame_id: str,
        depth: np.ndarray | None = None,
        reason: str = "",
        pose_from: str | None = None,
    ) -> str:
        name = f"frame_{self.next_index:06d}"
        meta = {
            "stamp_ns": int(stamp_ns),
            "camera_frame": frame_id,
            "pose_frame": self.pose_frame,
            "keyframe": reason,
            "depth": depth is not None,
            # extend mode: "fix" (a confirmed relocalizer fix stood) or "odometry" (carried since)
            **({"pose_from": pose_from} if pose_from else {}),
        }
        atomic_write_json(self.folder / "meta" / f"{name}.json", meta)
        write_frame(self.folder, name, image, T_world_cam, depth, camera=camera)
        self.next_index += 1
        self.count += 1
        return name


def _keyframes_in(folder) -> list:
    return open_posed_folder(Path(folder)).frames("train") if (Path(folder) / "rgb").is_dir() else []


class StampMatcher:
    """Pairs an image with the depth image of (nearly) the same stamp; keeps the last few depths.

    Registered depth (REP-118) carries the colour image's stamp, so the default tolerance is small.
    """

    def __init__(self, tolerance_s: float, keep: int = 10) -> None:
        self.tolerance_ns = int(tolerance_s * 1e9)
        self._items: collections.deque[tuple[int, object]] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, item) -> None:
        with self._lock:
            self._items.append((int(stamp_ns), item))

    def match(self, stamp_ns: int):
        with self._lock:
            best = min(self._items, key=lambda it: abs(it[0] - stamp_ns), default=None)
        if best is None or abs(best[0] - stamp_ns) > self.tolerance_ns:
            return None
        return best[1]


def body_to_camera_matrix(values: list[float]) -> np.ndarray:
    """The ``body_to_camera`` parameter (x y z qx qy qz qw) as T_body_cam, or MessageError."""
    return mount_matrix(values, "body_to_camera")


class PoseBuffer:
    """Recent poses from a topic (PoseStamped or Odometry), looked up by image stamp.

    An image takes the pose with its own stamp (within 1 ms) when there is one, else the pose
    interpolated between the poses just before and after its stamp when those are at most
    ``max_gap_s`` apart. :meth:`at` waits up to ``timeout_s`` for the pose after the stamp, which
    usually arrives a little after the image. Poses older than ``keep_s`` behind the newest are
    forgotten.
    """

    EXACT_NS = 1_000_000

    def __init__(self, max_gap_s: float, keep_s: float = 10.0) -> None:
        self.max_gap_ns = int(max_gap_s * 1e9)
        self.keep_ns = int(keep_s * 1e9)
        self._items: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._cond = threading.Condition()

    def add(self, stamp_ns: int, T: np.ndarray) -> bool:
        """Add a checked pose; one a little older than the newest is refused (MessageError). A
        stamp more than a second before the newest is a clock that jumped back (a bag played
        again, a simulator reset): the buffer starts afresh from it and ``True`` is returned."""
        with self._cond:
            jumped = bool(self._items) and stamp_ns < self._items[-1][0] - CLOCK_JUMP_NS
            if jumped:
                self._items.clear()
            if self._items and stamp_ns <= self._items[-1][0]:
                raise MessageError(
                    f"pose stamped {(self._items[-1][0] - stamp_ns) * 1e-9:.3f} s before the previous one; poses "
                    "must arrive in time order"
                )
            self._items.append((int(stamp_ns), np.array(T, dtype=np.float64)))
            while self._items and self._items[0][0] < stamp_ns - self.keep_ns:
                self._items.popleft()
            self._cond.notify_all()
            return jumped

    def at(self, stamp_ns: int, timeout_s: float = 0.0) -> np.ndarray:
        """The pose at ``stamp_ns``, or LookupError saying why there is none."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._items) and self._items[-1][0] >= stamp_ns - self.EXACT_NS, timeout_s)
            items = list(self._items)
        if not items:
            raise LookupError("no pose received yet")
        # Stamps increase (add refuses the others): the poses around the stamp are neighbours.
        k = bisect.bisect_left(items, stamp_ns, key=lambda it: it[0])
        around = items[max(0, k - 1) : k + 1]
        nearest = min(around, key=lambda it: abs(it[0] - stamp_ns))
        if abs(nearest[0] - stamp_ns) <= self.EXACT_NS:
            return nearest[1].copy()
        if k == len(items):
            raise LookupError(
                f"no pose at or after the image stamp (newest pose {(stamp_ns - items[-1][0]) * 1e-9:.3f} s older "
                "than the image)"
            )
        if k == 0:
            raise LookupError(f"the image is {(items[0][0] - stamp_ns) * 1e-9:.3f} s older than the oldest pose kept")
        (ta, Ta), (tb, Tb) = items[k - 1], items[k]
        if tb - ta <= self.max_gap_ns:
            return interpolate_pose(Ta, Tb, (stamp_ns - ta) / (tb - ta))
        raise LookupError(
            f"the poses around the image stamp are {(tb - ta) * 1e-9:.3f} s apart (pose_max_gap "
            f"{self.max_gap_ns * 1e-9:g} s)"
        )


@dataclass
class RecordResult:
    """What happened to one incoming frame: ``recorded`` (with the frame name), ``skipped``
    (not a keyframe, or not recording) or ``invalid`` (with the reason)."""

    status: str
    reason: str = ""
    name: str = ""
    clock_jump: str = ""  # the image stamps went back: what was reset (log once)


class MappingCore:
    """The mapping node without ROS: validation, keyframes, recording and the build job."""

    def __init__(self, params: dict | None = None) -> None:
        self.params = validate(MAPPING_PARAMS, params or {})
        self.recorder: SessionRecorder | None = None
        self.recording = False
        self.keyframes = self._keyframes()
        self.build_job = MapBuildJob()
        self.counters = (
            collections.Counter()
        )  # checked (frames that reached add_frame), invalid, recorded, write_errors
        self.problems = Rejections()  # why frames were not recorded, by kind (diagnostics and the log)

    def _keyframes(self) -> KeyframePolicy:
        p = self.params
        return KeyframePolicy(p["min_translation"], p["min_rotation_deg"], p["max_interval"])

    def update_params(self, changes: dict) -> None:
        self.params.update(validate(MAPPING_PARAMS, changes, partial=True))
        last = self.keyframes.last
        self.keyframes = self._keyframes()
        self.keyframes.last = last

    @property
    def session_folder(self) -> Path:
        return Path(self.params["session_folder"]).expanduser()

    @property
    def map_path(self) -> Path:
        return (
            Path(self.params["map_path"]).expanduser()
            if self.params["map_path"]
            else self.session_folder / "map.safetensors"
        )

    def start_recording(self) -> str:
        if self.build_job.running:
            raise ScrError(
                f"a map build is running from {self.session_folder}: recording into it now would change the frames "
                "it reads; wait for it to finish or call ~/cancel_build first"
            )
        if self.recording:
            return f"already recording into {self.session_folder} ({self.recorder.count} keyframes)"
        self.recorder = SessionRecorder(self.session_folder, self.params["pose_frame"])
        self.keyframes.last = self.recorder.last_keyframe()
        self.recording = True
        resumed = f", resuming after {self.recorder.count} keyframes" if self.recorder.count else ""
        cleaned = (
            f", removed {len(self.recorder.removed_partial)} partial frame(s)" if self.recorder.removed_partial else ""
        )
        return f"recording into {self.session_folder}{resumed}{cleaned}"

    def stop_recording(self) -> str:
        if not self.recording:
            return "not recording"
        self.recording = False
        return f"stopped recording: {self.recorder.count} keyframes in {self.session_folder}"

    def add_frame(
        self,
        image: np.ndarray,
        camera: PinholeCamera,
        T_world_cam: np.ndarray,
        stamp_ns: int,
        frame_id: str,
        depth: np.ndarray | None = None,
        pose_from: str | None = None,
    ) -> RecordResult:
        """Validate a frame and record it if it is a keyframe. Never raises for bad input.
        ``pose_from`` (extend mode): how the pose was obtained, kept in the keyframe's meta file."""
        self.counters["checked"] += 1
        if not self.recording:
            return RecordResult("skipped", "not recording")
        try:
            T = check_transform(T_world_cam, f"camera pose in {self.params['pose_frame']}")
            h, w = image.shape[:2]
            camera = camera_for_image(camera, w, h, allow_scaling=False)
            if depth is not None and depth.shape != (h, w):
                raise MessageError(
                    f"depth is {depth.shape[1]}x{depth.shape[0]} but the image is {w}x{h}; depth must be registered "
                    "to the image (REP-118)"
                )
        except MessageError as exc:
            self.counters["invalid"] += 1
            return RecordResult("invalid", str(exc))
        jump = self._clock(stamp_ns)
        reason = self.keyframes.decide(T, stamp_ns)
        if not reason:
            return RecordResult("skipped", "not a keyframe", clock_jump=jump)
        try:
            name = self.recorder.add(image, T, camera, stamp_ns, frame_id, depth, reason, pose_from)
        except (OSError, ScrError) as exc:
            self.counters["write_errors"] += 1
            return RecordResult("invalid", f"cannot write keyframe to {self.session_folder}: {exc}")
        self.keyframes.accept(T, stamp_ns)
        self.counters["recorded"] += 1
        return RecordResult("recorded", reason, name, clock_jump=jump)

    def _clock(self, stamp_ns: int) -> str:
        """Image stamps that went back by more than a second (a bag played again, a simulator
        reset): time since the last keyframe counts from this frame, whose motion from the last
        keyframe's pose still decides. Returns the line to log, once per jump."""
        last = self.keyframes.last
        if last is None or stamp_ns >= last[1] - CLOCK_JUMP_NS:
            return ""
        self.keyframes.last = (last[0], int(stamp_ns))
        self.counters["clock_jumps"] += 1
        return (
            f"image stamps went back by {(last[1] - stamp_ns) * 1e-9:.1f} s (a bag played again or a simulator "
            "reset): keyframe timing starts afresh, recording goes on"
        )

    def start_build(
        self,
        on_progress: Callable[["BuildStatus"], None] | None = None,
        on_done: Callable[["BuildStatus"], None] | None = None,
    ) -> str:
        """Start building the map from the recorded session. Refused while recording: the map
        would miss the keyframes still coming, and a keyframe written while the builder lists
        the folder could be read half-way."""
        p = self.params
        if self.recording:
            raise ScrError(
                f"still recording into {self.session_folder} ({self.recorder.count} keyframes): call "
                "~/stop_recording first, then ~/build_map"
            )
        extend = extend_arguments(p)
        if extend:
            base = Path(p["extend_from"]).expanduser()
            if base.resolve() == self.session_folder.resolve():
                raise ScrError(
                    f"extend_from is the session folder ({base}): record the new keyframes into another folder"
                )
            extend["add_odometry"] = [str(self.session_folder)]
        return self.build_job.start(
            base if extend else self.session_folder,
            self.map_path,
            p["preset"],
            p["encoder"] or None,
            p["device"],
            on_progress,
            on_done,
            head=p["head"],
            **mapping_methods(p),
            **extend,
        )


# --------------------------------------------------------------------------------------------
# Building the map off the executor thread


@dataclass
class BuildStatus:
    """``state``: idle, running, done, failed or cancelled."""

    state: str = "idle"
    stage: str = ""
    percent: float = 0.0
    loss: float | None = None
    eta_s: float | None = None
    elapsed_s: float = 0.0
    message: str = ""
    map_path: str = ""
    frames: int = 0

    def summary(self) -> str:
        parts = [self.state]
        if self.state == "running":
            parts.append(f"{self.stage} {self.percent:.0f}%")
            if self.loss is not None:
                parts.append(f"loss {self.loss:.3g}")
            if self.eta_s is not None:
                parts.append(f"ETA {format_seconds(self.eta_s)}")
        if self.message:
            parts.append(self.message)
        return ", ".join(parts)

    def as_values(self) -> dict[str, str]:
        return {
            "state": self.state,
            "stage": self.stage,
            "percent": f"{self.percent:.1f}",
            "loss": "" if self.loss is None else f"{self.loss:.5g}",
            "eta_s": "" if self.eta_s is None else f"{self.eta_s:.0f}",
            "elapsed_s": f"{self.elapsed_s:.0f}",
            "map_path": self.map_path,
            "frames": str(self.frames),
        }


def format_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class MapBuildJob:
    """One map build at a time on a daemon thread, cancellable, reporting :class:`BuildStatus`.

    Torch releases the GIL in its kernels, so the ROS executor keeps serving callbacks while the
    head trains. The map is written atomically: a cancelled or failed build leaves the previous
    map file untouched.
    """

    def __init__(self, build: Callable | None = None) -> None:
        self._build = build
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.status = BuildStatus()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(
        self,
        session: Path,
        map_path: Path,
        preset_name: str,
        encoder: str | None,
        device: str,
        on_progress=None,
        on_done=None,
        head: str | None = None,
        **methods,
    ) -> str:
        """Start building; ``head`` and ``methods`` (``build_map`` keywords: depth, score,
        classifier, pca_dim, ...) select the papers' methods."""
        with self._lock:
            if self.running:
                raise ScrError(f"a build is already running ({self.status.summary()}); cancel it first")
            frames = _keyframes_in(session)
            if len(frames) < 2:
                raise ScrError(
                    f"{session} holds {len(frames)} keyframe(s); record at least 2 (more than 100 for a useful map) "
                    "before building"
                )
            added = [f for folder in methods.get("add_odometry", ()) for f in _keyframes_in(folder)]
            if methods.get("add_odometry") and not added:
                raise ScrError(f"{methods['add_odometry'][0]} holds no keyframes to extend the map with; record first")
            self._cancel.clear()
            grown = f" grown into {len(added)} new ones" if added else ""
            self.status = BuildStatus(
                "running",
                "buffer",
                0.0,
                message=f"{len(frames)} keyframes{grown}",
                map_path=str(map_path),
                frames=len(frames) + len(added),
            )
            t0 = time.monotonic()

            def progress(p) -> None:
                # The builder weighs its stages (parts add their own) and never goes backwards.
                frac = p.overall if p.overall is not None else p.fraction
                elapsed = time.monotonic() - t0
                st = self.status
                st.stage, st.percent, st.elapsed_s = p.stage, 100.0 * frac, elapsed
                st.loss = p.loss if p.loss is not None else st.loss
                st.eta_s = elapsed * (1.0 - frac) / frac if frac > 0.01 else None
                if on_progress:
                    on_progress(st)

            def run() -> None:
                build = self._build or build_map
                try:
                    scene_map = build(
                        str(session),
                        Path(map_path),
                        preset_name=preset_name,
                        device=device,
                        encoder_spec=encoder,
                        head=head,
                        progress=progress,
                        cancel=self._cancel,
                        **methods,
                    )
                    self.status.state, self.status.percent, self.status.eta_s = "done", 100.0, 0.0
                    took = format_seconds(time.monotonic() - t0)
                    self.status.message = f"map written to {map_path} from {len(frames)} keyframes in {took}"
                    growth = (getattr(scene_map, "training", {}) or {}).get("growth")
                    if growth:
                        self.status.message += (
                            f"; {growth['registered']} of {growth['added_frames']} new keyframes registered"
                        )
                    skipped = skipped_frames_line(getattr(scene_map, "training", {}) or {})
                    if skipped:
                        self.status.message += f"; {skipped}"
                except MappingCancelled:
                    self.status.state, self.status.message = "cancelled", "the previous map (if any) is unchanged"
                except Exception as exc:  # noqa: BLE001 - reported to the user through the status topic / service
                    self.status.state, self.status.message = "failed", f"{type(exc).__name__}: {exc}"
                self.status.elapsed_s = time.monotonic() - t0
                if on_done:
                    on_done(self.status)

            self._thread = threading.Thread(target=run, name="scr_map_build", daemon=True)
            self._thread.start()
            return (
                f"building {map_path} from {len(frames)} keyframes in {session}{grown} (preset {preset_name}, "
                f"device {device})"
            )

    def cancel(self) -> str:
        if not self.running:
            return "no build is running"
        self._cancel.set()
        return "cancelling the build"

    def wait(self, timeout: float | None = None) -> BuildStatus:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status

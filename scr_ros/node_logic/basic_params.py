"""The node parameters that need no registry, hence no torch or OpenCV: the ones the launch
files take as arguments (:mod:`scr_ros.node_logic.launch_overrides`) and the few both nodes share.

A launch file runs on the launch host, which may have neither torch nor OpenCV and should not
spend seconds importing them for ``ros2 launch --show-args``; :mod:`scr_ros.node_logic.params`
puts these very objects into the nodes' tables, so each is still declared once.
"""

from __future__ import annotations

from ..errors import SettingsError
from ..settings import Setting


class ParameterError(SettingsError):
    """A parameter value is of the wrong type, out of range, or not one of the choices."""


def parameter(name, default, description, min=None, max=None, choices=(), dynamic=False, length=None) -> Setting:
    """A node parameter's :class:`~scr_ros.settings.Setting` (the tables' shorthand)."""
    return Setting(name, default, description, min, max, tuple(choices), dynamic, length)


_p = parameter


DEVICE = _p(
    "device",
    "auto",
    "Where the network runs: auto (CUDA when available), cuda or cpu.",
    choices=("auto", "cuda", "cpu"),
)
INTRINSICS = _p(
    "intrinsics_source",
    "K",
    "Which CameraInfo matrix gives the intrinsics: K (raw camera) or P (rectified projection; right for image_rect "
    "topics).",
    choices=("K", "P"),
)
USE_COMPRESSED = _p(
    "use_compressed",
    False,
    "Subscribe to image/compressed (sensor_msgs/CompressedImage, JPEG or PNG) instead of image.",
)
TF_TIMEOUT = _p(
    "tf_timeout", 0.2, "Seconds to wait for a TF lookup at the image stamp before giving up on that frame.", 0.0, 10.0
)


RELOCALIZER_MAP_PATH = _p(
    "map_path",
    "",
    "Map file (.safetensors from scr map or the mapping node). Setting it at run time loads the new map; a bad "
    "map is refused and the old one kept.",
    dynamic=True,
)

TF_MODE = _p(
    "tf_mode",
    "map_to_odom",
    "map_to_odom (REP-105, needs odometry), map_to_camera (no odometry on the robot) or none.",
    choices=("map_to_odom", "map_to_camera", "none"),
)

BASE_TO_CAMERA = _p(
    "base_to_camera",
    [],
    "The camera optical frame's fixed pose on the base, x y z qx qy qz qw (as the mapping node's body_to_camera), "
    "so the base pose needs no TF and no frame waits for it; when given it is used, not TF. Empty: TF base -> "
    "camera (static_mount), and without TF no base pose is published (counted in diagnostics).",
)

PLANAR = _p(
    "planar",
    False,
    "For 2D navigation: the base pose keeps x, y and yaw from the fix and takes z, roll and pitch from odometry "
    "(0 without), so map -> odom carries no roll, pitch or height.",
    dynamic=True,
)

SESSION_FOLDER = _p(
    "session_folder",
    "scr_session",
    "Folder the keyframes are recorded into (posed-folder layout, readable by scr map). Recording resumes into "
    "an existing one.",
)

MAPPING_MAP_PATH = _p(
    "map_path", "", "Where build_map writes the map; empty: SESSION_FOLDER/map.safetensors.", dynamic=True
)

RECORD_ON_START = _p(
    "record_on_start", False, "Start recording as soon as the node starts (otherwise call ~/start_recording)."
)

MAPPING_USE_COMPRESSED = _p("use_compressed", False, "Subscribe to image/compressed instead of image.")

USE_DEPTH = _p(
    "use_depth",
    False,
    "Subscribe to depth (REP-118: 32FC1 metres or 16UC1 millimetres, registered to the image) and record it "
    "with each keyframe.",
)

POSE_FRAME = _p(
    "pose_frame",
    "map",
    "Fixed frame of the recorded camera poses: with pose_source tf the frame they are looked up in (map when a "
    "SLAM / localization system "
    "provides it, or odom); with a pose topic, the header.frame_id its messages must carry.",
)


def specs_by_name(specs) -> dict[str, Setting]:
    return {s.name: s for s in specs}


# The node parameters each launch file takes as arguments (besides topics, namespace, log level).
LAUNCH_SETTINGS: dict[str, tuple[Setting, ...]] = {
    "relocalizer": (RELOCALIZER_MAP_PATH, TF_MODE, USE_COMPRESSED, DEVICE, BASE_TO_CAMERA, PLANAR),
    "mapping": (
        SESSION_FOLDER,
        MAPPING_MAP_PATH,
        USE_DEPTH,
        MAPPING_USE_COMPRESSED,
        POSE_FRAME,
        RECORD_ON_START,
        DEVICE,
    ),
}

"""The nodes' ROS parameters: name, default, range, description, and whether a change applies live.

One table serves four readers: the node declares each parameter from it (with a
ParameterDescriptor carrying the description and range), :func:`validate` checks values from
YAML / the command line / ``ros2 param set`` before a node uses them, :func:`parameter_table`
writes the tables of docs/ros.md (``python -m scr_ros.node_logic.params docs/ros.md``), and the
tests check ``config/*.yaml`` and that page against it. Choices that name registered parts
(presets, heads) are read from their registries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ScrError
from ..fileio import atomic_write_text
from ..heads import HEADS
from ..mapping_config import PRESETS
from ..pipeline import DEPTH_CHOICES, method_overrides
from ..selectors import SELECTORS


class ParameterError(ScrError):
    """A parameter value is of the wrong type, out of range, or not one of the choices."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any  # its Python type is the parameter type (bool, int, float, str)
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    dynamic: bool = False  # a change takes effect while the node runs
    length: int | None = None  # list parameters (float arrays): the number of values

    @property
    def type(self) -> type:
        return type(self.default)

    def check(self, value: Any) -> Any:
        """``value`` converted to this parameter's type, or :class:`ParameterError`."""
        t = self.type
        if t is list:
            return self._check_list(value)
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, t) or (t is int and isinstance(value, bool)):
            raise ParameterError(f"parameter {self.name!r} must be {t.__name__}, got {type(value).__name__} {value!r}")
        if t in (int, float):
            if value != value:  # NaN
                raise ParameterError(f"parameter {self.name!r} is NaN")
            if self.min is not None and value < self.min or self.max is not None and value > self.max:
                raise ParameterError(f"parameter {self.name!r} = {value} is outside [{self.min}, {self.max}]")
        if self.choices and value not in self.choices:
            raise ParameterError(f"parameter {self.name!r} = {value!r} is not one of {', '.join(self.choices)}")
        return value

    def _check_list(self, value: Any) -> list[float]:
        """A float array (rclpy gives array.array('d') or a list; YAML may write ints)."""
        try:
            items = list(value)
        except TypeError:
            raise ParameterError(f"parameter {self.name!r} must be a list of numbers, got {type(value).__name__} {value!r}") from None
        if isinstance(value, (str, bytes)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            raise ParameterError(f"parameter {self.name!r} must be a list of numbers, got {value!r}")
        out = [float(v) for v in items]
        if self.length is not None and len(out) != self.length:
            raise ParameterError(f"parameter {self.name!r} needs {self.length} numbers, got {len(out)}")
        if not all(v == v and abs(v) != float("inf") for v in out):
            raise ParameterError(f"parameter {self.name!r} contains NaN or infinite values")
        return out


def _p(name, default, description, min=None, max=None, choices=(), dynamic=False, length=None) -> ParamSpec:
    return ParamSpec(name, default, description, min, max, tuple(choices), dynamic, length)


DEVICE = _p("device", "auto", "Where the network runs: auto (CUDA when available), cuda or cpu.", choices=("auto", "cuda", "cpu"))
INTRINSICS = _p(
    "intrinsics_source", "K",
    "Which CameraInfo matrix gives the intrinsics: K (raw camera) or P (rectified projection; right for image_rect topics).",
    choices=("K", "P"),
)
USE_COMPRESSED = _p("use_compressed", False, "Subscribe to image/compressed (sensor_msgs/CompressedImage, JPEG or PNG) instead of image.")
TF_TIMEOUT = _p("tf_timeout", 0.2, "Seconds to wait for a TF lookup at the image stamp before giving up on that frame.", 0.0, 10.0)

RELOCALIZER_PARAMS: tuple[ParamSpec, ...] = (
    _p("map_path", "", "Map file (.safetensors from scr map or the mapping node). Setting it at run time loads the new map; a bad map is refused and the old one kept.", dynamic=True),
    _p("encoder", "", "Encoder weights file for maps built with one (scr map --encoder PATH), checked against the map's encoder checksum; empty: the map's registered encoder. A map never names a file to open."),
    DEVICE,
    USE_COMPRESSED,
    INTRINSICS,
    _p("scale_intrinsics_to_image", True, "When the image size differs from CameraInfo but the aspect ratio agrees, scale the intrinsics instead of skipping the frame."),
    _p("min_inliers", 100, "RANSAC inliers below which a frame is lost (no pose published).", 4, 100000, dynamic=True),
    _p("ransac_threshold_px", 10.0, "RANSAC inlier threshold in pixels of the input image.", 0.5, 100.0, dynamic=True),
    _p("ransac_max_iterations", 10000, "Upper bound on RANSAC iterations (caps the latency of hard frames).", 10, 1000000, dynamic=True),
    _p("max_image_age", 0.5, "Frames whose stamp is older than this many seconds when inference starts are dropped as stale (0: never).", 0.0, 60.0, dynamic=True),
    _p("tf_mode", "map_to_odom", "map_to_odom (REP-105, needs odometry), map_to_camera (no odometry on the robot) or none.", choices=("map_to_odom", "map_to_camera", "none")),
    _p("map_frame", "map", "The map frame: parent of the published poses and TF."),
    _p("odom_frame", "odom", "The odometry frame (tf_mode map_to_odom)."),
    _p("base_frame", "base_link", "The robot base frame; pose_with_covariance is the pose of this frame when TF knows base -> camera."),
    _p("camera_frame", "", "Camera optical frame; empty: the image header's frame_id. With tf_mode map_to_camera this frame gets map as its parent, so it must not already have one."),
    _p("transform_tolerance", 0.1, "Seconds the map -> odom transform is future-dated, as AMCL does, so lookups at the latest odometry succeed.", 0.0, 10.0),
    _p("tf_publish_rate", 20.0, "Hz at which the last map -> odom transform is re-published between fixes (0: only on fixes).", 0.0, 1000.0),
    TF_TIMEOUT,
    _p("max_jump_translation", 0.5, "Metres a new fix may differ from the last fix carried forward by odometry before it is rejected as a jump (0: no check).", 0.0, 1000.0, dynamic=True),
    _p("max_jump_rotation_deg", 20.0, "Degrees a new fix may differ from the odometry prediction before it is rejected as a jump.", 0.0, 180.0, dynamic=True),
    _p("jump_reset_frames", 5, "After this many consecutive jump rejections the next good fix is accepted (recovers from a wrong earlier fix).", 1, 10000, dynamic=True),
    _p("covariance_inflation", 400.0, "Factor on the inlier-geometry covariance: SCR errors are correlated, so the least-squares covariance is optimistic (see docs/ros.md, Covariance).", 1.0, 1e9, dynamic=True),
    _p("covariance_min_std_translation", 0.01, "Floor on the published position standard deviation, metres.", 0.0, 100.0, dynamic=True),
    _p("covariance_min_std_rotation_deg", 0.5, "Floor on the published rotation standard deviation, degrees.", 0.0, 180.0, dynamic=True),
    _p("publish_scene_points", True, "Publish ~/scene_points (this frame's scene coordinates, inliers green, outliers red).", dynamic=True),
    _p("selector", "auto", "Which correspondences RANSAC sees: auto (the map's keypoint classifier, else its discriminability score, else all), all, score or classifier.", choices=("auto", *SELECTORS), dynamic=True),
    _p("score_percentile", 0.51, "Score selector: correspondences scoring below this percentile of the frame's scores are dropped before RANSAC (SS-DVR: 0.51).", 0.0, 99.0, dynamic=True),
    _p("classifier_min_probability", 0.5, "Classifier selector: keep correspondences whose inlier probability is at least this.", 0.0, 1.0, dynamic=True),
    _p("classifier_top_k", 1024, "Classifier selector: keep at most this many of the most likely inliers (0: no cap).", 0, 1000000, dynamic=True),
    _p("classifier_grid", 8, "Classifier selector: when the cap leaves candidates out, spread the kept ones over a grid of this many cells per image side (0: the plain most-likely ranking).", 0, 64, dynamic=True),
    _p("hypotheses", 0, "Maps with a global encoding (GLACE, R-SCoRe): localize with this many encodings per frame and keep the pose with most inliers (0: the map's default).", 0, 100, dynamic=True),
)

MAPPING_PARAMS: tuple[ParamSpec, ...] = (
    _p("session_folder", "scr_session", "Folder the keyframes are recorded into (posed-folder layout, readable by scr map). Recording resumes into an existing one."),
    _p("map_path", "", "Where build_map writes the map; empty: SESSION_FOLDER/map.safetensors.", dynamic=True),
    _p("record_on_start", False, "Start recording as soon as the node starts (otherwise call ~/start_recording)."),
    _p("use_compressed", False, "Subscribe to image/compressed instead of image."),
    _p("use_depth", False, "Subscribe to depth (REP-118: 32FC1 metres or 16UC1 millimetres, registered to the image) and record it with each keyframe."),
    INTRINSICS,
    _p(
        "pose_source", "tf",
        "Where camera poses come from: tf (pose_frame -> camera frame at the image stamp), pose (geometry_msgs/PoseStamped on the pose topic) "
        "or odometry (nav_msgs/Odometry on the odometry topic); pose and odometry need no TF.",
        choices=("tf", "pose", "odometry"),
    ),
    _p(
        "pose_frame", "map",
        "Fixed frame of the recorded camera poses: with pose_source tf the frame they are looked up in (map when a SLAM / localization system "
        "provides it, or odom); with a pose topic, the header.frame_id its messages must carry.",
    ),
    _p(
        "body_to_camera", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        "With a pose topic: the camera optical frame's fixed pose in the frame the topic's poses describe (the body), as x y z qx qy qz qw; "
        "identity when the topic gives the camera pose itself.",
        length=7,
    ),
    _p(
        "pose_max_gap", 0.1,
        "With a pose topic: an image gets the pose interpolated between the poses just before and after its stamp when they are at most "
        "this many seconds apart (a pose with the image's own stamp is used as is).",
        0.0, 10.0,
    ),
    _p("tf_timeout", 0.2, "Seconds to wait for the camera pose at the image stamp (a TF lookup, or the next message of the pose topic) before giving up on that frame.", 0.0, 10.0),
    _p("min_translation", 0.05, "Record a keyframe after the camera moved this many metres.", 0.0, 100.0, dynamic=True),
    _p("min_rotation_deg", 5.0, "Record a keyframe after the camera turned this many degrees.", 0.0, 180.0, dynamic=True),
    _p("max_interval", 2.0, "Record a keyframe after this many seconds even without motion (0: never). All three keyframe thresholds 0: record every frame.", 0.0, 3600.0, dynamic=True),
    _p("depth_max_age", 0.05, "Seconds between an image and the depth image paired with it (registered depth shares the image stamp).", 0.0, 1.0),
    _p("preset", "cpu", "Mapping preset: ace (paper settings, for a GPU), cpu, or test (seconds, for smoke tests).", choices=tuple(PRESETS)),
    _p("encoder", "", "Encoder name or weights file; empty: the package default."),
    _p("head", "ace", "Scene head: ace, deep (Matching Rates' deeper head), glace (GLACE's position decoder), rscore (R-SCoRe's, with refinement), hscnet or hscnet-txf (HSCNet / HSCNet++: regions and sub-regions classified before the residual; labels from depth when depth_loss uses it, else from a first ACE-style stage).", choices=tuple(HEADS)),
    _p("head_config", "", "Head settings on top of the preset's, as a JSON object (scr map --head-config), e.g. {\"clusters\": 50}; empty: the head's defaults."),
    _p("depth_loss", "auto", "Train with recorded depth: auto (the preset's loss, which uses depth where keyframes have it), on (ace-depth; refuses keyframes without depth) or off (RGB only).", choices=tuple(DEPTH_CHOICES)),
    _p("score", False, "Head also predicts a discriminability score; the relocalizer then drops low-score points (SS-DVR)."),
    _p("classifier", False, "Train a keypoint classifier with the map; the relocalizer uses it to rank correspondences (Matching Rates)."),
    _p("classifier_finetune_epochs", 0.0, "With classifier: fine-tune the head on the keypoints the classifier accepts for this many epochs (0: no fine-tuning).", 0.0, 100.0),
    _p("pca_dim", 0, "Compact map: PCA of the encoder features to this many channels, stored in the map (0: off; R-SCoRe uses 128).", 0, 4096),
    _p("map_parts", "", "Other registered map parts to fit with the map, as a JSON object of part key -> settings (scr map --part); empty: none."),
    DEVICE,
)


def mapping_methods(p: dict) -> dict:
    """``build_map`` keywords for the mapping node's method parameters (the fine-tuning epochs
    count only with the classifier on)."""
    finetune = p["classifier_finetune_epochs"] if p["classifier"] else 0.0
    try:
        parts = json.loads(p["map_parts"]) if p["map_parts"] else {}
    except json.JSONDecodeError as exc:
        raise ParameterError(f"parameter 'map_parts' is not JSON: {exc}") from None
    if not isinstance(parts, dict):
        raise ParameterError(f"parameter 'map_parts' must be a JSON object (part key -> settings), got {p['map_parts']!r}")
    try:
        head_config = json.loads(p["head_config"]) if p["head_config"] else None
    except json.JSONDecodeError as exc:
        raise ParameterError(f"parameter 'head_config' is not JSON: {exc}") from None
    if head_config is not None and not isinstance(head_config, dict):
        raise ParameterError(f"parameter 'head_config' must be a JSON object, got {p['head_config']!r}")
    return {"depth": DEPTH_CHOICES[p["depth_loss"]], **({"head_config": head_config} if head_config else {}), **method_overrides(p["score"], p["classifier"], finetune, p["pca_dim"], parts)}


def specs_by_name(specs: tuple[ParamSpec, ...]) -> dict[str, ParamSpec]:
    return {s.name: s for s in specs}


def validate(specs: tuple[ParamSpec, ...], values: dict[str, Any], partial: bool = False) -> dict[str, Any]:
    """Values checked against ``specs``; missing ones take defaults unless ``partial``.

    Unknown names raise :class:`ParameterError` (a typo in a YAML file should not pass silently).
    """
    table = specs_by_name(specs)
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(table)}")
    out = {} if partial else {s.name: s.default for s in specs}
    for name, value in values.items():
        out[name] = table[name].check(value)
    return out


def load_yaml_parameters(path: str | Path, node_name: str) -> dict[str, Any]:
    """The ``ros__parameters`` of ``node_name`` in a ROS 2 parameter YAML file."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: not a ROS 2 parameter file")
    for key in (node_name, f"/{node_name}", "/**"):
        section = data.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            return section["ros__parameters"]
    raise ParameterError(f"{path}: no '{node_name}: ros__parameters:' section")


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return str(value)


def parameter_table(specs: tuple[ParamSpec, ...]) -> str:
    """The markdown table of docs/ros.md for one node's parameters."""
    rows = ["| parameter | default | range / choices | live | description |", "|---|---|---|---|---|"]
    for s in specs:
        if s.choices:
            allowed = ", ".join(s.choices)
        elif s.length is not None:
            allowed = f"{s.length} numbers"
        elif s.min is not None:
            allowed = f"{s.min:g} – {s.max:g}"
        else:
            allowed = ""
        rows.append(f"| `{s.name}` | {_cell(s.default)} | {allowed} | {'yes' if s.dynamic else ''} | {s.description} |")
    return "\n".join(rows) + "\n"


TABLE_BEGIN = "<!-- parameters of {node}: written by python -m scr_ros.node_logic.params -->"
TABLE_END = "<!-- end parameters of {node} -->"
NODE_PARAMS = {"scr_relocalizer": RELOCALIZER_PARAMS, "scr_mapping": MAPPING_PARAMS}


def write_parameter_tables(text: str) -> str:
    """``text`` with the table between each node's markers replaced by :func:`parameter_table`."""
    for node, specs in NODE_PARAMS.items():
        begin, end = TABLE_BEGIN.format(node=node), TABLE_END.format(node=node)
        if begin not in text or end not in text:
            raise ScrError(f"no parameter table markers for {node}: expected {begin!r} ... {end!r}")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{parameter_table(specs)}{end}{tail}"
    return text


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or ["docs/ros.md"]:
        page = Path(name)
        atomic_write_text(page, write_parameter_tables(page.read_text(encoding="utf-8")))
        print(f"wrote the parameter tables of {page}")

"""The nodes' ROS parameters: name, default, range, description, and whether a change applies live.

Each parameter is a :class:`~scr_ros.settings.Setting`. One table per node serves four readers:
the node declares each parameter from it (with a ParameterDescriptor carrying the description
and range), :func:`validate` checks values from YAML / the command line / ``ros2 param set``
before a node uses them, :mod:`~scr_ros.node_logic.doc_tables` writes the tables of docs/ros.md (``python -m
scr_ros.node_logic.doc_tables docs/ros.md docs/methods.md``, which also writes the settings tables
of selectors and map parts), and the tests check ``config/*.yaml`` and those pages against it.
Choices that name registered parts (presets, heads, selectors) are read from their registries,
and so are the parameters of their settings: ``SELECTOR_SETTING`` for every selector setting
(relocalizer), ``PART_SETTING`` for every map part setting (mapping node).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..heads import HEADS
from ..map_parts import MAP_PARTS, MapPart
from ..mapping_config import PRESETS
from ..pipeline import DEPTH_CHOICES, REFINE_POSES, method_overrides, refine_poses_part
from ..ransac import COVARIANCE_INFLATION, MAX_POSITION_STD, MIN_STD_ROTATION_DEG, MIN_STD_TRANSLATION
from ..selectors import SELECTORS
from ..settings import Setting, json_object
from .basic_params import (  # noqa: F401 - ParameterError is this module's API too
    BASE_TO_CAMERA,
    DEVICE,
    INTRINSICS,
    MAPPING_MAP_PATH,
    MAPPING_USE_COMPRESSED,
    PLANAR,
    POSE_FRAME,
    RECORD_ON_START,
    RELOCALIZER_MAP_PATH,
    SESSION_FOLDER,
    TF_MODE,
    TF_TIMEOUT,
    USE_COMPRESSED,
    USE_DEPTH,
    ParameterError,
    specs_by_name,
)
from .basic_params import parameter as _p


def parameter_name(owner: str, setting: Setting) -> str:
    """The node parameter of an owner's setting: ``OWNER_SETTING``, dashes as underscores."""
    return f"{owner.replace('-', '_')}_{setting.name}"


def _parameter(owner: str, what: str, setting: Setting) -> Setting:
    """A setting as a node parameter (a JSON object as its text), changeable live."""
    default = json.dumps(setting.default) if isinstance(setting.default, dict) else setting.default
    help_text = setting.help + (" (a JSON object)" if isinstance(setting.default, dict) else "")
    return Setting(
        parameter_name(owner, setting),
        default,
        f"{what}: {help_text}.",
        setting.min,
        setting.max,
        setting.choices,
        True,
        setting.length,
    )


def selector_parameters() -> tuple[Setting, ...]:
    """A relocalizer parameter for every setting of every registered selector."""
    return tuple(
        _parameter(name, f"{name.capitalize()} selector", s) for name, cls in SELECTORS.items() for s in cls.settings
    )


def selector_settings(p: dict) -> dict[str, dict]:
    """Selector name -> its settings, from the relocalizer's ``SELECTOR_SETTING`` parameters."""
    return {
        name: {s.name: p[parameter_name(name, s)] for s in cls.settings}
        for name, cls in SELECTORS.items()
        if cls.settings
    }


def part_parameters() -> tuple[Setting, ...]:
    """A mapping-node parameter for every setting of every registered map part (read when a
    build starts)."""
    return tuple(
        _parameter(cls.option_name(), f"Map part {cls.key}", s) for cls in MAP_PARTS.values() for s in cls.settings
    )


RELOCALIZER_PARAMS: tuple[Setting, ...] = (
    _p(
        "autostart",
        True,
        "Configure (load the map) and activate (publish) at start; false: wait for a lifecycle manager (Nav2's) to "
        "call configure and activate.",
    ),
    RELOCALIZER_MAP_PATH,
    _p(
        "encoder",
        "",
        "Encoder weights file for maps built with one (scr map --encoder PATH), checked against the map's encoder "
        "checksum; empty: the map's registered encoder. A map never names a file to open.",
    ),
    DEVICE,
    USE_COMPRESSED,
    INTRINSICS,
    _p(
        "scale_intrinsics_to_image",
        True,
        "When the image size differs from CameraInfo but the aspect ratio agrees, scale the intrinsics instead of "
        "skipping the frame.",
    ),
    _p("min_inliers", 100, "RANSAC inliers below which a frame is lost (no pose published).", 4, 100000, dynamic=True),
    _p("ransac_threshold_px", 10.0, "RANSAC inlier threshold in pixels of the input image.", 0.5, 100.0, dynamic=True),
    _p(
        "ransac_max_iterations",
        10000,
        "Upper bound on RANSAC iterations (caps the latency of hard frames).",
        10,
        1000000,
        dynamic=True,
    ),
    _p(
        "query_height",
        0,
        "Height in pixels the image is resized to before the encoder; 0: the map's mapping height (480 for the "
        "presets). Lower is faster and less accurate (docs/cli.md, 'Spending less per frame').",
        0,
        4096,
        dynamic=True,
    ),
    _p(
        "pipelined",
        True,
        "Run each frame's RANSAC on a second thread beside the next frame's encoder and head (more frames a second; "
        "torch gets one CPU thread fewer, so the poses are the sequential ones up to float rounding). False: one "
        "frame at a time.",
    ),
    _p(
        "max_image_age",
        0.5,
        "Frames whose stamp is older than this many seconds when inference starts are dropped as stale (0: never).",
        0.0,
        60.0,
        dynamic=True,
    ),
    TF_MODE,
    _p("map_frame", "map", "The map frame: parent of the published poses and TF."),
    _p("odom_frame", "odom", "The odometry frame (tf_mode map_to_odom)."),
    _p(
        "base_frame",
        "base_link",
        "The robot base frame: ~/pose_with_covariance and initialpose are its pose in map (never the camera's).",
    ),
    BASE_TO_CAMERA,
    PLANAR,
    _p(
        "confirm_fixes",
        3,
        "The first-fix check: TF and initialpose follow the fixes only after this many consecutive fixes agreed "
        "within the jump thresholds (1: from the first fix), again after lost_timeout without a fix, a clock jump, "
        "a new map or ~/reset; ~/pose is never held back, ~/pose_with_covariance with hold_unconfirmed_pose.",
        1,
        100,
        dynamic=True,
    ),
    _p(
        "publish_initial_pose",
        False,
        "Publish the base pose once on initialpose (geometry_msgs/PoseWithCovarianceStamped, for AMCL / Nav2): on the "
        "first confirmed fix, on the first after lost_timeout without one, and on ~/publish_initial_pose (refused "
        "while false). With tf_mode map_to_odom too, AMCL and this node would both move map -> odom: use tf_mode "
        "none under AMCL.",
        dynamic=True,
    ),
    _p(
        "lost_timeout",
        3.0,
        "Seconds of image time without a fix after which the node counts as lost (the next confirmed fix goes to "
        "initialpose again).",
        0.1,
        3600.0,
        dynamic=True,
    ),
    _p(
        "camera_frame",
        "",
        "Camera optical frame; empty: the image header's frame_id. With tf_mode map_to_camera this frame gets map "
        "as its parent, so it must not already have one.",
    ),
    _p(
        "transform_tolerance",
        0.1,
        "Seconds the map -> odom transform is future-dated, as AMCL does, so lookups at the latest odometry succeed.",
        0.0,
        10.0,
    ),
    _p(
        "tf_publish_rate",
        20.0,
        "Hz at which the last map -> odom transform is re-published between fixes (0: only on fixes).",
        0.0,
        1000.0,
    ),
    TF_TIMEOUT,
    _p(
        "max_jump_translation",
        0.5,
        "Metres a new fix may differ from the last fix carried forward by odometry before it is rejected as a jump "
        "(0: no check).",
        0.0,
        1000.0,
        dynamic=True,
    ),
    _p(
        "max_jump_rotation_deg",
        20.0,
        "Degrees a new fix may differ from the odometry prediction before it is rejected as a jump.",
        0.0,
        180.0,
        dynamic=True,
    ),
    _p(
        "jump_reset_frames",
        5,
        "After this many consecutive jump rejections the next good fix is accepted (recovers from a wrong earlier "
        "fix); the first-fix check must still confirm it before TF and initialpose follow.",
        1,
        10000,
        dynamic=True,
    ),
    _p(
        "max_speed",
        1.0,
        "Without odometry (tf_mode none or map_to_camera, or no odometry at the stamp) a fix is compared with the "
        "last fix itself: max_jump_translation grows by this many metres per second of image time since it.",
        0.0,
        1000.0,
        dynamic=True,
    ),
    _p(
        "max_turn_rate_deg",
        90.0,
        "Without odometry: max_jump_rotation_deg grows by this many degrees per second since the last fix.",
        0.0,
        100000.0,
        dynamic=True,
    ),
    _p(
        "max_position_std",
        MAX_POSITION_STD,
        "A fix whose position its inliers do not pin down is refused as lost: the largest position standard "
        "deviation (metres, map units) of its published covariance (inlier geometry x covariance_inflation + "
        "floors); inliers on far content constrain the rotation, not the position. 0: no check. The same check "
        "as scr localize --max-position-std.",
        0.0,
        1e6,
        dynamic=True,
    ),
    _p(
        "static_mount",
        True,
        "TF base -> camera is a fixed mount: looked up once without waiting and kept (until a clock jump or a new "
        "map); false: a moving mount (pan-tilt), looked up at each image stamp within tf_timeout. Not used when "
        "base_to_camera is given.",
    ),
    _p(
        "hold_unconfirmed_pose",
        False,
        "Publish ~/pose_with_covariance only for confirmed fixes (the first-fix check passed), e.g. into "
        "robot_localization; false: every fix, with confirmed or not visible on ~/status.",
        dynamic=True,
    ),
    _p(
        "on_demand",
        False,
        "Localize only when asked (~/localize), not every frame: images arriving between requests are dropped "
        "without inference, so a robot that needs a fix at start-up or after a kidnap spends no CPU otherwise.",
        dynamic=True,
    ),
    _p(
        "localize_timeout",
        10.0,
        "Seconds ~/localize waits for a confirmed fix before answering with the last reason there was none.",
        0.1,
        3600.0,
        dynamic=True,
    ),
    _p(
        "covariance_inflation",
        COVARIANCE_INFLATION,
        "Factor on the inlier-geometry covariance: SCR errors are correlated, so the least-squares covariance is "
        "optimistic (see docs/ros.md, Covariance).",
        1.0,
        1e9,
        dynamic=True,
    ),
    _p(
        "covariance_min_std_translation",
        MIN_STD_TRANSLATION,
        "Floor on the published position standard deviation, metres.",
        0.0,
        100.0,
        dynamic=True,
    ),
    _p(
        "covariance_min_std_rotation_deg",
        MIN_STD_ROTATION_DEG,
        "Floor on the published rotation standard deviation, degrees.",
        0.0,
        180.0,
        dynamic=True,
    ),
    _p(
        "publish_scene_points",
        True,
        "Publish ~/scene_points (this frame's scene coordinates, inliers green, outliers red).",
        dynamic=True,
    ),
    _p(
        "map_cloud_max_points",
        2_000_000,
        "~/map_cloud carries at most this many of the map's cloud points (an even subsample): rviz and DDS choke on "
        "clouds of hundreds of megabytes.",
        1,
        100_000_000,
    ),
    _p(
        "selector",
        "auto",
        "Which correspondences RANSAC sees: auto (the map's keypoint classifier, else its discriminability score, "
        "else all), all, score or classifier.",
        choices=("auto", *SELECTORS),
        dynamic=True,
    ),
    _p(
        "hypotheses",
        0,
        "Maps with a global encoding (GLACE, R-SCoRe): localize with this many encodings per frame and keep the "
        "pose with most inliers (0: the map's default).",
        0,
        100,
        dynamic=True,
    ),
) + selector_parameters()

MAPPING_PARAMS: tuple[Setting, ...] = (
    SESSION_FOLDER,
    MAPPING_MAP_PATH,
    RECORD_ON_START,
    MAPPING_USE_COMPRESSED,
    USE_DEPTH,
    INTRINSICS,
    _p(
        "pose_source",
        "tf",
        "Where camera poses come from: tf (pose_frame -> camera frame at the image stamp), pose "
        "(geometry_msgs/PoseStamped on the pose topic) "
        "or odometry (nav_msgs/Odometry on the odometry topic); pose and odometry need no TF.",
        choices=("tf", "pose", "odometry"),
    ),
    POSE_FRAME,
    _p(
        "body_to_camera",
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        "With a pose topic: the camera optical frame's fixed pose in the frame the topic's poses describe (the "
        "body), as x y z qx qy qz qw; "
        "identity when the topic gives the camera pose itself.",
        length=7,
    ),
    _p(
        "pose_max_gap",
        0.1,
        "With a pose topic: an image gets the pose interpolated between the poses just before and after its stamp "
        "when they are at most "
        "this many seconds apart (a pose with the image's own stamp is used as is).",
        0.0,
        10.0,
    ),
    _p(
        "tf_timeout",
        0.2,
        "Seconds to wait for the camera pose at the image stamp (a TF lookup, or the next message of the pose "
        "topic) before giving up on that frame.",
        0.0,
        10.0,
    ),
    _p("min_translation", 0.05, "Record a keyframe after the camera moved this many metres.", 0.0, 100.0, dynamic=True),
    _p(
        "min_rotation_deg",
        5.0,
        "Record a keyframe after the camera turned this many degrees.",
        0.0,
        180.0,
        dynamic=True,
    ),
    _p(
        "max_interval",
        2.0,
        "Record a keyframe after this many seconds even without motion (0: never). All three keyframe thresholds "
        "0: record every frame.",
        0.0,
        3600.0,
        dynamic=True,
    ),
    _p(
        "depth_max_age",
        0.05,
        "Seconds between an image and the depth image paired with it (registered depth shares the image stamp).",
        0.0,
        1.0,
    ),
    _p(
        "preset",
        "cpu",
        "Mapping preset: ace (paper settings, for a GPU), cpu, or test (seconds, for smoke tests).",
        choices=tuple(PRESETS),
    ),
    _p("encoder", "", "Encoder name or weights file; empty: the package default."),
    _p(
        "head",
        "ace",
        "Scene head: ace, deep (Matching Rates' deeper head), glace (GLACE's position decoder), rscore (R-SCoRe's, "
        "with refinement), hscnet or hscnet-txf (HSCNet / HSCNet++: regions and sub-regions classified before the "
        "residual; labels from depth when depth_loss uses it, else from a first ACE-style stage).",
        choices=tuple(HEADS),
    ),
    _p(
        "head_config",
        "",
        'Head settings on top of the preset\'s, as a JSON object (scr map --head-config), e.g. {"clusters": 50}; '
        "empty: the head's defaults.",
    ),
    _p(
        "depth_loss",
        "auto",
        "Train with recorded depth: auto (the preset's loss, which uses depth where keyframes have it), on "
        "(ace-depth; refuses keyframes without depth) or off (RGB only).",
        choices=tuple(DEPTH_CHOICES),
    ),
    _p(
        "score",
        False,
        "Head also predicts a discriminability score; the relocalizer then drops low-score points (SS-DVR).",
    ),
    _p(
        "classifier",
        False,
        "Train a keypoint classifier with the map (map part classifier; its settings are the classifier_* "
        "parameters); the relocalizer uses it to rank correspondences (Matching Rates).",
    ),
    _p(
        "refine_poses",
        "none",
        "Correct the recorded poses, for poses from drifting odometry: graph (a pose graph of loop closures "
        "measured between keyframes, needs depth; map part pose-graph, settings pose_graph_*), or refine them with "
        "the head (ACE0): mlp (one MLP maps every recorded pose to its correction), free (a correction per frame) "
        "(map part pose-refinement, settings pose_refinement_*); none: as recorded. The map frame stays the pose "
        "frame, held at the first keyframe.",
        choices=REFINE_POSES,
    ),
    _p(
        "map_parts",
        "",
        "Map parts to fit with the map, as a JSON object of part key -> settings (scr map --part), e.g. "
        '{"partitions": {}}; empty: none. '
        "A part's settings may also be given as its NAME_SETTING parameters.",
    ),
    DEVICE,
    _p(
        "mode",
        "record",
        "record: the session's keyframes are the map's frames, with their recorded poses. extend: they grow the map "
        "built from extend_from (scr map EXTEND_FROM --add-odometry SESSION): their poses, from TF pose_frame -> "
        "camera while the relocalizer publishes map -> odom, are used for the motion between keyframes only, and "
        "the rounds register them against the map (docs/ros.md, Growing the map).",
        choices=("record", "extend"),
    ),
    _p(
        "extend_from",
        "",
        "extend mode: the session folder the current map was built from; its keyframes keep their poses. Must not "
        "be session_folder.",
    ),
    _p(
        "relocalizer_status",
        "/scr_relocalizer/status",
        "extend mode: the relocalizer's ~/status topic (std_msgs/String, latched); each keyframe records in its meta "
        "file whether a confirmed fix stood when it was taken (pose_from: fix) or odometry carried the pose since "
        "the last one (pose_from: odometry).",
    ),
    _p(
        "growth",
        "",
        "extend mode: the rounds' settings as a JSON object (scr map --growth-config), e.g. "
        '{"rounds": 4}; empty: the defaults.',
    ),
) + part_parameters()


def _part_values(p: dict, cls: type[MapPart]) -> dict:
    """A map part's settings given as parameters other than their defaults."""
    out = {}
    for s in cls.settings:
        spec = _parameter(cls.option_name(), "", s)
        value = p.get(spec.name, spec.default)  # a part registered after the tables were made has none
        if value != spec.default:
            out[s.name] = s.check(value, f"parameter {spec.name}", ParameterError)
    return out


def extend_arguments(p: dict) -> dict:
    """``build_map`` keywords of the mapping node's extend mode: the map is rebuilt from
    ``extend_from`` and grown into the session (its poses as odometry); {} in record mode."""
    if p["mode"] != "extend":
        return {}
    if not p["extend_from"]:
        raise ParameterError("mode extend needs extend_from: the session folder the current map was built from")
    return {
        "add_odometry": [p["session_folder"]],
        "add_split": "all",
        "growth": json_object(p["growth"], "parameter 'growth'", ParameterError),
    }


def mapping_methods(p: dict) -> dict:
    """``build_map`` keywords for the mapping node's method parameters: the head's settings,
    depth, the score, and the map parts with their settings, from ``map_parts`` and the parts'
    own parameters (``classifier`` and ``pca_dim`` switch their parts on, as ``scr map
    --classifier`` and ``--pca`` do)."""
    parts = json_object(p["map_parts"], "parameter 'map_parts'", ParameterError)
    if p["classifier"]:
        parts.setdefault("classifier", {})
    if p["refine_poses"] != "none":
        parts.setdefault(refine_poses_part(p["refine_poses"])[0], {})
    for cls in MAP_PARTS.values():
        given = _part_values(p, cls)
        if not given:
            continue
        if cls.key not in parts and not cls.switched_on(given):
            name = parameter_name(cls.option_name(), next(s for s in cls.settings if s.name in given))
            raise ParameterError(
                f"parameter {name!r} is set but map part {cls.key} is not switched on (add it to map_parts)"
            )
        settings = parts.get(cls.key) if isinstance(parts.get(cls.key), dict) else {}
        clash = sorted(k for k in given if k in settings and settings[k] != given[k])
        if clash:
            raise ParameterError(
                f"map part {cls.key}: {clash[0]} is given twice, in map_parts and as a parameter, with different values"
            )
        parts[cls.key] = {**given, **settings}
    head_config = json_object(p["head_config"], "parameter 'head_config'", ParameterError)
    return {
        "depth": DEPTH_CHOICES[p["depth_loss"]],
        **({"head_config": head_config} if head_config else {}),
        **method_overrides(score=p["score"], parts=parts, refine_poses=p["refine_poses"]),
    }


def validate(specs: tuple[Setting, ...], values: dict[str, Any], partial: bool = False) -> dict[str, Any]:
    """Values checked against ``specs``; missing ones take defaults unless ``partial``.

    Unknown names raise :class:`ParameterError` (a typo in a YAML file should not pass silently).
    """
    table = specs_by_name(specs)
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(table)}")
    out = {} if partial else {s.name: s.default for s in specs}
    for name, value in values.items():
        out[name] = table[name].check(value, error=ParameterError)
    return out


def load_yaml_parameters(path: str | Path, node_name: str) -> dict[str, Any]:
    """The ``ros__parameters`` of ``node_name`` in a ROS 2 parameter YAML file: under the node's
    name, ``/**/name`` (any namespace, as config/*.yaml are keyed) or ``/**`` (every node)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: not a ROS 2 parameter file")
    for key in (node_name, f"/{node_name}", f"/**/{node_name}", "/**"):
        section = data.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            return section["ros__parameters"]
    raise ParameterError(f"{path}: no '/**/{node_name}: ros__parameters:' section")


# The relocalizer's services and its status topic, declared once: the node creates them under
# these names (relative to the node), docs/ros.md's interface table is written from here, and
# test_ros_nodes.py checks the running node offers each.
RELOCALIZER_INTERFACE: tuple[tuple[str, str, str], ...] = (
    ("~/status", "std_msgs/msg/String (topic, transient local)", "localized, unconfirmed, lost or no_map, on change"),
    ("~/reload_map", "std_srvs/srv/Trigger", "re-read map_path; refused while the node is unconfigured"),
    (
        "~/publish_initial_pose",
        "std_srvs/srv/Trigger",
        "the latest confirmed fix's base pose on initialpose now when recent, else with the next confirmed fix; "
        "refused while publish_initial_pose is false",
    ),
    (
        "~/reset",
        "std_srvs/srv/Trigger",
        "forget the jump gate's reference, the first-fix check, initialpose's history and map -> odom",
    ),
    (
        "~/localize",
        "std_srvs/srv/Trigger",
        "wait up to localize_timeout for a confirmed fix and answer with it (or the last reason there was none); "
        "with on_demand the node localizes only while a call waits",
    ),
)

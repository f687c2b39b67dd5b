"""Start the scr_ros mapping node (and optionally rviz2).

    ros2 launch scr_ros mapping.launch.py session_folder:=~/maps/lab record_on_start:=true
    ros2 launch scr_ros mapping.launch.py session_folder:=/data/lab use_depth:=true pose_frame:=odom \
        image_topic:=/cam/color/image_raw camera_info_topic:=/cam/color/camera_info \
        depth_topic:=/cam/aligned_depth_to_color/image_raw device:=cuda

Then ``ros2 service call /scr_mapping/build_map std_srvs/srv/Trigger`` and watch
``/scr_mapping/progress``.

Parameters come from ``params_file`` (default: the installed config/mapping.yaml); a launch
argument overrides it only when it is passed: every parameter argument defaults to "" (keep the
params file's value, so a ``pose_frame: world`` there stays ``world``). ``~`` in session_folder
and map_path is expanded here, because a ``name:=~/x`` argument reaches the launch file
unexpanded. Which arguments are parameters, and how their text becomes a typed value, is
:mod:`scr_ros.node_logic.launch_overrides` (tested without ``launch``).

Topics: the node subscribes to ``image`` (or ``image/compressed``), ``camera_info``, with
use_depth ``depth``, and with pose_source pose / odometry ``pose`` / ``odometry``; they are
remapped to the ``*_topic`` arguments. With pose_source tf (the default) camera poses come from
TF: ``pose_frame`` -> the image's frame_id at the image stamp.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription
from scr_ros.node_logic.launch_overrides import (
    LAUNCH_PARAMETERS,
    argument_description,
    launch_overrides,
    log_level,
)

PACKAGE = "scr_ros"
NODE = "mapping"


def _typed(value):
    # A str inside a ParameterValue with value_type=str: launch_ros would otherwise read it as
    # YAML, so a folder named "1" or "yes" would stop being a string.
    return ParameterValue(value, value_type=str) if isinstance(value, str) else value


def _node(context):
    """The mapping node; an OpaqueFunction because which arguments become parameters depends on
    their values, known only once the launch arguments are resolved."""
    given = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_PARAMETERS[NODE]}
    overrides = {name: _typed(value) for name, value in launch_overrides(NODE, given).items()}
    image_topic = LaunchConfiguration("image_topic")
    return [
        Node(
            package=PACKAGE,
            executable="mapping_node",
            name="scr_mapping",
            namespace=LaunchConfiguration("namespace"),
            output="screen",
            emulate_tty=True,
            parameters=[LaunchConfiguration("params_file"), overrides],
            arguments=["--ros-args", "--log-level", log_level(LaunchConfiguration("log_level").perform(context))],
            remappings=[
                ("image", image_topic),
                # image_transport's naming: the compressed stream of T is T/compressed.
                ("image/compressed", [image_topic, "/compressed"]),
                ("camera_info", LaunchConfiguration("camera_info_topic")),
                ("depth", LaunchConfiguration("depth_topic")),
                ("pose", LaunchConfiguration("pose_topic")),
                ("odometry", LaunchConfiguration("odometry_topic")),
            ],
        )
    ]


def _parameter_argument(name):
    return DeclareLaunchArgument(name, default_value="", description=argument_description(NODE, name))


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            *[_parameter_argument(name) for name in LAUNCH_PARAMETERS[NODE]],
            DeclareLaunchArgument(
                "image_topic",
                default_value="/camera/image_raw",
                description="sensor_msgs/Image topic (its /compressed sibling with use_compressed in the params file)",
            ),
            DeclareLaunchArgument(
                "camera_info_topic", default_value="/camera/camera_info", description="sensor_msgs/CameraInfo topic"
            ),
            DeclareLaunchArgument(
                "depth_topic",
                default_value="/camera/depth/image_raw",
                description="Depth image registered to the colour image (32FC1 m or 16UC1 mm), used with use_depth",
            ),
            DeclareLaunchArgument(
                "pose_topic", default_value="pose", description="geometry_msgs/PoseStamped (pose_source pose)"
            ),
            DeclareLaunchArgument(
                "odometry_topic", default_value="odom", description="nav_msgs/Odometry (pose_source odometry)"
            ),
            DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics"),
            DeclareLaunchArgument(
                "log_level", default_value="info", description="Log level: debug, info, warn, error or fatal"
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "mapping.yaml"),
                description="ROS 2 parameter file with a 'scr_mapping: ros__parameters:' section",
            ),
            DeclareLaunchArgument(
                "rviz", default_value="false", description="Also start rviz2 with config/scr_ros.rviz"
            ),
            OpaqueFunction(function=_node),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", os.path.join(share, "config", "scr_ros.rviz")],
                output="screen",
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )

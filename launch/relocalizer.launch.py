"""Start the scr_ros relocalizer node (and optionally rviz2).

    ros2 launch scr_ros relocalizer.launch.py map_path:=/path/to/map.safetensors
    ros2 launch scr_ros relocalizer.launch.py map_path:=map.safetensors image_topic:=/cam/color/image_raw \
        camera_info_topic:=/cam/color/camera_info tf_mode:=none planar:=true \
        base_to_camera:='[0.2, 0.0, 0.5, -0.5, 0.5, -0.5, 0.5]' namespace:=robot1 rviz:=true

Parameters come from ``params_file`` (default: the installed config/relocalizer.yaml); a launch
argument overrides it only when it is passed: every parameter argument defaults to "" (keep the
params file's value). ``~`` in map_path is expanded here, because a ``map_path:=~/x`` argument
reaches the launch file unexpanded. Which arguments are parameters, and how their text becomes a
typed value, is :mod:`scr_ros.node_logic.launch_overrides` (tested without ``launch``).

Topics: the node subscribes to ``image`` (or ``image/compressed`` with use_compressed) and
``camera_info``; they are remapped to ``image_topic``, ``image_topic``/compressed and
``camera_info_topic``. With ``namespace`` the node, its outputs and ``initialpose`` live under it
(relative topic arguments too).
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
NODE = "relocalizer"


def _typed(value):
    # A str inside a ParameterValue with value_type=str: launch_ros would otherwise read it as
    # YAML, so a file named "1.0" or "on" would stop being a string.
    return ParameterValue(value, value_type=str) if isinstance(value, str) else value


def _node(context):
    """The relocalizer node; an OpaqueFunction because which arguments become parameters depends
    on their values, known only once the launch arguments are resolved."""
    given = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_PARAMETERS[NODE]}
    overrides = {name: _typed(value) for name, value in launch_overrides(NODE, given).items()}
    image_topic = LaunchConfiguration("image_topic")
    return [
        Node(
            package=PACKAGE,
            executable="relocalizer_node",
            name="scr_relocalizer",
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
                description="sensor_msgs/Image topic (its /compressed sibling with use_compressed)",
            ),
            DeclareLaunchArgument(
                "camera_info_topic", default_value="/camera/camera_info", description="sensor_msgs/CameraInfo topic"
            ),
            DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node and its topics"),
            DeclareLaunchArgument(
                "log_level", default_value="info", description="Log level: debug, info, warn, error or fatal"
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=os.path.join(share, "config", "relocalizer.yaml"),
                description="ROS 2 parameter file with a 'scr_relocalizer: ros__parameters:' section",
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

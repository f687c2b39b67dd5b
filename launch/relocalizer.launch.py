"""Start the scr_ros relocalizer node (and optionally rviz2).

    ros2 launch scr_ros relocalizer.launch.py map_path:=/path/to/map.safetensors
    ros2 launch scr_ros relocalizer.launch.py map_path:=map.safetensors image_topic:=/cam/color/image_raw \
        camera_info_topic:=/cam/color/camera_info tf_mode:=map_to_camera rviz:=true

Parameters come from ``params_file`` (default: the installed config/relocalizer.yaml), then the
launch arguments on top of it, by this rule:

- ``tf_mode``, ``use_compressed`` and ``use_sim_time`` always override the params file (their
  defaults are the values config/relocalizer.yaml ships with);
- ``map_path`` overrides it only when non-empty, so a map set in a custom params file is kept
  when the argument is left out. ``~`` is expanded here, because a ``map_path:=~/x`` argument
  reaches the launch file unexpanded.

Topics: the node subscribes to ``image`` (or ``image/compressed`` with use_compressed:=true) and
``camera_info``; they are remapped to ``image_topic``, ``image_topic``/compressed and
``camera_info_topic``.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

PACKAGE = "scr_ros"


def _node(context):
    """The relocalizer node; an OpaqueFunction because whether map_path is passed at all depends
    on its value, which is only known once the launch arguments are resolved."""
    overrides = {
        # Typed ParameterValues rather than bare substitutions: launch_ros would otherwise read
        # each string as YAML, and the node's parameter declarations reject a mistyped value.
        "tf_mode": ParameterValue(LaunchConfiguration("tf_mode"), value_type=str),
        "use_compressed": ParameterValue(LaunchConfiguration("use_compressed"), value_type=bool),
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
    }
    map_path = LaunchConfiguration("map_path").perform(context).strip()
    if map_path:
        # A plain str inside a ParameterValue with value_type=str: never re-read as YAML, so a
        # file named "1.0" or "on" stays a string.
        overrides["map_path"] = ParameterValue(os.path.expanduser(map_path), value_type=str)
    image_topic = LaunchConfiguration("image_topic")
    return [
        Node(
            package=PACKAGE,
            executable="relocalizer_node",
            name="scr_relocalizer",
            output="screen",
            emulate_tty=True,
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[
                ("image", image_topic),
                # image_transport's naming: the compressed stream of T is T/compressed.
                ("image/compressed", [image_topic, "/compressed"]),
                ("camera_info", LaunchConfiguration("camera_info_topic")),
            ],
        )
    ]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "map_path",
                default_value="",
                description="Map file (.safetensors); empty: keep the params file's map_path",
            ),
            DeclareLaunchArgument(
                "image_topic",
                default_value="/camera/image_raw",
                description="sensor_msgs/Image topic (its /compressed sibling with use_compressed)",
            ),
            DeclareLaunchArgument(
                "camera_info_topic", default_value="/camera/camera_info", description="sensor_msgs/CameraInfo topic"
            ),
            DeclareLaunchArgument(
                "use_sim_time", default_value="false", description="Use the /clock topic (bag playback, simulation)"
            ),
            DeclareLaunchArgument(
                "tf_mode",
                default_value="map_to_odom",
                choices=["map_to_odom", "map_to_camera", "none"],
                description="TF published: map -> odom (REP-105), map -> camera, or none",
            ),
            DeclareLaunchArgument(
                "use_compressed",
                default_value="false",
                description="Subscribe to IMAGE_TOPIC/compressed instead of IMAGE_TOPIC",
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
                parameters=[{"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}],
                output="screen",
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )

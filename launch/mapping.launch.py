"""Start the scr_ros mapping node (and optionally rviz2).

    ros2 launch scr_ros mapping.launch.py session_folder:=~/maps/lab record_on_start:=true
    ros2 launch scr_ros mapping.launch.py session_folder:=/data/lab use_depth:=true pose_frame:=odom \
        image_topic:=/cam/color/image_raw camera_info_topic:=/cam/color/camera_info \
        depth_topic:=/cam/aligned_depth_to_color/image_raw

Then ``ros2 service call /scr_mapping/build_map std_srvs/srv/Trigger`` and watch
``/scr_mapping/progress``.

Parameters come from ``params_file`` (default: the installed config/mapping.yaml), then the launch
arguments on top of it, by this rule:

- ``use_depth``, ``pose_frame``, ``record_on_start`` and ``use_sim_time`` always override the
  params file (their defaults are the values config/mapping.yaml ships with);
- ``session_folder`` and ``map_path`` override it only when non-empty, so folders set in a custom
  params file are kept when the arguments are left out. ``~`` is expanded here, because a
  ``name:=~/x`` argument reaches the launch file unexpanded.

Topics: the node subscribes to ``image`` (or ``image/compressed``), ``camera_info`` and, with
use_depth, ``depth``; they are remapped to ``image_topic`` (and its /compressed sibling),
``camera_info_topic`` and ``depth_topic``. Camera poses come from TF: ``pose_frame`` -> the image's
frame_id at the image stamp.
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
    """The mapping node; an OpaqueFunction because whether the folder arguments are passed at all
    depends on their values, which are only known once the launch arguments are resolved."""
    overrides = {
        # Typed ParameterValues rather than bare substitutions: launch_ros would otherwise read
        # each string as YAML, and the node's parameter declarations reject a mistyped value.
        "use_depth": ParameterValue(LaunchConfiguration("use_depth"), value_type=bool),
        "pose_frame": ParameterValue(LaunchConfiguration("pose_frame"), value_type=str),
        "record_on_start": ParameterValue(LaunchConfiguration("record_on_start"), value_type=bool),
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
    }
    for name in ("session_folder", "map_path"):
        value = LaunchConfiguration(name).perform(context).strip()
        if value:
            # A plain str inside a ParameterValue with value_type=str: never re-read as YAML, so a
            # folder named "1" or "yes" stays a string.
            overrides[name] = ParameterValue(os.path.expanduser(value), value_type=str)
    image_topic = LaunchConfiguration("image_topic")
    return [
        Node(
            package=PACKAGE,
            executable="mapping_node",
            name="scr_mapping",
            output="screen",
            emulate_tty=True,
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[
                ("image", image_topic),
                # image_transport's naming: the compressed stream of T is T/compressed.
                ("image/compressed", [image_topic, "/compressed"]),
                ("camera_info", LaunchConfiguration("camera_info_topic")),
                ("depth", LaunchConfiguration("depth_topic")),
            ],
        )
    ]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "session_folder",
                default_value="",
                description="Folder the keyframes are recorded into; empty: keep the params file's session_folder",
            ),
            DeclareLaunchArgument(
                "map_path",
                default_value="",
                description="Where build_map writes the map; empty: keep the params file's map_path (default "
                "SESSION_FOLDER/map.safetensors)",
            ),
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
            DeclareLaunchArgument("use_depth", default_value="false", description="Record depth with each keyframe"),
            DeclareLaunchArgument(
                "use_sim_time", default_value="false", description="Use the /clock topic (bag playback, simulation)"
            ),
            DeclareLaunchArgument(
                "pose_frame",
                default_value="map",
                choices=["map", "odom"],
                description="Fixed frame the camera poses are looked up in (TF pose_frame -> image frame)",
            ),
            DeclareLaunchArgument(
                "record_on_start",
                default_value="false",
                description="Record from the start instead of waiting for ~/start_recording",
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
                parameters=[{"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}],
                output="screen",
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )

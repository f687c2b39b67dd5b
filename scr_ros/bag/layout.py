"""What a scr_ros bag holds: topic names, frame ids, QoS profiles and the camera mount.

A converted dataset bag (``scr bag convert``) uses these names; ``scr bag map`` / ``replay`` /
``info`` read them by default and accept others through :class:`Topics`.

TF tree (REP-105; poses are ``T_parent_child``)::

    map ─► camera_ground_truth            /tf: the dataset's camera pose (ground truth)
    odom ─► base_link                     /tf: the same trajectory as odometry
            base_link ─► camera_optical_frame   /tf_static: the camera mount

The ground truth gets a frame of its own so that it never competes with the transforms the
relocalizer publishes (``map -> odom`` or ``map -> camera_optical_frame``). A dataset bag has
perfect odometry: ``odom`` is the dataset's world frame, i.e. the ``map`` the head is trained in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ScrError

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
POSE_TYPE = "geometry_msgs/msg/PoseStamped"
ODOMETRY_TYPE = "nav_msgs/msg/Odometry"
SPLITS_KEY = "scr_ros.splits"  # bag metadata custom_data: {"train": [first_ns, last_ns], "test": [...]}


class BagError(ScrError):
    """A bag cannot be written or read, or lacks what a command needs."""


@dataclass(frozen=True)
class Topics:
    image: str = "/camera/image_raw"
    camera_info: str = "/camera/camera_info"
    depth: str = "/camera/depth/image_raw"
    ground_truth: str = "/ground_truth/pose"
    odometry: str = "/odom"
    tf: str = "/tf"
    tf_static: str = "/tf_static"

    @property
    def compressed(self) -> str:
        # image_transport's naming: the compressed stream lives under the raw topic
        return self.image + "/compressed"


@dataclass(frozen=True)
class Frames:
    map: str = "map"
    odom: str = "odom"
    base: str = "base_link"
    camera: str = "camera_optical_frame"
    ground_truth: str = "camera_ground_truth"


# base_link (REP-103: x forward, y left, z up) -> camera optical frame (x right, y down, z
# forward). The camera sits at the base origin, so base_link is the camera in body axes.
T_BASE_CAMERA = np.array(
    [
        [0.0, 0.0, 1.0, 0.0],
        [-1.0, 0.0, 0.0, 0.0],
        [0.0, -1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def qos(durability: str = "volatile", depth: int = 10):
    """A reliable keep-last QoS profile as rosbag2 records it in metadata.yaml.

    Reliable publishers match both reliable and best-effort (sensor-data) subscribers, so
    ``ros2 bag play`` reaches the nodes and rviz alike. ``/tf_static`` must be transient-local,
    or a node started after the first (and only) static message never sees the camera mount.
    """
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)  # rosbag2: 0 = the middleware default (infinite)
    return Qos(
        QosHistory.KEEP_LAST,
        depth,
        QosReliability.RELIABLE,
        QosDurability.TRANSIENT_LOCAL if durability == "transient_local" else QosDurability.VOLATILE,
        zero,
        zero,
        QosLiveliness.AUTOMATIC,
        zero,
        False,
    )


def typestore():
    """ROS 2 Humble message definitions: bags written with them play on Humble and later."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)

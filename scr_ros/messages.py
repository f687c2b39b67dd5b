"""ROS 2 messages <-> numpy, without ROS.

Every function here works on message *objects* by their ROS 2 field names, so the same code
serves the nodes (rclpy message classes) and the rosbag tool and tests (the ``rosbags``
typestore's classes, which carry the real ROS 2 definitions). Messages are built through a
:class:`MessageFactory`, which hides the two differences between those worlds: how a class is
found by type name and what container a ``uint8[]`` field takes (``array.array('B')`` in
rclpy, a numpy array in rosbags).

Conventions (REP-103 / REP-104 / REP-117 / REP-118):

- images decode to uint8 RGB (H, W, 3) or grey (H, W) arrays; never BGR;
- depth decodes to float32 metres (H, W) with NaN where invalid (0, NaN, +-inf; 16UC1 is mm);
- quaternions are (x, y, z, w); poses are 4x4 float64 matrices ``T_parent_child``;
- stamps are integer nanoseconds.

Every decoder checks the message against itself (sizes, step, data length, encoding) and
raises :class:`MessageError` naming the problem, so a node can skip the frame and say why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from .errors import MessageError
from .geometry import PinholeCamera, check_transform, matrix_to_quaternion, quaternion_to_matrix

# --------------------------------------------------------------------------------------------
# Building messages in either world


class MessageFactory:
    """Builds ROS 2 messages by type name (``"sensor_msgs/msg/Image"``).

    Args:
        lookup: type name -> message class.
        byte_array: turns a uint8 numpy array into what the class's ``uint8[]`` fields accept.
        float_array: the same for variable-length ``float64[]`` fields.
    """

    def __init__(
        self,
        lookup: Callable[[str], type],
        byte_array: Callable[[np.ndarray], Any],
        float_array: Callable[[np.ndarray], Any],
    ) -> None:
        self._lookup = lookup
        self._classes: dict[str, type] = {}
        self.byte_array = byte_array
        self.float_array = float_array  # variable-length float64[] fields (fixed-size ones take numpy in both)

    def cls(self, typename: str) -> type:
        if typename not in self._classes:
            self._classes[typename] = self._lookup(typename)
        return self._classes[typename]

    def __call__(self, typename: str, **fields):
        return self.cls(typename)(**fields)


def rosbags_factory(typestore=None) -> MessageFactory:
    """A factory for the ``rosbags`` typestore (ROS 2 Humble definitions by default)."""
    if typestore is None:
        from rosbags.typesys import Stores, get_typestore

        typestore = get_typestore(Stores.ROS2_HUMBLE)
    return MessageFactory(
        lambda name: typestore.types[name],
        lambda a: np.ascontiguousarray(a, dtype=np.uint8).reshape(-1),
        lambda a: np.asarray(a, dtype=np.float64).reshape(-1),
    )


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def make_time(f: MessageFactory, ns: int):
    ns = int(ns)
    if ns < 0:
        raise MessageError(f"cannot stamp a message with a negative time ({ns} ns)")
    return f("builtin_interfaces/msg/Time", sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def make_header(f: MessageFactory, stamp_ns: int, frame_id: str):
    return f("std_msgs/msg/Header", stamp=make_time(f, stamp_ns), frame_id=str(frame_id))


def _bytes(data) -> np.ndarray:
    """The uint8 payload of a message field (numpy array, array.array, bytes or list)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):
        return np.asarray(data, dtype=np.uint8).reshape(-1)


# --------------------------------------------------------------------------------------------
# Images

# encoding -> (channels, numpy dtype); the colour conversion to RGB / grey is in decode_image.
IMAGE_ENCODINGS = {
    "rgb8": (3, np.uint8),
    "bgr8": (3, np.uint8),
    "rgba8": (4, np.uint8),
    "bgra8": (4, np.uint8),
    "mono8": (1, np.uint8),
    "8UC1": (1, np.uint8),
    "mono16": (1, np.uint16),
    "yuv422": (2, np.uint8),  # UYVY
    "yuv422_yuy2": (2, np.uint8),  # YUYV
}
DEPTH_ENCODINGS = {"32FC1": (1, np.float32), "16UC1": (1, np.uint16), "mono16": (1, np.uint16)}


def _raw_array(msg, channels: int, dtype) -> np.ndarray:
    """The (H, W[, C]) array of a sensor_msgs/Image after checking height, width, step and length."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MessageError(f"image has size {w}x{h}")
    itemsize = np.dtype(dtype).itemsize
    row = w * channels * itemsize
    if step < row:
        raise MessageError(
            f"image step {step} is smaller than width x pixel size ({w} x {channels * itemsize} = {row} bytes) for "
            f"{msg.encoding!r}"
        )
    data = _bytes(msg.data)
    if data.size < step * h:
        raise MessageError(f"image data has {data.size} bytes, expected step x height = {step} x {h} = {step * h}")
    rows = data[: step * h].reshape(h, step)[:, :row]
    arr = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<"))
    arr = arr.astype(np.dtype(dtype).newbyteorder("="), copy=False)
    return arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)


def decode_image(msg) -> np.ndarray:
    """sensor_msgs/Image -> uint8 RGB (H, W, 3) or grey (H, W).

    Supported: rgb8, bgr8, rgba8, bgra8, mono8 / 8UC1, mono16 (scaled by 255/65535), yuv422
    (UYVY) and yuv422_yuy2 (YUYV).
    """
    enc = str(msg.encoding)
    if enc not in IMAGE_ENCODINGS:
        raise MessageError(f"unsupported image encoding {enc!r}; supported: {', '.join(IMAGE_ENCODINGS)}")
    arr = _raw_array(msg, *IMAGE_ENCODINGS[enc])
    if enc == "rgb8":
        return arr
    if enc == "bgr8":
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if enc == "rgba8":
        return np.ascontiguousarray(arr[..., :3])
    if enc == "bgra8":
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    if enc == "mono16":
        return (arr.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    if enc == "yuv422":
        return cv2.cvtColor(arr, cv2.COLOR_YUV2RGB_UYVY)
    if enc == "yuv422_yuy2":
        return cv2.cvtColor(arr, cv2.COLOR_YUV2RGB_YUY2)
    return arr  # mono8 / 8UC1


def decode_compressed_image(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG / PNG, as image_transport's compressed plugin) -> RGB or grey uint8."""
    data = _bytes(msg.data)
    if data.size == 0:
        raise MessageError("compressed image has no data")
    fmt = str(msg.format)
    if "compressedDepth" in fmt:
        raise MessageError(f"compressed image format {fmt!r} is a depth stream, not a camera image")
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None:
        raise MessageError(f"cannot decode compressed image (format {fmt!r}, {data.size} bytes)")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    if img.ndim == 2:
        return img
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    # OpenCV decodes to BGR whatever the stream calls itself; "rgb8; jpeg compressed bgr8"
    # means the publisher converted rgb8 to bgr8 before encoding, so BGR->RGB is right for both.
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_depth(msg) -> np.ndarray:
    """sensor_msgs/Image depth (REP-118: 32FC1 metres, or 16UC1 millimetres) -> float32 metres, NaN invalid."""
    enc = str(msg.encoding)
    if enc not in DEPTH_ENCODINGS:
        raise MessageError(f"unsupported depth encoding {enc!r}; expected 32FC1 (metres) or 16UC1 (millimetres)")
    arr = _raw_array(msg, *DEPTH_ENCODINGS[enc])
    if arr.dtype == np.uint16:
        depth = arr.astype(np.float32) * 0.001
        depth[arr == 0] = np.nan
    else:
        depth = arr.astype(np.float32, copy=True)
        depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


def encode_image(f: MessageFactory, image: np.ndarray, stamp_ns: int, frame_id: str, encoding: str | None = None):
    """uint8 RGB (H, W, 3) / grey (H, W), uint16 (H, W) or float32 (H, W) -> sensor_msgs/Image.

    ``encoding`` defaults to rgb8 / mono8 / 16UC1 / 32FC1 by the array's shape and dtype; bgr8
    converts the RGB input.
    """
    img = np.asarray(image)
    default = {(3, "uint8"): "rgb8", (2, "uint8"): "mono8", (2, "uint16"): "16UC1", (2, "float32"): "32FC1"}.get(
        (img.ndim, img.dtype.name)
    )
    encoding = encoding or default
    if encoding is None:
        raise MessageError(f"no image encoding for an array of shape {img.shape} and dtype {img.dtype}")
    if encoding == "bgr8":
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    img = np.ascontiguousarray(img.astype(img.dtype.newbyteorder("<"), copy=False))
    h, w = img.shape[:2]
    return f(
        "sensor_msgs/msg/Image",
        header=make_header(f, stamp_ns, frame_id),
        height=int(h),
        width=int(w),
        encoding=encoding,
        is_bigendian=0,
        step=int(img.strides[0]),
        data=f.byte_array(img.view(np.uint8).reshape(-1)),
    )


def encode_compressed_image(f: MessageFactory, rgb: np.ndarray, stamp_ns: int, frame_id: str, quality: int = 90):
    """RGB uint8 -> sensor_msgs/CompressedImage in image_transport's JPEG convention."""
    img = np.asarray(rgb)
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise MessageError("JPEG encoding failed")
    fmt = "rgb8; jpeg compressed bgr8" if img.ndim == 3 else "mono8; jpeg compressed mono8"
    return f(
        "sensor_msgs/msg/CompressedImage",
        header=make_header(f, stamp_ns, frame_id),
        format=fmt,
        data=f.byte_array(buf.reshape(-1)),
    )


# --------------------------------------------------------------------------------------------
# Camera info


@dataclass(frozen=True)
class CameraInfo:
    """What scr_ros takes from sensor_msgs/CameraInfo: the pinhole camera of the published image."""

    camera: PinholeCamera
    distorted: bool  # non-zero distortion coefficients: the image should be rectified first
    frame_id: str


def decode_camera_info(msg, source: str = "K") -> CameraInfo:
    """sensor_msgs/CameraInfo -> intrinsics of the image the camera publishes.

    ``source`` is ``K`` (the raw camera matrix) or ``P`` (the rectified projection, right for
    ``image_rect`` topics). Binning and region of interest are applied as REP-104 defines them:
    the image is the ROI of the full-resolution sensor, then binned.
    """
    if source not in ("K", "P"):
        raise ValueError(f"source must be 'K' or 'P', got {source!r}")
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0:
        raise MessageError(f"camera_info has image size {w}x{h} (uncalibrated camera?)")
    if source == "K":
        M = np.asarray(msg.k, dtype=np.float64).reshape(-1)
        if M.size != 9:
            raise MessageError(f"camera_info K has {M.size} values, expected 9")
        M = M.reshape(3, 3)
    else:
        M = np.asarray(msg.p, dtype=np.float64).reshape(-1)
        if M.size != 12:
            raise MessageError(f"camera_info P has {M.size} values, expected 12")
        M = M.reshape(3, 4)[:, :3]
    if not np.all(np.isfinite(M)):
        raise MessageError(f"camera_info {source} contains NaN or infinite values")
    if not np.any(M):
        raise MessageError(f"camera_info {source} is all zeros (the camera is not calibrated)")
    fx, fy, cx, cy = M[0, 0], M[1, 1], M[0, 2], M[1, 2]
    if fx <= 0 or fy <= 0:
        raise MessageError(f"camera_info {source} has non-positive focal lengths fx={fx}, fy={fy}")
    roi = msg.roi
    if int(roi.width) > 0 and int(roi.height) > 0 and (int(roi.width), int(roi.height)) != (w, h):
        cx, cy, w, h = cx - int(roi.x_offset), cy - int(roi.y_offset), int(roi.width), int(roi.height)
    bx, by = max(1, int(msg.binning_x)), max(1, int(msg.binning_y))
    if bx > 1 or by > 1:
        # A binned pixel covers bx source pixels: centres map as x' = (x + 0.5) / b - 0.5.
        fx, cx, w = fx / bx, (cx + 0.5) / bx - 0.5, w // bx
        fy, cy, h = fy / by, (cy + 0.5) / by - 0.5, h // by
    D = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    distorted = source == "K" and D.size > 0 and bool(np.any(D != 0))
    return CameraInfo(
        PinholeCamera(float(fx), float(fy), float(cx), float(cy), w, h), distorted, str(msg.header.frame_id)
    )


def encode_camera_info(f: MessageFactory, camera: PinholeCamera, stamp_ns: int, frame_id: str):
    """A rectified, distortion-free sensor_msgs/CameraInfo for ``camera``."""
    K = camera.K
    P = np.zeros((3, 4))
    P[:, :3] = K
    return f(
        "sensor_msgs/msg/CameraInfo",
        header=make_header(f, stamp_ns, frame_id),
        height=int(camera.height),
        width=int(camera.width),
        distortion_model="plumb_bob",
        d=f.float_array(np.zeros(5)),
        k=K.reshape(-1).astype(np.float64),
        r=np.eye(3).reshape(-1),
        p=P.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=f("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


# --------------------------------------------------------------------------------------------
# Poses and transforms


def transform_to_matrix(transform, what: str = "transform") -> np.ndarray:
    """geometry_msgs/Transform -> 4x4, checked (finite, quaternion of unit length within 1e-3)."""
    t, q = transform.translation, transform.rotation
    return _matrix(np.array([t.x, t.y, t.z], dtype=np.float64), np.array([q.x, q.y, q.z, q.w], dtype=np.float64), what)


def pose_to_matrix(pose, what: str = "pose") -> np.ndarray:
    """geometry_msgs/Pose -> 4x4, checked like :func:`transform_to_matrix`."""
    p, q = pose.position, pose.orientation
    return _matrix(np.array([p.x, p.y, p.z], dtype=np.float64), np.array([q.x, q.y, q.z, q.w], dtype=np.float64), what)


def _matrix(t: np.ndarray, q: np.ndarray, what: str) -> np.ndarray:
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise MessageError(f"{what} contains NaN or infinite values")
    n = float(np.linalg.norm(q))
    if abs(n - 1.0) > 1e-3:
        raise MessageError(f"{what} has a quaternion of length {n:.4f}, not a rotation")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_matrix(q / n)
    T[:3, 3] = t
    return T


def _position_orientation(f: MessageFactory, T: np.ndarray):
    T = check_transform(T, "pose to publish")
    q = matrix_to_quaternion(T[:3, :3])
    return T[:3, 3], q


def make_pose_message(f: MessageFactory, T: np.ndarray):
    """A geometry_msgs/Pose of the 4x4 transform ``T``."""
    t, q = _position_orientation(f, T)
    return f(
        "geometry_msgs/msg/Pose",
        position=f("geometry_msgs/msg/Point", x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=f("geometry_msgs/msg/Quaternion", x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def make_pose_stamped(f: MessageFactory, T: np.ndarray, stamp_ns: int, frame_id: str):
    return f("geometry_msgs/msg/PoseStamped", header=make_header(f, stamp_ns, frame_id), pose=make_pose_message(f, T))


def make_pose_with_covariance_stamped(
    f: MessageFactory, T: np.ndarray, covariance: np.ndarray, stamp_ns: int, frame_id: str
):
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (6, 6) or not np.all(np.isfinite(cov)):
        raise MessageError(f"pose covariance must be a finite 6x6 matrix, got shape {cov.shape}")
    return f(
        "geometry_msgs/msg/PoseWithCovarianceStamped",
        header=make_header(f, stamp_ns, frame_id),
        pose=f("geometry_msgs/msg/PoseWithCovariance", pose=make_pose_message(f, T), covariance=cov.reshape(-1).copy()),
    )


def make_odometry(f: MessageFactory, T: np.ndarray, stamp_ns: int, parent: str, child: str):
    """A nav_msgs/Odometry: the pose ``T`` (T_parent_child) of ``child`` in ``parent``; twist and
    covariances zero (unknown)."""
    vector = f("geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=0.0)
    return f(
        "nav_msgs/msg/Odometry",
        header=make_header(f, stamp_ns, parent),
        child_frame_id=str(child),
        pose=f("geometry_msgs/msg/PoseWithCovariance", pose=make_pose_message(f, T), covariance=np.zeros(36)),
        twist=f(
            "geometry_msgs/msg/TwistWithCovariance",
            twist=f("geometry_msgs/msg/Twist", linear=vector, angular=vector),
            covariance=np.zeros(36),
        ),
    )


def make_transform_stamped(f: MessageFactory, T: np.ndarray, stamp_ns: int, parent: str, child: str):
    """T = T_parent_child: the pose of ``child`` in ``parent`` (tf2's parent->child transform)."""
    t, q = _position_orientation(f, T)
    return f(
        "geometry_msgs/msg/TransformStamped",
        header=make_header(f, stamp_ns, parent),
        child_frame_id=str(child),
        transform=f(
            "geometry_msgs/msg/Transform",
            translation=f("geometry_msgs/msg/Vector3", x=float(t[0]), y=float(t[1]), z=float(t[2])),
            rotation=f("geometry_msgs/msg/Quaternion", x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
        ),
    )


# --------------------------------------------------------------------------------------------
# Point clouds

POINT_FIELD_UINT32 = 6  # sensor_msgs/PointField.UINT32
POINT_FIELD_FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
# x, y, z, rgb: rgb is rviz's convention, a float32 field whose bytes are 0x00RRGGBB (little endian).
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
# With point labels (the predicted region / partition of each scene point): a uint32 "label"
# field, which rviz's Intensity colour transformer can colour by.
LABELLED_CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("label", "<u4")])


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 -> (N,) uint32 0x00RRGGBB."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]


def make_point_cloud(
    f: MessageFactory, xyz: np.ndarray, rgb: np.ndarray, stamp_ns: int, frame_id: str, labels: np.ndarray | None = None
):
    """Points (N, 3) metres and colours (N, 3) uint8 -> unordered sensor_msgs/PointCloud2 (x, y, z, rgb),
    plus a uint32 ``label`` field when ``labels`` (N,) non-negative integers are given.

    Non-finite points are dropped so the cloud is dense.
    """
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    rgb = np.asarray(rgb).reshape(-1, 3)
    if len(rgb) != len(xyz):
        raise MessageError(f"{len(xyz)} points but {len(rgb)} colours")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(xyz) or (len(labels) and labels.min() < 0):
            raise MessageError(f"{len(xyz)} points need as many non-negative labels, got {len(labels)}")
    dtype = CLOUD_DTYPE if labels is None else LABELLED_CLOUD_DTYPE
    keep = np.all(np.isfinite(xyz), axis=1) & np.all(np.abs(xyz) < 3e38, axis=1)
    cloud = np.empty(int(keep.sum()), dtype=dtype)
    for i, axis in enumerate("xyz"):
        cloud[axis] = xyz[keep, i]
    cloud["rgb"] = pack_rgb(rgb[keep])
    if labels is not None:
        cloud["label"] = labels[keep]
    fields = [
        f(
            "sensor_msgs/msg/PointField",
            name=name,
            offset=int(dtype.fields[name][1]),
            datatype=POINT_FIELD_UINT32 if name == "label" else POINT_FIELD_FLOAT32,
            count=1,
        )
        for name in dtype.names
    ]
    return f(
        "sensor_msgs/msg/PointCloud2",
        header=make_header(f, stamp_ns, frame_id),
        height=1,
        width=int(len(cloud)),
        fields=fields,
        is_bigendian=False,
        point_step=int(dtype.itemsize),
        row_step=int(dtype.itemsize * len(cloud)),
        data=f.byte_array(cloud.view(np.uint8).reshape(-1)),
        is_dense=True,
    )


def read_point_cloud(msg) -> tuple[np.ndarray, np.ndarray | None]:
    """sensor_msgs/PointCloud2 with float32 x, y, z (and optionally rgb) -> (N, 3) float32, (N, 3) uint8 or None."""
    offsets = {fld.name: (int(fld.offset), int(fld.datatype)) for fld in msg.fields}
    for axis in "xyz":
        if offsets.get(axis, (0, 0))[1] != POINT_FIELD_FLOAT32:
            raise MessageError(f"point cloud has no float32 {axis!r} field")
    step, n = int(msg.point_step), int(msg.width) * int(msg.height)
    data = _bytes(msg.data)
    if data.size < step * n:
        raise MessageError(f"point cloud data has {data.size} bytes, expected {step * n}")
    end = ">" if msg.is_bigendian else "<"
    names = ["x", "y", "z"] + (["rgb"] if "rgb" in offsets else [])
    dtype = np.dtype(
        {
            "names": names,
            "formats": [end + "f4"] * 3 + [end + "u4"] * (len(names) - 3),
            "offsets": [offsets[k][0] for k in names],
            "itemsize": step,
        }
    )
    rec = np.frombuffer(data[: step * n].tobytes(), dtype=dtype)
    xyz = np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float32)
    if "rgb" not in offsets:
        return xyz, None
    packed = rec["rgb"].astype(np.uint32)
    return xyz, np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1).astype(np.uint8)


def read_point_labels(msg) -> np.ndarray | None:
    """The uint32 ``label`` field (N,) of a sensor_msgs/PointCloud2, or None when it has none."""
    offsets = {fld.name: (int(fld.offset), int(fld.datatype)) for fld in msg.fields}
    if "label" not in offsets:
        return None
    if offsets["label"][1] != POINT_FIELD_UINT32:
        raise MessageError("point cloud's label field is not uint32")
    step, n = int(msg.point_step), int(msg.width) * int(msg.height)
    data = _bytes(msg.data)
    if data.size < step * n or offsets["label"][0] + 4 > step:
        raise MessageError(f"point cloud data has {data.size} bytes, expected {step * n}")
    dtype = np.dtype(
        {
            "names": ["label"],
            "formats": [(">" if msg.is_bigendian else "<") + "u4"],
            "offsets": [offsets["label"][0]],
            "itemsize": step,
        }
    )
    return np.frombuffer(data[: step * n].tobytes(), dtype=dtype)["label"].astype(np.int64)

"""ROS message <-> numpy conversions, with the real ROS 2 message classes from the rosbags typestore.

Messages built here are serialized to CDR and read back, so a wrong field name or type fails the
same way it would in rclpy.
"""

import array

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from scr_ros.errors import MessageError
from scr_ros.geometry import PinholeCamera, camera_for_image, make_pose, rotation_about_axis
from scr_ros.messages import (
    decode_camera_info,
    decode_compressed_image,
    decode_depth,
    decode_image,
    encode_camera_info,
    encode_compressed_image,
    encode_image,
    make_point_cloud,
    make_pose_stamped,
    make_pose_with_covariance_stamped,
    make_transform_stamped,
    pose_to_matrix,
    read_point_cloud,
    rosbags_factory,
    stamp_to_ns,
    transform_to_matrix,
)

STORE = get_typestore(Stores.ROS2_HUMBLE)
F = rosbags_factory(STORE)
CAMERA = PinholeCamera(300.0, 310.0, 159.5, 119.5, 320, 240)


def roundtrip(msg):
    """Serialize with the ROS 2 CDR definitions and read back: proves the message is well-formed."""
    return STORE.deserialize_cdr(STORE.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


@pytest.fixture
def rgb(rng):
    return rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)


def raw_image(data: np.ndarray, encoding: str, step: int | None = None, bigendian: bool = False):
    h, w = data.shape[:2]
    row = data.reshape(h, -1).view(np.uint8)
    step = step or row.shape[1]
    buf = np.zeros((h, step), np.uint8)
    buf[:, : row.shape[1]] = row
    return STORE.types["sensor_msgs/msg/Image"](
        header=F("std_msgs/msg/Header", stamp=F("builtin_interfaces/msg/Time", sec=1, nanosec=2), frame_id="cam"),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=step,
        data=buf.reshape(-1),
    )


def test_rgb_bgr_rgba_bgra_mono_decode_to_rgb_or_grey(rgb):
    assert np.array_equal(decode_image(raw_image(rgb, "rgb8")), rgb)
    assert np.array_equal(decode_image(raw_image(np.ascontiguousarray(rgb[..., ::-1]), "bgr8")), rgb)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], axis=2)
    assert np.array_equal(decode_image(raw_image(rgba, "rgba8")), rgb)
    bgra = np.ascontiguousarray(rgba[..., [2, 1, 0, 3]])
    assert np.array_equal(decode_image(raw_image(bgra, "bgra8")), rgb)
    grey = rgb[..., 0]
    assert np.array_equal(decode_image(raw_image(grey, "mono8")), grey)


def test_mono16_is_scaled_to_8_bit_in_either_byte_order():
    v = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    expected = np.array([[0, 1, 255, 128]], np.uint8)
    assert np.array_equal(decode_image(raw_image(v.astype("<u2"), "mono16")), expected)
    assert np.array_equal(decode_image(raw_image(v.astype(">u2"), "mono16", bigendian=True)), expected)


def test_row_padding_in_step_is_ignored(rgb):
    msg = raw_image(rgb, "rgb8", step=rgb.shape[1] * 3 + 13)
    assert np.array_equal(decode_image(msg), rgb)


def test_yuv422_decodes_to_colour():
    grey_uyvy = np.full((4, 8, 2), 128, np.uint8)
    grey_uyvy[..., 1] = 200  # Y
    out = decode_image(raw_image(grey_uyvy, "yuv422"))
    assert out.shape == (4, 8, 3) and np.all(np.abs(out.astype(int) - out[0, 0, 0]) <= 2)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda m: setattr(m, "encoding", "bayer_rggb8"), "unsupported image encoding"),
        (lambda m: setattr(m, "data", m.data[:-1]), "expected step x height"),
        (lambda m: setattr(m, "step", 5), "step 5 is smaller"),
        (lambda m: setattr(m, "width", 0), "size 0x"),
    ],
)
def test_malformed_images_are_refused_with_the_reason(rgb, edit, needle):
    msg = raw_image(rgb, "rgb8")
    edit(msg)
    with pytest.raises(MessageError, match=needle):
        decode_image(msg)


def test_depth_32fc1_and_16uc1_give_metres_with_nan_for_invalid():
    mm = np.array([[0, 1000, 2500]], np.uint16)
    assert np.allclose(decode_depth(raw_image(mm, "16UC1")), [[np.nan, 1.0, 2.5]], equal_nan=True)
    m = np.array([[np.nan, 0.0, 1.25, np.inf]], np.float32)
    assert np.allclose(decode_depth(raw_image(m, "32FC1")), [[np.nan, np.nan, 1.25, np.nan]], equal_nan=True)
    with pytest.raises(MessageError, match="depth encoding"):
        decode_depth(raw_image(np.zeros((2, 2, 3), np.uint8), "rgb8"))


def test_encode_image_round_trips_through_cdr(rgb):
    for image in (rgb, rgb[..., 1], (rgb[..., 0].astype(np.float32) / 10.0)):
        msg = roundtrip(encode_image(F, image, 5_000_000_123, "cam"))
        out = decode_depth(msg) if image.dtype == np.float32 else decode_image(msg)
        expected = np.where(image > 0, image, np.nan) if image.dtype == np.float32 else image
        assert np.allclose(out, expected, equal_nan=True)
        assert stamp_to_ns(msg.header.stamp) == 5_000_000_123 and msg.header.frame_id == "cam"


def test_compressed_jpeg_and_png(rgb):
    smooth = cv2.GaussianBlur(cv2.resize(rgb, (128, 96)), (9, 9), 3)
    msg = roundtrip(encode_compressed_image(F, smooth, 1, "cam", quality=95))
    out = decode_compressed_image(msg)
    assert out.shape == smooth.shape and np.abs(out.astype(int) - smooth).mean() < 3.0
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    png_msg = F(
        "sensor_msgs/msg/CompressedImage", header=msg.header, format="rgb8; png compressed bgr8", data=png.reshape(-1)
    )
    assert np.array_equal(decode_compressed_image(png_msg), rgb)
    png_msg.data = png.reshape(-1)[:40]
    with pytest.raises(MessageError, match="cannot decode"):
        decode_compressed_image(png_msg)


def test_rclpy_style_array_payload_decodes(rgb):
    """rclpy stores uint8[] as array.array('B'); decoding must take it as is."""
    msg = raw_image(rgb, "rgb8")
    msg.data = array.array("B", msg.data.tobytes())
    assert np.array_equal(decode_image(msg), rgb)


def test_camera_info_round_trip_and_refusals():
    msg = roundtrip(encode_camera_info(F, CAMERA, 7, "cam"))
    info = decode_camera_info(msg)
    assert info.camera == CAMERA and not info.distorted and info.frame_id == "cam"
    assert decode_camera_info(msg, "P").camera == CAMERA
    msg.k = np.zeros(9)
    with pytest.raises(MessageError, match="all zeros"):
        decode_camera_info(msg)
    msg.k = np.array([300.0, 0, 159.5, 0, np.nan, 119.5, 0, 0, 1])
    with pytest.raises(MessageError, match="NaN"):
        decode_camera_info(msg)


def test_camera_info_binning_and_roi_follow_rep104():
    msg = encode_camera_info(F, PinholeCamera(600.0, 600.0, 319.5, 239.5, 640, 480), 0, "cam")
    msg.binning_x = msg.binning_y = 2
    binned = decode_camera_info(msg).camera
    assert (binned.width, binned.height) == (320, 240)
    assert np.allclose([binned.fx, binned.cx, binned.cy], [300.0, 159.5, 119.5])
    msg.binning_x = msg.binning_y = 0
    msg.roi = F("sensor_msgs/msg/RegionOfInterest", x_offset=100, y_offset=50, height=200, width=300, do_rectify=False)
    crop = decode_camera_info(msg).camera
    assert (crop.width, crop.height, crop.cx, crop.cy) == (300, 200, 219.5, 189.5)


def test_distortion_is_flagged():
    msg = encode_camera_info(F, CAMERA, 0, "cam")
    msg.d = np.array([0.1, 0, 0, 0, 0])
    assert decode_camera_info(msg).distorted


def test_camera_for_resized_image():
    assert camera_for_image(CAMERA, 320, 240, True) is CAMERA
    half = camera_for_image(CAMERA, 160, 120, True)
    assert np.isclose(half.fx, 150.0) and (half.width, half.height) == (160, 120)
    with pytest.raises(MessageError, match="scaling is disabled"):
        camera_for_image(CAMERA, 160, 120, False)
    with pytest.raises(MessageError, match="320x240"):
        camera_for_image(CAMERA, 320, 100, True)


def test_pose_and_transform_messages_round_trip(rng):
    T = make_pose(rotation_about_axis(rng.normal(size=3), 1.1), rng.normal(size=3))
    pose = roundtrip(make_pose_stamped(F, T, 42, "map"))
    assert np.allclose(pose_to_matrix(pose.pose), T) and pose.header.frame_id == "map"
    tf = roundtrip(make_transform_stamped(F, T, 42, "map", "odom"))
    assert np.allclose(transform_to_matrix(tf.transform), T) and tf.child_frame_id == "odom"
    cov = np.diag(np.arange(1.0, 7.0))
    pwc = roundtrip(make_pose_with_covariance_stamped(F, T, cov, 42, "map"))
    assert np.allclose(np.asarray(pwc.pose.covariance).reshape(6, 6), cov)


def test_nan_and_non_unit_quaternions_are_refused(rng):
    tf = make_transform_stamped(F, np.eye(4), 0, "a", "b")
    tf.transform.rotation.w = 0.5
    with pytest.raises(MessageError, match="quaternion of length"):
        transform_to_matrix(tf.transform)
    tf.transform.rotation.w = 1.0
    tf.transform.translation.x = float("nan")
    with pytest.raises(MessageError, match="NaN"):
        transform_to_matrix(tf.transform)
    bad = np.eye(4)
    bad[0, 0] = 2.0
    with pytest.raises(MessageError):
        make_pose_stamped(F, bad, 0, "map")


def test_point_cloud_packs_xyz_rgb_and_drops_non_finite(rng):
    xyz = rng.normal(size=(100, 3))
    xyz[5] = np.nan
    rgb = rng.integers(0, 256, size=(100, 3)).astype(np.uint8)
    msg = roundtrip(make_point_cloud(F, xyz, rgb, 9, "map"))
    assert msg.width == 99 and msg.height == 1 and msg.point_step == 16 and msg.row_step == 16 * 99 and msg.is_dense
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"] and all(f.datatype == 7 for f in msg.fields)
    out_xyz, out_rgb = read_point_cloud(msg)
    keep = np.arange(100) != 5
    assert np.allclose(out_xyz, xyz[keep].astype(np.float32)) and np.array_equal(out_rgb, rgb[keep])
    # rviz reads rgb as the float32 whose bytes are 0x00RRGGBB (little endian)
    first = msg.data[12:16].view("<u4")[0]
    assert first == (int(rgb[0, 0]) << 16 | int(rgb[0, 1]) << 8 | int(rgb[0, 2]))


def test_empty_point_cloud_is_valid():
    msg = roundtrip(make_point_cloud(F, np.zeros((0, 3)), np.zeros((0, 3), np.uint8), 0, "map"))
    assert msg.width == 0 and len(read_point_cloud(msg)[0]) == 0

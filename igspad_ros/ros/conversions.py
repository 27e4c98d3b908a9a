"""rclpy message <-> numpy glue for the inspector node (topics and types in DESIGN.md).

Pixel conversion itself is ``igspad_ros.data.image_encoding`` (the same path the bag tools
use); this module only moves those fields in and out of rclpy messages, copies headers,
reads a CameraInfo's intrinsics and lens model, and draws the overlay that RViz shows.

The standard perception messages (vision_msgs Detection3DArray and Classification, the
tf2_msgs TFMessage of the object frame) ship with every ROS 2 install but not as PyPI
wheels: they are built where their packages import (``HAVE_VISION_MSGS``,
``HAVE_TF2_MSGS``), and the node publishes them only there.
"""
import array

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose, PoseStamped, TransformStamped
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from igspad_ros.core import cameras, undistort
from igspad_ros.data.image_encoding import (ImageDecodeError, decode_compressed, decode_image,
                                            encode_image)

try:
    from vision_msgs.msg import Classification, Detection3D, Detection3DArray, ObjectHypothesis
    from vision_msgs.msg import ObjectHypothesisWithPose
    HAVE_VISION_MSGS = True
except ImportError:     # PyPI's ROS wheels lack vision_msgs; every ROS install has it
    HAVE_VISION_MSGS = False
try:
    from tf2_msgs.msg import TFMessage
    HAVE_TF2_MSGS = True
except ImportError:
    HAVE_TF2_MSGS = False

# Encodings a camera image may have; 32FC1 is data (an anomaly map), not a camera image.
CAMERA_ENCODINGS = ('rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8',
                    'rgb16', 'bgr16', 'mono16', 'rgba16', 'bgra16')


def copy_header(header):
    """Return a new std_msgs/Header equal to ``header`` (outputs never share the input's)."""
    return Header(stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec),
                  frame_id=header.frame_id)


def stamp_ns(stamp):
    """Nanoseconds of a builtin_interfaces/Time (a header's stamp)."""
    return int(stamp.sec) * 10**9 + int(stamp.nanosec)


def image_from_msg(msg, max_side):
    """Decode a camera sensor_msgs/Image to (H, W, 3) float32 RGB; raises ImageDecodeError."""
    if msg.encoding not in CAMERA_ENCODINGS:
        raise ImageDecodeError(f'encoding: {msg.encoding!r} is not a camera image encoding '
                               f'({", ".join(CAMERA_ENCODINGS)})')
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                        msg.is_bigendian, max_side)


def image_from_compressed(msg, max_side):
    """Decode a PNG/JPEG sensor_msgs/CompressedImage to (H, W, 3) float32 RGB.

    The size is read from the file header first, so a small file that claims a huge image
    is rejected before anything is decompressed. Raises ImageDecodeError.
    """
    pixels = decode_compressed(msg.data, max_side, cv2.IMREAD_COLOR_RGB)
    return np.divide(pixels, np.float32(255.0), dtype=np.float32)


def image_msg(image, encoding, header):
    """Return a sensor_msgs/Image of a numpy image in ``encoding`` with a copy of ``header``."""
    fields = encode_image(image, encoding)
    # array.array('B') is the field's own type: assigning bytes would check every byte
    return Image(header=copy_header(header), height=fields['height'], width=fields['width'],
                 encoding=fields['encoding'], is_bigendian=fields['is_bigendian'],
                 step=fields['step'], data=array.array('B', fields['data']))


def pose_msg(viewmat, header):
    """Return a geometry_msgs/PoseStamped of a viewmat: the object in the camera optical frame."""
    return PoseStamped(header=copy_header(header), pose=_pose(viewmat))


def _pose(viewmat, point=(0.0, 0.0, 0.0)):
    """geometry_msgs/Pose of a viewmat's rotation at ``point`` of the object frame."""
    viewmat = np.asarray(viewmat, dtype=np.float64)
    msg = Pose()
    x, y, z, w = Rotation.from_matrix(viewmat[:3, :3]).as_quat()
    position = viewmat[:3, :3] @ np.asarray(point, dtype=np.float64) + viewmat[:3, 3]
    msg.position.x, msg.position.y, msg.position.z = (float(v) for v in position)
    msg.orientation.x, msg.orientation.y = float(x), float(y)
    msg.orientation.z, msg.orientation.w = float(z), float(w)
    return msg


def detections_msg(viewmat, score, class_id, box, header):
    """vision_msgs/Detection3DArray of the one inspected object.

    The hypothesis: ``class_id`` (the scene's name) with ``score`` (the image score) at the
    object's pose in the camera optical frame; ``box`` ((3,) centre, (3,) size) is the
    object's box in its own frame, so ``bbox.center`` is that centre seen from the camera,
    with the object's orientation.
    """
    centre, size = box
    detection = Detection3D(header=copy_header(header), id=class_id)
    hypothesis = ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = class_id, float(score)
    hypothesis.pose.pose = _pose(viewmat)
    detection.results = [hypothesis]
    detection.bbox.center = _pose(viewmat, centre)
    detection.bbox.size.x, detection.bbox.size.y, detection.bbox.size.z = (
        float(v) for v in size)
    return Detection3DArray(header=copy_header(header), detections=[detection])


def classification_msg(anomalous, score, header):
    """vision_msgs/Classification: class 'anomalous' or 'normal', scored by the image score."""
    return Classification(header=copy_header(header), results=[ObjectHypothesis(
        class_id='anomalous' if anomalous else 'normal', score=float(score))])


def transform_msg(viewmat, child_frame_id, header):
    """tf2_msgs/TFMessage: the object frame ``child_frame_id`` in the image's frame."""
    pose = _pose(viewmat)
    msg = TransformStamped(header=copy_header(header), child_frame_id=child_frame_id)
    translation = msg.transform.translation
    translation.x, translation.y, translation.z = (pose.position.x, pose.position.y,
                                                   pose.position.z)
    msg.transform.rotation.x, msg.transform.rotation.y = (pose.orientation.x,
                                                          pose.orientation.y)
    msg.transform.rotation.z, msg.transform.rotation.w = (pose.orientation.z,
                                                          pose.orientation.w)
    return TFMessage(transforms=[msg])


def diagnostic_array(header, name, level, message, values, hardware_id=''):
    """Return a DiagnosticArray holding one status; ``values`` become key/value strings."""
    status = DiagnosticStatus(level=level, name=name, message=message,
                              hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=_text(v)) for k, v in values.items()])
    return DiagnosticArray(header=copy_header(header), status=[status])


def overlay(image, amap, scale, alpha=0.5):
    """Blend the anomaly map as a JET heatmap over the image; returns (H, W, 3) uint8 RGB.

    Map values are divided by ``scale`` (twice the threshold puts the threshold mid-range,
    green) and clipped to [0, 1]; a non-positive scale falls back to the map's maximum.
    """
    if scale <= 0:
        scale = max(float(amap.max()), 1e-12)
    level = np.clip(amap / scale, 0.0, 1.0)
    heat = cv2.applyColorMap(np.round(level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return np.round(((1.0 - alpha) * image + alpha * heat) * 255).astype(np.uint8)


def intrinsics_for(width, height, scene_K, scene_size, camera_info=None):
    """K for an image of ``width`` x ``height``: camera_info's, else the scene's, rescaled.

    ``camera_info`` is (K (3, 3), (w, h)) from the last CameraInfo or None; its K is rescaled
    when the image size differs from the one it was calibrated for.
    """
    K, size = (scene_K, scene_size) if camera_info is None else camera_info
    if tuple(size) == (width, height):
        return np.asarray(K, dtype=np.float64)
    return cameras.scale_intrinsics(K, size, (width, height))


def camera_info_intrinsics(msg):
    """(K, (w, h)) of a sensor_msgs/CameraInfo; raises ValueError for an unusable one.

    The returned K is in this package's pixel-edge convention (``cameras.k_from_ros``).
    """
    K = cameras.k_from_ros(msg.k)
    if msg.width <= 0 or msg.height <= 0:
        raise ValueError(f'camera_info: size {msg.width}x{msg.height} is empty')
    if not np.any(np.asarray(msg.k, dtype=np.float64)):
        raise ValueError('camera_info: k is all zero (an uncalibrated camera)')
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1.0:
        raise ValueError('camera_info: k is not a calibrated pinhole matrix '
                         '(positive fx, fy and k[8] = 1)')
    return K, (int(msg.width), int(msg.height))


def camera_info_distortion(msg):
    """undistort.Distortion of a CameraInfo's ``distortion_model`` and ``d``.

    An empty or all-zero ``d`` is no distortion whatever the model says; an unknown model
    with nonzero ``d``, or more nonzero coefficients than the model takes, raises
    ValueError naming the field.
    """
    return undistort.distortion_from_ros(msg.distortion_model, msg.d)


def _text(value):
    """Diagnostic value text: floats with full precision (repr), the rest as str."""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)

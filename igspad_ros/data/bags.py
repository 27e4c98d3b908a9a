"""MAD test split <-> rosbag2: the replayer's input bag (DESIGN.md, "MAD rosbag").

Every test image becomes one message on each of these topics, all at one timestamp (the
header stamp of the stamped ones and the bag's log time of all of them):

- ``/camera/image_raw``    sensor_msgs/Image rgb8
- ``/camera/camera_info``  sensor_msgs/CameraInfo (the image's own K, no distortion: test
  images are pinhole once loaded)
- ``/mad/ground_truth``    sensor_msgs/Image mono8, 255 on defect pixels, zeros for good
- ``/mad/defect_type``     std_msgs/String ("good", "Burrs", ...)
- ``/mad/image_path``      std_msgs/String, the image's path in the category ("test/Burrs/3.png")
- ``/mad/true_pose``       geometry_msgs/PoseStamped, the true viewmat (object in the camera
  optical frame, as the node's ``~/object_pose``); only where the category has test poses

Stamps start at a fixed instant and step by one second, so a bag is a pure function of its
category. Bags are rosbag2 version 9 (mcap or sqlite3) with Jazzy's message definitions:
only standard types, so ``ros2 bag play`` plays them. ROS-free: rosbags serialises.
"""
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability
from rosbags.interfaces import QosTime
from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from igspad_ros.core import cameras, undistort
from igspad_ros.data.image_encoding import ImageEncodingError, decode_image, encode_image

IMAGE_TOPIC = '/camera/image_raw'
CAMERA_INFO_TOPIC = '/camera/camera_info'
GROUND_TRUTH_TOPIC = '/mad/ground_truth'
DEFECT_TYPE_TOPIC = '/mad/defect_type'
IMAGE_PATH_TOPIC = '/mad/image_path'
TRUE_POSE_TOPIC = '/mad/true_pose'
FRAME_ID = 'camera_optical_frame'
START_NS = 1_704_067_200 * 10**9     # 2024-01-01T00:00:00Z, fixed so bags are reproducible
PERIOD_NS = 10**9
BAG_VERSION = 9
STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
CATEGORY_KEY = 'igspad_ros.category'   # metadata.yaml custom_data entry

IMAGE_TYPE = 'sensor_msgs/msg/Image'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
STRING_TYPE = 'std_msgs/msg/String'
POSE_TYPE = 'geometry_msgs/msg/PoseStamped'
_TOPIC_TYPES = {IMAGE_TOPIC: IMAGE_TYPE, CAMERA_INFO_TOPIC: CAMERA_INFO_TYPE,
                GROUND_TRUTH_TOPIC: IMAGE_TYPE, DEFECT_TYPE_TOPIC: STRING_TYPE,
                IMAGE_PATH_TOPIC: STRING_TYPE, TRUE_POSE_TOPIC: POSE_TYPE}
# What a camera driver offers: reliable, volatile, keep the last 10 (rclcpp's default).
_QOS = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE,
           QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)


class BagFormatError(ValueError):
    """A bag is missing, unreadable, or not a MAD bag (a topic, message or field is wrong)."""


class BagExistsError(ValueError):
    """The output bag folder exists already; bags are never overwritten."""


@dataclass
class MadBagRecord:
    """One test image read back from a MAD bag."""

    stamp_ns: int
    image: np.ndarray          # (H, W, 3) float32 RGB in [0, 1]
    mask: np.ndarray           # (H, W) bool, all False for good
    defect_type: str
    rel_path: str              # "test/Burrs/3.png"
    K: np.ndarray | None       # (3, 3) float64 from /camera/camera_info, None without one
    true_viewmat: np.ndarray | None = None   # (4, 4) float64 from /mad/true_pose


@functools.lru_cache(maxsize=1)
def typestore():
    """Return the ROS 2 Jazzy type store, whose message definitions the bags carry."""
    return get_typestore(Stores.ROS2_JAZZY)


def stamp_of(index, start_ns=START_NS, period_ns=PERIOD_NS):
    """Timestamp in nanoseconds of the ``index``-th image of a bag."""
    return int(start_ns) + int(index) * int(period_ns)


def header(stamp_ns, frame_id=FRAME_ID):
    """Return a std_msgs/Header (Jazzy store) for a timestamp in nanoseconds."""
    types = typestore().types
    sec, nanosec = divmod(int(stamp_ns), 10**9)
    return types['std_msgs/msg/Header'](types['builtin_interfaces/msg/Time'](sec, nanosec),
                                        frame_id)


def image_message(image, encoding, stamp_ns, frame_id=FRAME_ID):
    """Return a sensor_msgs/Image (Jazzy store) holding a numpy image in ``encoding``."""
    fields = encode_image(image, encoding)
    return typestore().types[IMAGE_TYPE](
        header(stamp_ns, frame_id), fields['height'], fields['width'], fields['encoding'],
        fields['is_bigendian'], fields['step'], np.frombuffer(fields['data'], np.uint8))


def camera_info_message(K, width, height, stamp_ns, frame_id=FRAME_ID, distortion=None):
    """Return a sensor_msgs/CameraInfo (Jazzy store): K in ROS convention, P = [K|0].

    ``distortion`` (an ``undistort.Distortion``) becomes ``distortion_model`` and ``d``;
    None writes plumb_bob with five zeros (a pinhole).
    """
    types = typestore().types
    model, d = undistort.distortion_to_ros(distortion or undistort.NO_DISTORTION)
    K = cameras.k_to_ros(K)
    P = np.hstack([K, np.zeros((3, 1))])
    roi = types['sensor_msgs/msg/RegionOfInterest'](0, 0, 0, 0, False)
    return types[CAMERA_INFO_TYPE](
        header(stamp_ns, frame_id), int(height), int(width), model,
        np.asarray(d, dtype=np.float64),
        K.reshape(-1).copy(), np.eye(3).reshape(-1), P.reshape(-1), 0, 0, roi)


def pose_message(viewmat, stamp_ns, frame_id=FRAME_ID):
    """Return a geometry_msgs/PoseStamped (Jazzy store) of a viewmat: object in camera frame."""
    types = typestore().types
    viewmat = np.asarray(viewmat, dtype=np.float64)
    x, y, z, w = Rotation.from_matrix(viewmat[:3, :3]).as_quat()
    position = types['geometry_msgs/msg/Point'](*(float(v) for v in viewmat[:3, 3]))
    orientation = types['geometry_msgs/msg/Quaternion'](float(x), float(y), float(z), float(w))
    return types[POSE_TYPE](header(stamp_ns, frame_id),
                            types['geometry_msgs/msg/Pose'](position, orientation))


def pose_to_viewmat(pose):
    """(4, 4) float64 viewmat of a geometry_msgs/Pose (rosbags or rclpy message)."""
    q = pose.orientation
    viewmat = np.eye(4)
    viewmat[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    viewmat[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return viewmat


def write_mad_bag(category, out, storage='mcap', start_ns=START_NS, period_ns=PERIOD_NS,
                  frame_id=FRAME_ID, progress=None):
    """Write the test split of a loaded ``Capture`` to a new rosbag2 folder ``out``.

    Returns the number of images written. ``storage`` is "mcap" or "sqlite3". Raises
    BagExistsError if ``out`` exists (never overwrites) and ValueError for a bad storage
    or an empty test split; ``progress`` is called with 1 after every image.
    """
    out = Path(out)
    if storage not in STORAGES:
        raise ValueError(f'storage must be one of {sorted(STORAGES)}, got {storage!r}')
    if out.exists():
        raise BagExistsError(f'{out}: exists already; choose a new bag folder (bags are '
                             f'never overwritten)')
    if not category.test:
        raise ValueError(f'{category.root}: the category has no test images')
    store = typestore()
    with Writer(out, version=BAG_VERSION, storage_plugin=STORAGES[storage]) as writer:
        writer.set_custom_data(CATEGORY_KEY, category.name)
        posed = any(t.true_viewmat is not None for t in category.test)
        conns = {topic: writer.add_connection(topic, msgtype, typestore=store,
                                              offered_qos_profiles=[_QOS])
                 for topic, msgtype in _TOPIC_TYPES.items()
                 if posed or topic != TRUE_POSE_TOPIC}
        for index, test in enumerate(category.test):
            stamp = stamp_of(index, start_ns, period_ns)
            mask = np.where(test.mask, np.uint8(255), np.uint8(0))
            messages = {
                IMAGE_TOPIC: image_message(test.image, 'rgb8', stamp, frame_id),
                CAMERA_INFO_TOPIC: camera_info_message(test.K, test.image.shape[1],
                                                       test.image.shape[0], stamp, frame_id),
                GROUND_TRUTH_TOPIC: image_message(mask, 'mono8', stamp, frame_id),
                DEFECT_TYPE_TOPIC: store.types[STRING_TYPE](test.defect_type),
                IMAGE_PATH_TOPIC: store.types[STRING_TYPE](test.rel_path),
            }
            if test.true_viewmat is not None:
                messages[TRUE_POSE_TOPIC] = pose_message(test.true_viewmat, stamp, frame_id)
            for topic, msg in messages.items():
                writer.write(conns[topic], stamp, store.serialize_cdr(msg, _TOPIC_TYPES[topic]))
            if progress is not None:
                progress(1)
    return len(category.test)


def bag_category(path):
    """Category name stored in a MAD bag's metadata, or the bag folder's name without one."""
    path = Path(path)
    try:
        meta = yaml.safe_load((path / 'metadata.yaml').read_text())
        custom = meta['rosbag2_bagfile_information'].get('custom_data') or {}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return path.name
    return str(custom.get(CATEGORY_KEY, path.name))


def iter_mad_bag(path):
    """Yield the MadBagRecords of a MAD bag in stamp order.

    Messages are grouped by the header stamp of the stamped topics and by the log time of
    the strings. Every stamp needs an image, a ground-truth mask and a defect type; the
    camera info, image path and true pose are optional (K None, path "stamp_<ns>",
    true_viewmat None). Raises
    BagFormatError naming the bag for anything else.
    """
    path = Path(path)
    groups = _read_groups(path)
    for stamp in sorted(groups):
        yield _record(path, stamp, groups[stamp])


def read_mad_bag(path):
    """Return every MadBagRecord of a MAD bag, in stamp order."""
    return list(iter_mad_bag(path))


def _read_groups(path):
    """{stamp_ns: {topic: deserialised message}} for the MAD topics of a bag."""
    if not (path / 'metadata.yaml').is_file():
        raise BagFormatError(f'{path}: not a rosbag2 folder (no metadata.yaml)')
    store = typestore()
    groups = {}
    try:
        with Reader(path) as reader:
            conns = [c for c in reader.connections if c.topic in _TOPIC_TYPES]
            for conn in conns:
                if conn.msgtype != _TOPIC_TYPES[conn.topic]:
                    raise BagFormatError(f'{path}: topic {conn.topic} has type {conn.msgtype}, '
                                         f'expected {_TOPIC_TYPES[conn.topic]}')
            if not any(c.topic == IMAGE_TOPIC for c in conns):
                raise BagFormatError(f'{path}: no {IMAGE_TOPIC} topic')
            for conn, log_time, raw in reader.messages(connections=conns):
                msg = store.deserialize_cdr(raw, conn.msgtype)
                stamp = log_time
                if conn.msgtype != STRING_TYPE:
                    stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                topics = groups.setdefault(stamp, {})
                if conn.topic in topics:
                    raise BagFormatError(f'{path}: two {conn.topic} messages at stamp {stamp}')
                topics[conn.topic] = msg
    except BagFormatError:
        raise
    except Exception as err:   # rosbags raises many types for corrupt files
        raise BagFormatError(f'{path}: unreadable bag ({type(err).__name__}: {err})') from None
    return groups


def _record(path, stamp, topics):
    for topic in (IMAGE_TOPIC, GROUND_TRUTH_TOPIC, DEFECT_TYPE_TOPIC):
        if topic not in topics:
            raise BagFormatError(f'{path}: no {topic} message at stamp {stamp}')
    try:
        image = decode_image(topics[IMAGE_TOPIC])
        mask = decode_image(topics[GROUND_TRUTH_TOPIC])
    except ImageEncodingError as err:
        raise BagFormatError(f'{path}: stamp {stamp}: {err}') from None
    mask = (mask.max(axis=2) if mask.ndim == 3 else mask) > 0.5
    if mask.shape != image.shape[:2]:
        raise BagFormatError(f'{path}: stamp {stamp}: mask is {mask.shape[1]}x{mask.shape[0]} '
                             f'but its image is {image.shape[1]}x{image.shape[0]}')
    K = None
    if CAMERA_INFO_TOPIC in topics:
        K = cameras.k_from_ros(topics[CAMERA_INFO_TOPIC].k)
    rel_path = f'stamp_{stamp}'
    if IMAGE_PATH_TOPIC in topics:
        rel_path = topics[IMAGE_PATH_TOPIC].data
    true_viewmat = None
    if TRUE_POSE_TOPIC in topics:
        true_viewmat = pose_to_viewmat(topics[TRUE_POSE_TOPIC].pose)
    return MadBagRecord(int(stamp), image, mask, topics[DEFECT_TYPE_TOPIC].data, rel_path, K,
                        true_viewmat)

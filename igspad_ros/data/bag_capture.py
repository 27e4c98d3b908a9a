"""A robot's rosbag2 -> a nerfstudio ``transforms.json`` capture (``offline/bag_to_capture.py``).

Input (mcap or sqlite3, read with rosbags, no ROS install):

- images: sensor_msgs/Image (rgb8, bgr8, mono8, rgba/bgra, 16-bit) or
  sensor_msgs/CompressedImage (PNG, JPEG) on one topic; their ``header.frame_id`` is the
  camera's optical frame (REP 103: z forward, x right, y down);
- intrinsics: sensor_msgs/CameraInfo, K (ROS convention: pixel centres at integers), size,
  ``distortion_model`` + ``d``. Each image takes the CameraInfo of its stamp, else the
  latest one before it, else the first one;
- poses, one of two sources:
  - ``pose_topic``: geometry_msgs/PoseStamped, the pose of the camera optical frame in the
    world (``header.frame_id``), i.e. the OpenCV camera-to-world;
  - ``tf_parent``: ``/tf`` + ``/tf_static`` chained from ``tf_parent`` to each image's frame
    (``tf_tree.TfTree``), whose result is again the OpenCV camera-to-world.
  Either source is interpolated at the image stamp (linear translation, slerp rotation);
  an image outside the samples' time range is skipped and counted, never extrapolated.

Selection, in stamp order: a frame is *blurred* when the variance of the Laplacian of its
grey image is below ``blur_threshold`` times the median over all frames with a pose (0
disables). Relative, so it needs no tuning to the scene's texture or the image size: blur
removes most of the Laplacian's energy, while views of one object differ far less. A sharp
frame is *too close* when the camera moved less than ``min_translation`` (metres, TF's
unit) and rotated less than ``min_rotation_deg`` since the last kept frame.

Output, a new folder: ``images/frame_<n:05d>.png`` (the image as recorded, distorted, in
its own depth: 8 or 16 bit, grey or colour) and ``transforms.json``: ``transform_matrix``
Blender camera-to-world, ``stamp_ns`` per frame, and ``fl_x fl_y cx cy w h`` from
CameraInfo's K made pixel-edge (``cameras.k_from_ros``: cx, cy + 0.5, as nerfstudio counts
them) with ``camera_model`` PINHOLE, OPENCV (plumb_bob, rational_polynomial with k4..k6 = 0)
or OPENCV_FISHEYE (equidistant), globally or per frame when CameraInfo changed
(``transforms_writer``).
"""
import bisect
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import Reader

from igspad_ros.core import cameras, undistort
from igspad_ros.data import bags
from igspad_ros.data.image_encoding import (ENCODINGS, MAX_SIDE, ImageEncodingError,
                                            decode_compressed, decode_image)
from igspad_ros.data.tf_tree import TfChainError, TfTree, Trajectory, frame_name
from igspad_ros.data.transforms_writer import NerfstudioCamera, transforms_meta

DEFAULT_MIN_TRANSLATION = 0.01    # metres
DEFAULT_MIN_ROTATION_DEG = 2.0
DEFAULT_BLUR_THRESHOLD = 0.3      # fraction of the median Laplacian variance
TF_TOPIC = '/tf'
TF_STATIC_TOPIC = '/tf_static'
TF_TYPE = 'tf2_msgs/msg/TFMessage'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (bags.IMAGE_TYPE, COMPRESSED_TYPE)
TRANSFORMS = 'transforms.json'


class BagCaptureError(ValueError):
    """The bag, a topic, a message or the output folder does not allow a capture."""


@dataclass
class CaptureReport:
    """What ``bag_to_capture`` did: counts of images by fate, the camera, the output."""

    out: Path
    n_read: int
    n_kept: int
    n_too_close: int
    n_blurred: int
    n_no_pose: int
    camera_info_topic: str
    camera_info_picked: bool     # True: the bag's only CameraInfo topic, not named by the user
    camera_model: str
    per_frame_intrinsics: bool


@dataclass
class _Frame:
    index: int                   # position of the message on the image topic
    stamp: int
    c2w: np.ndarray              # OpenCV camera-to-world
    sharpness: float
    camera: NerfstudioCamera


def bag_to_capture(bag, out, image_topic, camera_info_topic=None, pose_topic=None,
                   tf_parent=None, min_translation=DEFAULT_MIN_TRANSLATION,
                   min_rotation_deg=DEFAULT_MIN_ROTATION_DEG,
                   blur_threshold=DEFAULT_BLUR_THRESHOLD, progress=None):
    """Write the keyframes of ``image_topic`` in ``bag`` as a transforms.json capture ``out``.

    Exactly one of ``pose_topic`` and ``tf_parent`` gives the poses. ``camera_info_topic``
    may be None when the bag has exactly one CameraInfo topic. ``out`` must be new or an
    empty folder, outside the bag. The bag is read twice (select, then write);
    ``progress(total)`` is called after every image message of each pass. Returns a
    CaptureReport; raises BagCaptureError (one line, naming the input) for user errors.
    """
    bag, out = Path(bag), Path(out)
    if (pose_topic is None) == (tf_parent is None):
        raise BagCaptureError('give exactly one pose source: a pose topic or a TF parent frame')
    for name, value in (('min_translation', min_translation),
                        ('min_rotation_deg', min_rotation_deg),
                        ('blur_threshold', blur_threshold)):
        if not np.isfinite(value) or value < 0:
            raise BagCaptureError(f'{name} must be a finite number >= 0, got {value}')
    _check_out(bag, out)
    with _open(bag) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        _expect(bag, topics, image_topic, IMAGE_TYPES)
        info_topic, picked = _camera_info_topic(bag, topics, camera_info_topic)
        infos = _read_camera_infos(reader, bag, info_topic)
        if pose_topic is not None:
            _expect(bag, topics, pose_topic, (bags.POSE_TYPE,))
            locate = _pose_locator(_read_poses(reader, bag, pose_topic))
        else:
            locate = _tf_locator(bag, _read_tf(reader, bag, topics), tf_parent)
        total = 2 * sum(c.msgcount for c in reader.connections if c.topic == image_topic)
        frames, n_read = _scan(reader, bag, image_topic, infos, locate, progress, total)
        kept, n_close, n_blurred = _select(frames, min_translation, min_rotation_deg,
                                           blur_threshold)
        if not kept:
            raise BagCaptureError(f'{bag}: no frame of {image_topic} kept ({n_read} read, '
                                  f'{n_read - len(frames)} without a pose, {n_close} too '
                                  f'close, {n_blurred} blurred)')
        model, per_frame = _write(reader, bag, image_topic, kept, out, progress, total)
    return CaptureReport(out, n_read, len(kept), n_close, n_blurred, n_read - len(frames),
                         info_topic, picked, model, per_frame)


def _check_out(bag, out):
    """Refuse an output that is a file, a non-empty folder, or inside the bag folder."""
    if not bag.is_dir():
        raise BagCaptureError(f'{bag}: no such bag folder')
    if not (bag / 'metadata.yaml').is_file():
        raise BagCaptureError(f'{bag}: not a rosbag2 folder (no metadata.yaml)')
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BagCaptureError(f'{out}: exists and is not an empty folder; choose a new one')
    if out.resolve().is_relative_to(bag.resolve()):
        raise BagCaptureError(f'{out}: inside the bag folder {bag}; write the capture elsewhere')


@contextlib.contextmanager
def _open(bag):
    """Open ``bag`` with rosbags for a with block; closes it on exit."""
    try:
        reader = Reader(bag)
        reader.open()
    except Exception as err:   # rosbags raises many types for corrupt bags
        raise BagCaptureError(f'{bag}: unreadable bag ({type(err).__name__}: {err})') from None
    try:
        yield reader
    finally:
        reader.close()


def _messages(reader, bag, topic):
    """Yield the deserialised messages of ``topic`` in log-time order."""
    conns = [c for c in reader.connections if c.topic == topic]
    store = bags.typestore()
    try:
        for conn, _, raw in reader.messages(connections=conns):
            yield store.deserialize_cdr(raw, conn.msgtype)
    except Exception as err:   # corrupt chunks, unknown definitions
        raise BagCaptureError(f'{bag}: unreadable messages on {topic} '
                              f'({type(err).__name__}: {err})') from None


def _expect(bag, topics, topic, types):
    if topic not in topics:
        raise BagCaptureError(f'{bag}: no topic {topic} (topics: {", ".join(sorted(topics))})')
    if topics[topic] not in types:
        raise BagCaptureError(f'{bag}: topic {topic} has type {topics[topic]}, expected '
                              f'{" or ".join(types)}')


def _camera_info_topic(bag, topics, topic):
    """(topic, picked): the named CameraInfo topic, else the bag's only one."""
    if topic is not None:
        _expect(bag, topics, topic, (bags.CAMERA_INFO_TYPE,))
        return topic, False
    found = sorted(t for t, kind in topics.items() if kind == bags.CAMERA_INFO_TYPE)
    if len(found) != 1:
        listed = f'it has {", ".join(found)}' if found else 'it has none'
        raise BagCaptureError(f'{bag}: name the CameraInfo topic with --camera-info-topic '
                              f'({listed})')
    return found[0], True


def _stamp(header):
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def _camera_info(msg):
    """NerfstudioCamera of a CameraInfo (K made pixel-edge); ValueError for an unusable one."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.shape != (9,) or not np.all(np.isfinite(k)) or k[0] <= 0 or k[4] <= 0 or k[8] != 1:
        raise ValueError('k is not a calibrated pinhole matrix (positive fx, fy, k[8] = 1)')
    if not (0 < msg.width <= MAX_SIDE and 0 < msg.height <= MAX_SIDE):
        raise ValueError(f'size {msg.width}x{msg.height} is empty or over {MAX_SIDE} px')
    if msg.binning_x > 1 or msg.binning_y > 1 or msg.roi.width or msg.roi.height:
        raise ValueError('binning and regions of interest are not supported')
    distortion = undistort.distortion_from_ros(msg.distortion_model, msg.d)
    K = cameras.k_from_ros(k)     # transforms.json's cx, cy are pixel-edge: ROS's + 0.5
    return NerfstudioCamera(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                            int(msg.width), int(msg.height), distortion)


def _read_camera_infos(reader, bag, topic):
    """([stamps], [CameraInfo]) sorted by stamp."""
    by_stamp = {}
    for msg in _messages(reader, bag, topic):
        try:
            by_stamp[_stamp(msg.header)] = _camera_info(msg)
        except ValueError as err:
            raise BagCaptureError(f'{bag}: {topic} at stamp {_stamp(msg.header)}: '
                                  f'{err}') from None
    if not by_stamp:
        raise BagCaptureError(f'{bag}: no message on {topic}')
    stamps = sorted(by_stamp)
    return stamps, [by_stamp[s] for s in stamps]


def _camera_at(infos, stamp):
    stamps, values = infos
    return values[max(bisect.bisect_right(stamps, stamp) - 1, 0)]


def _rigid(translation, rotation, what):
    try:
        return cameras.rigid_from_quaternion(
            [translation.x, translation.y, translation.z],
            [rotation.x, rotation.y, rotation.z, rotation.w])
    except ValueError as err:
        raise BagCaptureError(f'{what}: {err}') from None


def _read_poses(reader, bag, topic):
    poses = Trajectory()
    for msg in _messages(reader, bag, topic):
        stamp = _stamp(msg.header)
        poses.add(stamp, _rigid(msg.pose.position, msg.pose.orientation,
                                f'{bag}: {topic} at stamp {stamp}'))
    if not len(poses):
        raise BagCaptureError(f'{bag}: no message on {topic}')
    return poses


def _read_tf(reader, bag, topics):
    present = [t for t in (TF_TOPIC, TF_STATIC_TOPIC) if t in topics]
    if not present:
        raise BagCaptureError(f'{bag}: no {TF_TOPIC} or {TF_STATIC_TOPIC} topic for the poses')
    tree = TfTree()
    for topic in present:
        _expect(bag, topics, topic, (TF_TYPE,))
        for msg in _messages(reader, bag, topic):
            for tf in msg.transforms:
                stamp = _stamp(tf.header)
                T = _rigid(tf.transform.translation, tf.transform.rotation,
                           f'{bag}: {topic} {tf.header.frame_id} -> {tf.child_frame_id} '
                           f'at stamp {stamp}')
                tree.add(tf.header.frame_id, tf.child_frame_id, stamp, T,
                         static=topic == TF_STATIC_TOPIC)
    return tree


def _pose_locator(poses):
    def locate(frame_id, stamp):
        return poses.at(stamp)
    return locate


def _tf_locator(bag, tree, parent):
    def locate(frame_id, stamp):
        if not frame_name(frame_id):
            raise BagCaptureError(f'{bag}: image at stamp {stamp} has an empty frame_id; '
                                  f'TF cannot place it')
        try:
            return tree.lookup(parent, frame_id, stamp)
        except TfChainError as err:
            raise BagCaptureError(f'{bag}: {err}') from None
    return locate


def _decode(msg, msgtype):
    """(pixels for cv2.imencode: grey or BGR, uint8 or uint16, grey float32 in [0, 1])."""
    if msgtype == COMPRESSED_TYPE:
        return _decode_compressed(bytes(msg.data))
    if msg.encoding not in ENCODINGS or msg.encoding == '32FC1':
        raise ImageEncodingError(f'encoding: {msg.encoding!r} is not a camera image encoding')
    rgb = decode_image(msg)
    dtype = ENCODINGS[msg.encoding][1]
    full = float(np.iinfo(dtype).max)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    kept = rgb[:, :, 0] if msg.encoding.startswith('mono') else rgb[:, :, ::-1]
    return np.round(kept * full).astype(dtype), grey


def _decode_compressed(data):
    """Decode PNG/JPEG bytes as recorded (BGR or grey, 8/16 bit) and their grey in [0, 1]."""
    pixels = decode_compressed(data)
    if pixels.ndim == 3:
        pixels = pixels[:, :, :3]
    grey = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    return pixels, grey.astype(np.float32) / np.float32(np.iinfo(pixels.dtype).max)


def _sharpness(grey):
    """Variance of the Laplacian of a grey image: high for sharp, low for blurred."""
    return float(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F).var())


def _images(reader, bag, topic):
    """Yield (index, message, decode) of the image topic; ``decode()`` is ``_decode``'s."""
    msgtype = next(c.msgtype for c in reader.connections if c.topic == topic)
    for index, msg in enumerate(_messages(reader, bag, topic)):
        yield index, msg, lambda msg=msg: _decode_named(bag, topic, msg, msgtype)


def _decode_named(bag, topic, msg, msgtype):
    try:
        return _decode(msg, msgtype)
    except ImageEncodingError as err:
        raise BagCaptureError(f'{bag}: {topic} at stamp {_stamp(msg.header)}: {err}') from None


def _scan(reader, bag, topic, infos, locate, progress, total):
    """First pass: ([posed _Frame], number of images read)."""
    frames = []
    n_read = 0
    for index, msg, decode in _images(reader, bag, topic):
        n_read += 1
        pixels, grey = decode()
        stamp = _stamp(msg.header)
        camera = _camera_at(infos, stamp)
        if (camera.width, camera.height) != (pixels.shape[1], pixels.shape[0]):
            raise BagCaptureError(f'{bag}: {topic} at stamp {stamp} is {pixels.shape[1]}x'
                                  f'{pixels.shape[0]} but its CameraInfo is {camera.width}x'
                                  f'{camera.height}')
        c2w = locate(msg.header.frame_id, stamp)
        if c2w is not None:
            frames.append(_Frame(index, stamp, c2w, _sharpness(grey), camera))
        if progress is not None:
            progress(total)
    return frames, n_read


def _select(frames, min_translation, min_rotation_deg, blur_threshold):
    """(kept frames in stamp order, number too close, number blurred)."""
    frames = sorted(frames, key=lambda f: f.stamp)
    floor = 0.0
    if frames and blur_threshold > 0:
        floor = blur_threshold * float(np.median([f.sharpness for f in frames]))
    kept, n_close, n_blurred = [], 0, 0
    for frame in frames:
        if frame.sharpness < floor:
            n_blurred += 1
            continue
        if kept:
            last = kept[-1].c2w
            moved = np.linalg.norm(frame.c2w[:3, 3] - last[:3, 3])
            turned = cameras.rotation_error_deg(frame.c2w, last)
            if moved < min_translation and turned < min_rotation_deg:
                n_close += 1
                continue
        kept.append(frame)
    return kept, n_close, n_blurred


def _write(reader, bag, topic, kept, out, progress, total):
    """Second pass: the PNGs and transforms.json; returns (camera_model, per-frame)."""
    names = {f.index: f'images/frame_{n:05d}.png' for n, f in enumerate(kept)}
    frames = [{'file_path': names[f.index], 'stamp_ns': f.stamp, 'camera': f.camera,
               'viewmat': cameras.opencv_c2w_to_viewmat(f.c2w)} for f in kept]
    try:
        meta, per_frame = transforms_meta(frames)
    except ValueError as err:
        raise BagCaptureError(f'{bag}: {topic}: {err}') from None
    (out / 'images').mkdir(parents=True, exist_ok=True)
    for index, _, decode in _images(reader, bag, topic):
        if index in names:
            ok, png = cv2.imencode('.png', decode()[0])
            if not ok:
                raise BagCaptureError(f'{out}: could not encode {names[index]} as PNG')
            (out / names[index]).write_bytes(png.tobytes())
        if progress is not None:
            progress(total)
    (out / TRANSFORMS).write_text(json.dumps(meta, indent=1))
    return meta['camera_model'], per_frame

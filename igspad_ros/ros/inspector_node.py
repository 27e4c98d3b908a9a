"""The ``inspector`` node: camera images in, anomaly map, verdict, pose and overlay out.

Thin glue around ``core.inspector.Inspector`` (DESIGN.md, "ROS 2 node"): the model is loaded
once when the node starts (a missing or corrupt scene is a startup error, exit status 2);
the subscription callback only decodes and queues (``flow.FrameQueue``); one worker thread
undistorts and runs inference, so parameter services and /diagnostics stay responsive
meanwhile. Every output copies the input image's header. Bad input is logged once with its
reason, counted, and skipped.

Real cameras: the last good ``camera_info`` gives K and the lens model (``d`` with
plumb_bob, rational_polynomial or equidistant). A distorted image is undistorted (bicubic)
on the worker thread to the pinhole of the camera's own K and size, inspected there, and the
anomaly map is warped back (bilinear) to the input's pixel geometry; ``~/overlay`` is drawn
over the original input image, and input pixels that no pinhole pixel covers get 0 in the
map. ``~/rendered`` and ``~/object_pose`` are the pinhole's: the render lies in the
undistorted geometry (what ``image_proc`` calls image_rect), the pose is the camera's own.
The maps are cached per camera values (``rectify.Rectifier``: K, d, model, size), so a
driver that sends its CameraInfo with every image costs one build. An empty or all-zero
``d`` is a pinhole camera: no remap at all. A CameraInfo with an unknown
distortion_model, too many coefficients, a zero K or an empty size is rejected with a
warning, counted (``rejected_camera_info`` on /diagnostics), and images keep the last good
one (before any, the scene's intrinsics, no distortion).

Topics (DESIGN.md, "ROS 2 node"), outputs in the input image's pixel geometry except the
render:

- ``image`` / ``image/compressed`` (in): the camera; ``camera_info`` (in, optional).
- ``~/anomaly_map`` 32FC1, the input's size and geometry (warped back for a distorted
  camera, 0 where the pinhole has no source); ``~/overlay`` rgb8, its heatmap over the
  input image as received.
- ``~/rendered`` rgb8, the normal render at the estimated pose: the input's size, in the
  undistorted (pinhole, image_rect) geometry of the camera's K; identical to the input's
  geometry for a pinhole camera.
- ``~/object_pose``: the object in the camera optical frame; ``~/verdict``: values
  image_score, threshold, pose_residual, latency_ms, inference_ms, undistort_ms (undistortion
  and warp back, including a new camera's map build; 0 for a pinhole), <stage>_ms.
- ``/diagnostics``: health (processed, dropped, rejected, failed, rejected_camera_info,
  received, queue_depth, queue_mode, last_latency_ms).

A plain node rather than a lifecycle one: ``ros2 run``, the launch file and the bag replayer
start it without a lifecycle manager, and it subscribes only once the model is loaded, so no
image ever meets a half-loaded model.
"""
import math
import sys
import threading
import time
from dataclasses import replace

import cv2
import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from igspad_ros.core import undistort
from igspad_ros.core.features import DEFAULT_EXTRACTOR, EXTRACTOR_NAMES
from igspad_ros.core.inspector import Inspector, InspectorConfig
from igspad_ros.core.matching import DEFAULT_MATCHER, MATCHER_NAMES
from igspad_ros.data.image_encoding import MAX_SIDE, ImageDecodeError
from igspad_ros.ros import conversions
from igspad_ros.ros.flow import QUEUE_MODES, FrameQueue
from igspad_ros.ros.rectify import Rectifier

_DEFAULT = InspectorConfig()
# name: (default, description, (low, high) range or tuple of choices or None, read_only)
PARAMETERS = {
    'scene_path': ('', 'scene PLY; its retrieval index and threshold lie beside it', None, True),
    'device': ('auto', 'auto | cpu | cuda', ('auto', 'cpu', 'cuda'), True),
    'extractor': (DEFAULT_EXTRACTOR, 'feature extractor for scoring (eq. 5)', EXTRACTOR_NAMES,
                  True),
    'extractor_weights': ('', 'weights file of the extractor; empty = its default place',
                          None, True),
    'matcher': (DEFAULT_MATCHER, 'matcher for retrieval and MPS', MATCHER_NAMES, True),
    'igs_steps': (_DEFAULT.igs.steps, 'IGS steps (paper: 300; the lr decays at two thirds)',
                  (1, 10000), True),
    'igs_lr': (_DEFAULT.igs.lr, 'IGS initial learning rate, decayed tenfold (paper: 0.01)',
               (1e-6, 1.0), True),
    'mps': (True, 'Matching Points Sampling weights the IGS loss (paper 3.2.3)', None, True),
    'mps_radius': (0.0, 'MPS radius k in px; 0 = 8 % of the long image side', (0.0, 1000.0), True),
    'igs_working_size': (0, 'long side of the IGS renders; 0 = the input size (else >= 16)',
                         (0, MAX_SIDE), True),
    'retrieval_shortlist': (_DEFAULT.shortlist, 'training views matched with LightGlue for '
                            'the initial pose (cheapest-scored first); 0 = all', (0, 100000),
                            True),
    'threshold': (0.0, 'image-score threshold; 0 = the one calibrated with the scene',
                  (0.0, 1e6), False),
    'queue_mode': ('latest', 'latest: drop frames that arrive while busy; all: queue them',
                   QUEUE_MODES, True),
    'queue_size': (100, 'frames kept waiting in queue_mode all', (1, 10000), True),
    'compressed': (False, 'subscribe to image/compressed (PNG/JPEG) instead of image',
                   None, True),
    'max_image_side': (MAX_SIDE, 'larger input images are rejected', (16, MAX_SIDE), True),
    'diagnostics_period': (1.0, 'seconds between /diagnostics health reports',
                           (0.05, 60.0), True),
    'overlay_alpha': (0.5, 'weight of the heatmap in ~/overlay', (0.0, 1.0), False),
}
_RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)


class InspectorNode(Node):
    """rclpy node ``inspector`` serving ``Inspector.inspect`` on a camera topic."""

    def __init__(self, **kwargs):
        """Declare parameters, load the model, then subscribe; raises ValueError on bad config."""
        self._queue = self._worker = None    # until the model is loaded (see destroy_node)
        super().__init__('inspector', **kwargs)
        self.settings = {name: self._declare(name, *spec) for name, spec in PARAMETERS.items()}
        if not self.settings['scene_path']:
            raise ValueError('scene_path: not set (pass -p scene_path:=/path/to/scene.ply)')
        device = self.settings['device']
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        started = time.perf_counter()
        scene_path = self.settings['scene_path']
        self.inspector = Inspector(scene_path, _inspector_config(self.settings), device)
        self._scene_K, self._scene_size = self.inspector.K, self.inspector.size
        self.get_logger().info(
            f'loaded {scene_path} on {device} in {time.perf_counter() - started:.1f} s '
            f'(threshold {self.inspector.threshold:.4g}, '
            f'queue_mode {self.settings["queue_mode"]})')
        self._queue = FrameQueue(self.settings['queue_mode'], self.settings['queue_size'])
        self._lock = threading.Lock()
        self._camera_info = None                   # (K, (w, h)) of the last good CameraInfo
        self._distortion = undistort.NO_DISTORTION  # and its lens (both set on the executor)
        self._rectifier = Rectifier()               # maps per camera; worker thread only
        self._camera_info_error = None              # the last rejection's reason
        self.stats = {'processed': 0, 'rejected': 0, 'failed': 0, 'rejected_camera_info': 0,
                      'last_latency_ms': math.nan}
        self._reported = (0, 0, 0)
        self._pubs = {name: self.create_publisher(kind, f'~/{name}', _RELIABLE) for name, kind in
                      (('anomaly_map', Image), ('overlay', Image), ('rendered', Image),
                       ('object_pose', PoseStamped), ('verdict', DiagnosticArray))}
        self._health_pub = self.create_publisher(DiagnosticArray, '/diagnostics', _RELIABLE)
        # SensorData QoS (best effort, volatile), deep enough to hold a burst in 'all' mode
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST,
                         depth=max(qos_profile_sensor_data.depth, self._queue.maxsize),
                         reliability=qos_profile_sensor_data.reliability,
                         durability=qos_profile_sensor_data.durability)
        if self.settings['compressed']:
            self.create_subscription(CompressedImage, 'image/compressed', self._on_compressed,
                                     qos)
        else:
            self.create_subscription(Image, 'image', self._on_image, qos)
        self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info,
                                 qos_profile_sensor_data)
        self.create_timer(self.settings['diagnostics_period'], self._report_health)
        self._worker = threading.Thread(target=self._serve, name='inspector-worker',
                                        daemon=True)
        self._worker.start()

    def _declare(self, name, default, description, limits, read_only):
        descriptor = ParameterDescriptor(name=name, description=description, read_only=read_only)
        if isinstance(limits, tuple) and isinstance(limits[0], str):
            descriptor.additional_constraints = f'one of: {", ".join(limits)}'
        elif isinstance(limits, tuple) and isinstance(default, int):
            descriptor.integer_range = [IntegerRange(from_value=limits[0], to_value=limits[1])]
        elif isinstance(limits, tuple):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=limits[0], to_value=limits[1])]
        value = self.declare_parameter(name, default, descriptor).value
        if isinstance(limits, tuple) and isinstance(limits[0], str) and value not in limits:
            raise ValueError(f'{name}: {value!r} is not one of {", ".join(limits)}')
        return value

    # -- executor thread: decode, validate, queue ------------------------------------------
    def _on_image(self, msg):
        self._admit(msg.header, conversions.image_from_msg, msg)

    def _on_compressed(self, msg):
        self._admit(msg.header, conversions.image_from_compressed, msg)

    def _admit(self, header, decode, msg):
        received = time.perf_counter()
        try:
            image = decode(msg, self.settings['max_image_side'])
        except ImageDecodeError as err:
            with self._lock:
                self.stats['rejected'] += 1
            self.get_logger().warning(f'image rejected (stamp {header.stamp.sec}.'
                                      f'{header.stamp.nanosec:09d}): {err}')
            return
        height, width = image.shape[:2]
        K = conversions.intrinsics_for(width, height, self._scene_K, self._scene_size,
                                       self._camera_info)
        self._queue.put((conversions.copy_header(header), image, K, self._distortion,
                         received))

    def _on_camera_info(self, msg):
        try:
            camera = conversions.camera_info_intrinsics(msg)
            distortion = conversions.camera_info_distortion(msg)
        except ValueError as err:
            with self._lock:
                self.stats['rejected_camera_info'] += 1
            text = f'camera_info rejected: {err}; keeping the previous camera'
            if text != self._camera_info_error:     # a new reason is always told
                self._camera_info_error = text
                self.get_logger().warning(text)
            else:                                   # a driver repeating it, every 10 s
                self.get_logger().warning(text, throttle_duration_sec=10.0)
            return
        self._camera_info_error = None
        self._camera_info, self._distortion = camera, distortion

    def _report_health(self):
        with self._lock:
            stats = dict(self.stats)
        queue = self._queue
        values = {'processed': stats['processed'], 'dropped': queue.dropped,
                  'rejected': stats['rejected'], 'failed': stats['failed'],
                  'received': queue.received + stats['rejected'], 'queue_depth': queue.depth,
                  'queue_mode': queue.mode, 'last_latency_ms': stats['last_latency_ms'],
                  'rejected_camera_info': stats['rejected_camera_info']}
        troubles = (stats['rejected'], stats['failed'], stats['rejected_camera_info'])
        level, message = DiagnosticStatus.OK, 'serving'
        if troubles != self._reported:
            level = DiagnosticStatus.WARN
            new = [now - before for now, before in zip(troubles, self._reported)]
            message = (f'{new[0]} images rejected, {new[1]} failed, {new[2]} camera_info '
                       f'rejected since the last report')
        self._reported = troubles
        header = Header(stamp=self.get_clock().now().to_msg())
        self._health_pub.publish(conversions.diagnostic_array(
            header, f'{self.get_name()}: health', level, message, values,
            hardware_id=self.settings['scene_path']))

    # -- worker thread: inference and outputs ----------------------------------------------
    def _serve(self):
        while (frame := self._queue.get()) is not None:
            self._process(*frame)

    def _process(self, header, image, K, distortion, received):
        started = time.perf_counter()
        height, width = image.shape[:2]
        try:
            # distorted camera: inspect the pinhole of its own K and size (None: a pinhole)
            maps = self._rectifier.maps(K, distortion, (width, height))
            pinhole = image if maps is None else maps.to_pinhole(image)
            undistort_s = time.perf_counter() - started
            result = self.inspector.inspect(pinhole, K)
        except Exception as err:   # a failing frame must not kill the worker: log, count, go on
            with self._lock:
                self.stats['failed'] += 1
            self.get_logger().warning(f'inspection failed: {type(err).__name__}: {err}')
            return
        inference_ms = 1000.0 * (time.perf_counter() - started - undistort_s)
        amap = np.asarray(result.anomaly_map, dtype=np.float32)
        if amap.shape != (height, width):
            amap = cv2.resize(amap, (width, height), interpolation=cv2.INTER_LINEAR)
        if maps is not None:       # back to the input's pixel geometry
            warp_started = time.perf_counter()
            amap = maps.to_input(amap)
            undistort_s += time.perf_counter() - warp_started
        threshold, anomalous = float(result.threshold), bool(result.anomalous)
        override = self.get_parameter('threshold').value
        if override > 0:
            threshold, anomalous = float(override), float(result.image_score) > override
        alpha = self.get_parameter('overlay_alpha').value
        self._pubs['anomaly_map'].publish(conversions.image_msg(amap, '32FC1', header))
        self._pubs['overlay'].publish(conversions.image_msg(
            conversions.overlay(image, amap, 2.0 * threshold, alpha), 'rgb8', header))
        self._pubs['rendered'].publish(conversions.image_msg(result.rendered, 'rgb8', header))
        self._pubs['object_pose'].publish(conversions.pose_msg(result.viewmat, header))
        latency_ms = 1000.0 * (time.perf_counter() - received)
        values = {'image_score': float(result.image_score), 'threshold': threshold,
                  'pose_residual': float(result.pose_residual), 'latency_ms': latency_ms,
                  'inference_ms': inference_ms, 'undistort_ms': 1000.0 * undistort_s}
        values.update({f'{stage}_ms': 1000.0 * s for stage, s in result.seconds.items()})
        level = DiagnosticStatus.ERROR if anomalous else DiagnosticStatus.OK
        with self._lock:   # counted before the verdict goes out, so whoever sees it sees this
            self.stats['processed'] += 1
            self.stats['last_latency_ms'] = latency_ms
        self._pubs['verdict'].publish(conversions.diagnostic_array(
            header, f'{self.get_name()}: verdict', level,
            'anomalous' if anomalous else 'normal', values))

    @property
    def dropped(self):
        """Frames dropped by flow control so far."""
        return self._queue.dropped

    def destroy_node(self):
        """Stop the worker (after its current image), then destroy the node."""
        if self._worker is not None:
            self._queue.close()
            self._worker.join()
        return super().destroy_node()


def _inspector_config(p):
    """InspectorConfig from the node's parameters, on the Inspector's defaults.

    As offline/evaluate.py: the lr decays at two thirds of the steps (the paper's 200 of
    300); a changed lr scales the final lr with it. Zeros keep the defaults.
    """
    base = _DEFAULT.igs
    steps, lr = p['igs_steps'], p['igs_lr']
    igs = replace(base, steps=steps, lr_decay_step=round(steps * 2 / 3), mps=p['mps'],
                  mps_radius=p['mps_radius'] or base.mps_radius,
                  working_size=p['igs_working_size'] or base.working_size)
    if lr != base.lr:
        igs = replace(igs, lr=lr, lr_final=base.lr_final * lr / base.lr)
    # an override threshold also spares the Inspector calibrating a missing one at load
    return replace(_DEFAULT, extractor=p['extractor'], matcher=p['matcher'], igs=igs,
                   shortlist=p['retrieval_shortlist'],
                   extractor_weights=p['extractor_weights'] or None,
                   threshold=p['threshold'] or None)


def main(args=None):
    """Run the inspector node until shutdown; exit status 2 for a configuration error."""
    rclpy.init(args=args)
    try:
        node = InspectorNode()
    except (ValueError, OSError, rclpy.exceptions.ParameterException) as err:
        print(f'inspector: {err}', file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())

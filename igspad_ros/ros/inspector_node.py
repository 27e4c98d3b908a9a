"""The ``inspector`` lifecycle node: camera images in, anomaly map, verdict, pose and overlay out.

Thin glue around ``core.inspector.Inspector`` (DESIGN.md, "ROS 2 node") as an rclpy
lifecycle (managed) node:

- **configure** loads the scene, its index and the models and warms them up with one
  inference on a render of the first training pose, so the first camera image costs what
  every later one does; an error (missing scene, bad weights) goes to the error state,
  the reason logged, and back to unconfigured;
- **activate** subscribes (``image`` or ``image/compressed``, and ``camera_info``) and
  enables the outputs: a subscription on the graph is the readiness signal;
- **deactivate** unsubscribes; frames still waiting, and the one being inspected, are
  dropped and counted (``dropped``); **cleanup** frees the model.

``autostart`` (default true) configures and activates in the constructor, so ``ros2 run``,
the launch file, the bag replayer and tests need no lifecycle manager; a configure error
then raises ``ConfigureError`` (``main`` exits with status 2). /diagnostics reports health
(and the lifecycle state) in every state.

The subscription callback pairs an image with the CameraInfo of its stamp
(``pairing.CameraInfoPairing``), decodes it and queues it (``flow.FrameQueue``); one
worker thread undistorts and runs inference, so parameter and lifecycle services and
/diagnostics stay responsive meanwhile. Every output copies the input image's header; an
image output nobody subscribes to is not even encoded. Bad input is logged with its
reason, counted, and skipped.

Real cameras: the paired CameraInfo gives K and the lens model (``d`` with plumb_bob,
rational_polynomial or equidistant). A distorted image is undistorted (bicubic) on the
worker thread to the pinhole of the camera's own K and size, inspected there, and the
anomaly map is warped back (bilinear) to the input's pixel geometry; ``~/overlay`` is
drawn over the original input image, and input pixels that no pinhole pixel covers get 0
in the map. ``~/rendered`` and the pose are the pinhole's. The maps are cached per camera
values (``rectify.Rectifier``). A CameraInfo with an unknown distortion_model, too many
coefficients, a zero K or an empty size is rejected with a warning and counted
(``rejected_camera_info``); an image paired with it is rejected too
(``rejected_bad_camera_info``).
"""
import math
import sys
import threading
import time

import cv2
import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from igspad_ros.core import undistort
from igspad_ros.core.inspector import Inspector
from igspad_ros.core.scoring import POOL_FRACTION
from igspad_ros.data.image_encoding import ImageDecodeError
from igspad_ros.ros import conversions, parameters
from igspad_ros.ros.flow import FrameQueue
from igspad_ros.ros.pairing import BAD_CAMERA_INFO, BadCameraInfo, CameraInfoPairing
from igspad_ros.ros.parameters import PARAMETERS
from igspad_ros.ros.rectify import Rectifier

RCLError = _rclpy.RCLError

IMAGE_OUTPUTS = ('anomaly_map', 'overlay', 'rendered')
SUCCESS = TransitionCallbackReturn.SUCCESS


class ConfigureError(ValueError):
    """Configuring the node failed (autostart); the reason has been logged."""


class InspectorNode(LifecycleNode):
    """Lifecycle node ``inspector`` serving ``Inspector.inspect`` on a camera topic."""

    def __init__(self, **kwargs):
        """Declare parameters; with ``autostart`` configure and activate (else unconfigured).

        Raises ValueError (or rclpy's ParameterException) for a parameter outside its
        range or choices, and ConfigureError when autostart's configuration fails.
        """
        self._worker = self._queue = self.inspector = None    # (see destroy_node)
        # _serving: active, so images are taken and results published
        self._subs, self._pubs, self._serving = [], {}, False
        super().__init__('inspector', **kwargs)
        self.settings = {name: parameters.declare(self, name) for name in PARAMETERS}
        self.add_on_set_parameters_callback(self._check_choices)
        self._lock = threading.Lock()            # stats
        self._publish_lock = threading.Lock()    # held while one image's outputs go out
        self.stats = {'received': 0, 'camera_info': 0, 'processed': 0, 'dropped': 0,
                      'rejected': 0, 'failed': 0,
                      'rejected_camera_info': 0, 'rejected_no_camera_info': 0,
                      'rejected_bad_camera_info': 0, 'last_latency_ms': math.nan}
        self._reported = (0, 0, 0)
        self.configure_error = None
        self.warm_up_s = math.nan
        self._pairing = CameraInfoPairing(required=self.settings['camera_info_mode']
                                          == 'required')
        self._output_qos = parameters.qos(self.settings['output_qos_reliability'],
                                          self.settings['output_qos_depth'])
        self._health_pub = self.create_publisher(DiagnosticArray, '/diagnostics',
                                                 self._output_qos)
        self.create_timer(self.settings['diagnostics_period'], self._report_health)
        if self.settings['autostart']:
            if self.trigger_configure() != SUCCESS:
                reason = self.configure_error
                self.destroy_node()
                raise ConfigureError(reason)
            self.trigger_activate()

    @property
    def state(self):
        """The lifecycle state's label: unconfigured, inactive, active, finalized."""
        return self._state_machine.current_state[1]

    @property
    def dropped(self):
        """Frames dropped so far: by flow control, and when deactivated."""
        queue_dropped = self._queue.dropped if self._queue is not None else 0
        return queue_dropped + self.stats['dropped']

    def _check_choices(self, changed):
        for param in changed:
            reason = parameters.choice_error(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state):
        """Load the scene, index and models, warm them up, create the outputs."""
        try:
            self._configure()
        except Exception as err:    # any reason: the error state logs it (on_error)
            self.configure_error = str(err) or type(err).__name__
            return TransitionCallbackReturn.ERROR
        self.configure_error = None
        return SUCCESS

    def _configure(self):
        s = self.settings
        if not s['scene_path']:
            raise ValueError('scene_path: not set (pass -p scene_path:=/path/to/scene.ply)')
        device = s['device']
        if device == 'auto':
            device = 'cuda' if torch.cuda.is_available() else 'cpu'
        started = time.perf_counter()
        self.inspector = Inspector(s['scene_path'], parameters.inspector_config(s), device)
        loaded = time.perf_counter()
        warm = self._warm_up()
        self.warm_up_s = time.perf_counter() - loaded
        self._class_id = str(self.inspector.meta.get('category')
                             or self.inspector.scene_path.stem)
        self._box = _object_box(self.inspector)
        self._queue = FrameQueue(s['queue_mode'], s['queue_size'])
        self._rectifier = Rectifier()                # maps per camera; worker thread only
        kinds = {'anomaly_map': Image, 'overlay': Image, 'rendered': Image,
                 'object_pose': PoseStamped, 'verdict': DiagnosticArray}
        if conversions.HAVE_VISION_MSGS:
            kinds.update(detections=conversions.Detection3DArray,
                         classification=conversions.Classification)
        self._pubs = {name: self.create_lifecycle_publisher(kind, f'~/{name}', self._output_qos)
                      for name, kind in kinds.items()}
        if conversions.HAVE_TF2_MSGS and s['tf_frame_name']:
            self._pubs['tf'] = self.create_lifecycle_publisher(conversions.TFMessage, '/tf',
                                                               parameters.TF_QOS)
        self._worker = threading.Thread(target=self._serve, name='inspector-worker',
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'loaded {s["scene_path"]} on {device} in {loaded - started:.1f} s, warm-up '
            f'inference {self.warm_up_s:.1f} s (score {warm.image_score:.4g}, threshold '
            f'{self.inspector.threshold:.4g}, queue_mode {s["queue_mode"]})')

    def _warm_up(self):
        """One inference on a render of training view 0: lazy inits and kernels run now."""
        K, width, height = self.inspector.view_camera(0)
        render = self.inspector.render_view(self.inspector.index.viewmats[0], K, width, height)
        return self.inspector.inspect(render, K)

    def on_activate(self, state):
        """Enable the outputs, then subscribe (the image QoS parameters apply here)."""
        self._pairing.reset()
        ret = super().on_activate(state)
        qos = parameters.image_qos(self.get_parameter('image_qos_reliability').value,
                                   self.get_parameter('image_qos_depth').value,
                                   self._queue.maxsize)
        self._serving = True
        if self.settings['compressed']:
            self._subs.append(self.create_subscription(
                CompressedImage, 'image/compressed', self._on_compressed, qos))
        else:
            self._subs.append(self.create_subscription(Image, 'image', self._on_image, qos))
        self._subs.append(self.create_subscription(CameraInfo, 'camera_info',
                                                   self._on_camera_info, qos))
        return ret

    def on_deactivate(self, state):
        """Unsubscribe; drop what waits and what is being inspected; disable the outputs."""
        self._stop_taking()
        return super().on_deactivate(state)

    def _stop_taking(self):
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self._serving = False
        waiting = len(self._pairing.reset())
        with self._publish_lock:    # an image whose outputs are going out finishes first
            with self._lock:
                self.stats['dropped'] += waiting
            if self._queue is not None:
                self._queue.clear()

    def on_cleanup(self, state):
        """Stop the worker and free the model and the outputs."""
        self._free()
        return SUCCESS

    def on_shutdown(self, state):
        """Stop taking images and free everything, from any state."""
        self._stop_taking()
        self._free()
        return SUCCESS

    def on_error(self, state):
        """Log why the transition failed, free what it built; back to unconfigured."""
        self.get_logger().error(f'configure failed: {self.configure_error}')
        self._free()
        return SUCCESS

    def _free(self):
        if self._worker is not None:
            self._queue.close()
            self._worker.join()
            self._worker = None
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        on_gpu = self.inspector is not None and self.inspector.device.type == 'cuda'
        self.inspector = None
        if on_gpu:
            torch.cuda.empty_cache()

    def destroy_node(self):
        """Stop the worker (after its current image), then destroy the node."""
        self._serving = False
        self._free()
        return super().destroy_node()

    # -- executor thread: pair, decode, validate, queue ----------------------------------------
    def _on_image(self, msg):
        self._receive(msg, conversions.image_from_msg)

    def _on_compressed(self, msg):
        self._receive(msg, conversions.image_from_compressed)

    def _receive(self, msg, decode):
        received = time.perf_counter()
        with self._lock:
            self.stats['received'] += 1
            if not self._serving:     # a callback that raced deactivation
                self.stats['dropped'] += 1
                return
        self._pairing.tolerance_ns = self._tolerance_ns()
        self._settle(self._pairing.add_image(conversions.stamp_ns(msg.header.stamp),
                                             (msg, decode, received)))

    def _on_camera_info(self, msg):
        with self._lock:
            self.stats['camera_info'] += 1
        try:
            K, size = conversions.camera_info_intrinsics(msg)
            camera = (K, size, conversions.camera_info_distortion(msg))
        except ValueError as err:
            with self._lock:
                self.stats['rejected_camera_info'] += 1
            self.get_logger().warning(f'camera_info rejected: {err}; images of its stamp '
                                      'are rejected', throttle_duration_sec=10.0)
            camera = BadCameraInfo(str(err))
        self._pairing.tolerance_ns = self._tolerance_ns()
        self._settle(self._pairing.add_info(conversions.stamp_ns(msg.header.stamp), camera))

    def _tolerance_ns(self):
        return round(1e9 * self.get_parameter('camera_info_tolerance').value)

    def _settle(self, settled):
        for paired in settled:
            msg, decode, received = paired.item
            if paired.reason is None:
                self._admit(msg, decode, received, paired.camera)
                continue
            why = (f'its camera_info was rejected ({paired.camera.reason})'
                   if paired.reason == BAD_CAMERA_INFO else
                   'no camera_info with its stamp (within camera_info_tolerance '
                   f'{self.get_parameter("camera_info_tolerance").value} s)')
            self._reject(msg.header, f'rejected_{paired.reason}', why)

    def _reject(self, header, counter, why):
        """Count an image rejected (``counter``: its reason's stat, if any) and say why."""
        with self._lock:
            self.stats['rejected'] += 1
            if counter:
                self.stats[counter] += 1
        text = f'image rejected (stamp {header.stamp.sec}.{header.stamp.nanosec:09d}): {why}'
        if counter:     # a driver's mismatched stamps would repeat it with every image
            self.get_logger().warning(text, throttle_duration_sec=5.0)
        else:
            self.get_logger().warning(text)

    def _admit(self, msg, decode, received, camera):
        try:
            image = decode(msg, self.settings['max_image_side'])
        except ImageDecodeError as err:
            self._reject(msg.header, None, str(err))
            return
        height, width = image.shape[:2]
        inspector = self.inspector
        K = conversions.intrinsics_for(width, height, inspector.K, inspector.size,
                                       None if camera is None else camera[:2])
        distortion = undistort.NO_DISTORTION if camera is None else camera[2]
        self._queue.put((conversions.copy_header(msg.header), image, K, distortion, received))

    def _report_health(self):
        with self._lock:
            stats = dict(self.stats)
        queue = self._queue
        values = {'state': self.state, 'processed': stats['processed'],
                  'dropped': self.dropped, 'rejected': stats['rejected'],
                  'failed': stats['failed'], 'received': stats['received'],
                  'camera_info_received': stats['camera_info'],
                  'queue_depth': queue.depth if queue is not None else 0,
                  'queue_mode': self.settings['queue_mode'],
                  'last_latency_ms': stats['last_latency_ms'],
                  'rejected_camera_info': stats['rejected_camera_info'],
                  'rejected_no_camera_info': stats['rejected_no_camera_info'],
                  'rejected_bad_camera_info': stats['rejected_bad_camera_info'],
                  'waiting_for_camera_info': self._pairing.pending,
                  'threshold': self._threshold()}
        troubles = (stats['rejected'], stats['failed'], stats['rejected_camera_info'])
        level, message = DiagnosticStatus.OK, 'serving' if self._serving else self.state
        if self.configure_error is not None:
            level, message = DiagnosticStatus.ERROR, f'configure failed: {self.configure_error}'
        elif troubles != self._reported:
            level = DiagnosticStatus.WARN
            new = [now - before for now, before in zip(troubles, self._reported)]
            message = (f'{new[0]} images rejected, {new[1]} failed, {new[2]} camera_info '
                       f'rejected since the last report')
        self._reported = troubles
        header = Header(stamp=self.get_clock().now().to_msg())
        self._health_pub.publish(conversions.diagnostic_array(
            header, f'{self.get_name()}: health', level, message, values,
            hardware_id=self.settings['scene_path']))

    def _threshold(self):
        """Return the image-score threshold in force: the override, else the scene's (or nan)."""
        override = self.get_parameter('threshold').value
        if override > 0:
            return float(override)
        inspector = self.inspector
        return float(inspector.threshold) if inspector is not None else math.nan

    # -- worker thread: inference and outputs ------------------------------------------------
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
        with self._publish_lock:
            if not self._serving:      # deactivated meanwhile: nothing goes out
                with self._lock:
                    self.stats['dropped'] += 1
                return
            self._publish(header, image, result, maps, undistort_s, inference_ms, received)

    def _publish(self, header, image, result, maps, undistort_s, inference_ms, received):
        height, width = image.shape[:2]
        pubs = self._pubs
        wanted = {name: pubs[name].get_subscription_count() > 0 for name in IMAGE_OUTPUTS}
        threshold = self._threshold()
        anomalous = float(result.image_score) > threshold
        if wanted['anomaly_map'] or wanted['overlay']:
            amap = np.asarray(result.anomaly_map, dtype=np.float32)
            if amap.shape != (height, width):
                amap = cv2.resize(amap, (width, height), interpolation=cv2.INTER_LINEAR)
            if maps is not None:       # back to the input's pixel geometry
                warp_started = time.perf_counter()
                amap = maps.to_input(amap)
                undistort_s += time.perf_counter() - warp_started
        if wanted['anomaly_map']:
            pubs['anomaly_map'].publish(conversions.image_msg(amap, '32FC1', header))
        if wanted['overlay']:
            alpha = self.get_parameter('overlay_alpha').value
            pubs['overlay'].publish(conversions.image_msg(
                conversions.overlay(image, amap, 2.0 * threshold, alpha), 'rgb8', header))
        if wanted['rendered']:
            pubs['rendered'].publish(conversions.image_msg(result.rendered, 'rgb8', header))
        pubs['object_pose'].publish(conversions.pose_msg(result.viewmat, header))
        score = float(result.image_score)
        if 'detections' in pubs:
            pubs['detections'].publish(conversions.detections_msg(
                result.viewmat, score, self._class_id, self._box, header))
            pubs['classification'].publish(conversions.classification_msg(anomalous, score,
                                                                          header))
        if 'tf' in pubs and header.frame_id:    # a transform needs its parent frame
            pubs['tf'].publish(conversions.transform_msg(result.viewmat,
                                                         self.settings['tf_frame_name'],
                                                         header))
        latency_ms = 1000.0 * (time.perf_counter() - received)
        pool = self.inspector.config.pool_size or max(1, round(POOL_FRACTION
                                                               * max(height, width)))
        values = {'image_score': score, 'threshold': threshold,
                  'pose_residual': float(result.pose_residual), 'latency_ms': latency_ms,
                  'inference_ms': inference_ms, 'undistort_ms': 1000.0 * undistort_s,
                  'pool_size_px': pool}
        values.update({f'{stage}_ms': 1000.0 * s for stage, s in result.seconds.items()})
        level = DiagnosticStatus.ERROR if anomalous else DiagnosticStatus.OK
        with self._lock:   # counted before the verdict goes out, so whoever sees it sees this
            self.stats['processed'] += 1
            self.stats['last_latency_ms'] = latency_ms
        pubs['verdict'].publish(conversions.diagnostic_array(
            header, f'{self.get_name()}: verdict', level,
            'anomalous' if anomalous else 'normal', values))


def _object_box(inspector):
    """(centre, size) of the object's box in the scene frame, for Detection3D.bbox.

    The inspection region where the scene has one (a real capture's scene also models the
    table), else the Gaussians' centres trimmed to their 1st..99th percentiles per axis.
    """
    if inspector.roi is not None:
        lo, hi = np.asarray(inspector.roi.lo), np.asarray(inspector.roi.hi)
    else:
        means = inspector.scene.means.detach().cpu().double().numpy()
        lo, hi = np.percentile(means, 1, axis=0), np.percentile(means, 99, axis=0)
    return (lo + hi) / 2.0, hi - lo


def main(args=None):
    """Run the inspector node until shutdown; exit status 2 for a configuration error."""
    rclpy.init(args=args)
    try:
        node = InspectorNode()
    except ConfigureError:      # the node has logged the reason
        rclpy.try_shutdown()
        return 2
    except (ValueError, rclpy.exceptions.ParameterException) as err:
        print(f'inspector: {err}', file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RCLError:
        # SIGTERM's shutdown can land while the executor builds its wait set, which then
        # fails on the invalid context instead of raising ExternalShutdownException
        if rclpy.ok():
            raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())

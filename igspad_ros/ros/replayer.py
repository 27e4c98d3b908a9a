"""Replay a MAD bag into the running inspector node and collect its outputs by stamp.

Lossless by default: publish one image (with its camera info), wait until every awaited
output of the node carries that image's stamp, then the next; an image whose outputs do not
all arrive within the timeout is reported lost. With a rate, images go out at that rate
(against the node's ``queue_mode: all``) and the results are collected afterwards.
Optionally every output is recorded to a new rosbag2 (rosbags writer, Jazzy definitions).
"""
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import Writer
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from igspad_ros.core import cameras
from igspad_ros.core.evaluation import ImageOutcome, category_report, save_gallery_image
from igspad_ros.core.features import DEFAULT_EXTRACTOR
from igspad_ros.core.inspector import STAGES
from igspad_ros.core.matching import DEFAULT_MATCHER
from igspad_ros.core.metrics import METRIC_SIZE, resize_map, resize_mask
from igspad_ros.data import bags
from igspad_ros.data.image_encoding import decode_image
from igspad_ros.ros import conversions

# What the metrics need from every image; the replay cannot evaluate without them.
EVALUATED_OUTPUTS = ('anomaly_map', 'verdict')
# The inspector's outputs (DESIGN.md) and their types; names are relative to its node name.
OUTPUT_TYPES = {'anomaly_map': Image, 'overlay': Image, 'rendered': Image,
                'object_pose': PoseStamped, 'verdict': DiagnosticArray}
_OUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
_IN_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.VOLATILE)


class ReplayError(RuntimeError):
    """The inspector node could not be reached or did not answer as expected."""


@dataclass
class NodeResult:
    """What the inspector answered for one replayed image (None where it did not answer)."""

    stamp_ns: int
    lost: bool = True
    anomaly_map: np.ndarray | None = None     # (H, W) float32 from ~/anomaly_map
    rendered: np.ndarray | None = None        # (H, W, 3) float32 from ~/rendered
    image_score: float | None = None
    anomalous: bool | None = None
    threshold: float | None = None
    viewmat: np.ndarray | None = None         # (4, 4) float64 from ~/object_pose
    values: dict = field(default_factory=dict)   # every key/value of the verdict status
    seconds: float | None = None              # publish -> last awaited output, wall clock


def stamp_ns(header):
    """Nanoseconds of a std_msgs/Header's stamp."""
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def ros_header(stamp, frame_id=bags.FRAME_ID):
    """Return a std_msgs/Header for a stamp in nanoseconds."""
    sec, nanosec = divmod(int(stamp), 10**9)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def image_to_ros(image, encoding, stamp, frame_id=bags.FRAME_ID):
    """Return an rclpy sensor_msgs/Image holding a numpy image."""
    return conversions.image_msg(image, encoding, ros_header(stamp, frame_id))


def camera_info_to_ros(K, width, height, stamp, frame_id=bags.FRAME_ID):
    """Return an rclpy sensor_msgs/CameraInfo with K (ROS convention), P = [K|0]."""
    K = cameras.k_to_ros(K)
    return CameraInfo(header=ros_header(stamp, frame_id), height=int(height), width=int(width),
                      distortion_model='plumb_bob', d=[0.0] * 5, k=K.reshape(-1).tolist(),
                      r=np.eye(3).reshape(-1).tolist(),
                      p=np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist())


class OutputRecorder:
    """Writes the node's outputs to a new rosbag2 (log time = the input image's stamp)."""

    def __init__(self, path, inspector, storage='mcap'):
        """Create the bag at ``path``; raises bags.BagExistsError if it exists."""
        path = Path(path)
        if path.exists():
            raise bags.BagExistsError(f'{path}: exists already; choose a new bag folder')
        self._writer = Writer(path, version=bags.BAG_VERSION,
                              storage_plugin=bags.STORAGES[storage])
        self._writer.open()
        self._conns = {}
        self._inspector = inspector.rstrip('/')
        self._lock = threading.Lock()
        self.count = 0

    def write(self, name, msg):
        """Record one output message under its topic."""
        with self._lock:
            conn = self._conns.get(name)
            if conn is None:
                msgtype = type(msg).__module__.split('.')[0] + '/msg/' + type(msg).__name__
                conn = self._writer.add_connection(f'{self._inspector}/{name}', msgtype,
                                                   typestore=bags.typestore())
                self._conns[name] = conn
            self._writer.write(conn, stamp_ns(msg.header), serialize_message(msg))
            self.count += 1

    def close(self):
        """Finish the bag (metadata.yaml is written here)."""
        with self._lock:
            self._writer.close()


class Replayer(Node):
    """rclpy node that publishes MAD bag records and gathers the inspector's answers."""

    def __init__(self, inspector='/inspector', image_topic='/image',
                 camera_info_topic='/camera_info', await_outputs=tuple(OUTPUT_TYPES),
                 recorder=None, node_name='mad_replayer', context=None):
        """Create publishers for the node's inputs and subscriptions to its outputs."""
        super().__init__(node_name, context=context)
        unknown = set(await_outputs) - set(OUTPUT_TYPES)
        if unknown or not await_outputs:
            raise ValueError(f'await_outputs must name some of {sorted(OUTPUT_TYPES)}, '
                             f'got {sorted(await_outputs)}')
        self._await = tuple(await_outputs)
        self._recorder = recorder
        self._cond = threading.Condition()
        self._got = {}          # stamp -> {output name: parsed value}
        self._wanted = set()    # stamps of the bag being replayed
        self.unmatched = 0      # outputs whose stamp is not in the bag
        self._image_pub = self.create_publisher(Image, image_topic, _IN_QOS)
        self._info_pub = self.create_publisher(CameraInfo, camera_info_topic, _IN_QOS)
        base = inspector.rstrip('/')
        self._subs = [self.create_subscription(kind, f'{base}/{name}', self._callback(name),
                                               _OUT_QOS)
                      for name, kind in OUTPUT_TYPES.items()]

    def _callback(self, name):
        def receive(msg):
            stamp = stamp_ns(msg.header)
            if self._recorder is not None:
                self._recorder.write(name, msg)
            with self._cond:
                if stamp not in self._wanted:
                    self.unmatched += 1
                    return
                self._got.setdefault(stamp, {})[name] = _parse(name, msg)
                self._cond.notify_all()
        return receive

    def wait_for_inspector(self, timeout):
        """Block until the inspector subscribes to our images and publishes every output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._image_pub.get_subscription_count() > 0 and all(
                    s.get_publisher_count() > 0 for s in self._subs):
                return
            time.sleep(0.05)
        raise ReplayError(f'no inspector answered within {timeout:.0f} s: nothing subscribes '
                          f'to {self._image_pub.topic_name} or publishes '
                          f'{self._subs[0].topic_name}; is the node running?')

    def play(self, records, rate=None, timeout=300.0, camera_info=True, progress=None):
        """Publish the records; return one NodeResult per record, in order.

        ``rate`` None is lossless (one image at a time, ``timeout`` seconds each); a rate in
        Hz publishes at that rate and then waits until ``timeout`` seconds pass without any
        output arriving. ``progress`` is called with 1 per finished image.
        """
        records = list(records)
        with self._cond:
            self._wanted = {r.stamp_ns for r in records}
        sent = {}
        if camera_info and records and records[0].K is not None:
            # camera info goes best effort; send it once ahead so the first image has it
            self._publish_info(records[0])
            time.sleep(0.2)
        if rate is None:
            for record in records:
                sent[record.stamp_ns] = self._publish(record, camera_info)
                self._wait_done([record.stamp_ns], timeout, progress)
        else:
            period = 1.0 / rate
            start = time.monotonic()
            for k, record in enumerate(records):
                time.sleep(max(0.0, start + k * period - time.monotonic()))
                sent[record.stamp_ns] = self._publish(record, camera_info)
            self._wait_done([r.stamp_ns for r in records], timeout, progress)
        with self._cond:
            return [self._result(r.stamp_ns, sent[r.stamp_ns]) for r in records]

    def _publish_info(self, record):
        h, w = record.image.shape[:2]
        self._info_pub.publish(camera_info_to_ros(record.K, w, h, record.stamp_ns))

    def _publish(self, record, camera_info):
        if camera_info and record.K is not None:
            self._publish_info(record)
        self._image_pub.publish(image_to_ros(record.image, 'rgb8', record.stamp_ns))
        return time.monotonic()

    def _done(self, stamp):
        return all(name in self._got.get(stamp, {}) for name in self._await)

    def _wait_done(self, stamps, timeout, progress):
        """Wait for all outputs of ``stamps``; the timeout restarts whenever one finishes."""
        pending = set(stamps)
        deadline = time.monotonic() + timeout
        with self._cond:
            while pending:
                finished = {s for s in pending if self._done(s)}
                for stamp in finished:
                    self._got[stamp]['_finished'] = time.monotonic()
                    if progress is not None:
                        progress(1)
                if finished:
                    pending -= finished
                    deadline = time.monotonic() + timeout
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
        if progress is not None and pending:
            progress(len(pending))

    def _result(self, stamp, sent_at):
        got = self._got.get(stamp, {})
        result = NodeResult(stamp, lost=not self._done(stamp))
        result.anomaly_map = got.get('anomaly_map')
        result.rendered = got.get('rendered')
        result.viewmat = got.get('object_pose')
        verdict = got.get('verdict')
        if verdict is not None:
            result.values, result.anomalous = verdict
            result.image_score = _float(result.values.get('image_score'))
            result.threshold = _float(result.values.get('threshold'))
        if '_finished' in got:
            result.seconds = got['_finished'] - sent_at
        return result

    def inspector_parameters(self, inspector, timeout):
        """Return every parameter of the inspector as {name: value}; {} if it does not answer."""
        client = AsyncParameterClient(self, inspector)
        if not client.wait_for_services(timeout_sec=timeout):
            return {}
        names = _wait_future(client.list_parameters(), timeout)
        if names is None:
            return {}
        names = list(names.result.names)
        values = _wait_future(client.get_parameters(names), timeout)
        if values is None:
            return {}
        return {n: parameter_value_to_python(v) for n, v in zip(names, values.values)}


@dataclass
class ReplayOutcome:
    """Everything one replay produced."""

    results: list              # NodeResult per record, in bag order
    parameters: dict           # the inspector's parameters at the end of the replay
    unmatched: int             # outputs whose stamp was not in the bag
    recorded: int              # messages written to the output bag (0 without one)


def replay(records, inspector='/inspector', image_topic='/image',
           camera_info_topic='/camera_info', rate=None, timeout=300.0, wait=120.0,
           camera_info=True, record=None, await_outputs=tuple(OUTPUT_TYPES), progress=None):
    """Replay MAD bag records into a running inspector node in a ROS context of its own.

    ``record`` is a new bag folder for the node's outputs (None: no recording). Raises
    ReplayError when no inspector answers within ``wait`` seconds.
    """
    recorder = OutputRecorder(record, inspector) if record is not None else None
    context = rclpy.context.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    node = None
    try:
        node = Replayer(inspector, image_topic, camera_info_topic, await_outputs, recorder,
                        context=context)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        node.wait_for_inspector(wait)
        results = node.play(records, rate=rate, timeout=timeout, camera_info=camera_info,
                            progress=progress)
        parameters = node.inspector_parameters(inspector, timeout=min(wait, 10.0))
        return ReplayOutcome(results, parameters, node.unmatched,
                             recorder.count if recorder is not None else 0)
    finally:
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        if recorder is not None:
            recorder.close()
        rclpy.shutdown(context=context)


def replay_config(parameters):
    """Build the OUT.json ``config`` of a replay from the inspector's parameters.

    Empty extractor / matcher parameters mean the defaults; MPS is on unless the node has a
    parameter that turns it off. Keys the node did not report are None.
    """
    mps = parameters.get('mps', parameters.get('igs_mps', True if parameters else None))
    return {'extractor': (parameters.get('extractor') or DEFAULT_EXTRACTOR) if parameters
            else None,
            'matcher': (parameters.get('matcher') or DEFAULT_MATCHER) if parameters else None,
            'mps': mps, 'steps': parameters.get('igs_steps'),
            'device': parameters.get('device')}


def replay_report(category, records, outcome):
    """Build the OUT.json dict of a replay: ``category_report`` plus a ``replay`` part.

    Images the node did not answer are left out of the metrics and listed under
    ``replay.lost``. Stage timings come from the verdict's ``<stage>_ms`` values.
    Raises ReplayError when no image was answered.
    """
    outcomes, lost, latency, round_trip = [], [], [], []
    threshold = None    # the node's: the last verdict's, should a parameter change move it
    for record, result in zip(records, outcome.results):
        if result.lost or result.anomaly_map is None or result.image_score is None:
            lost.append(record.rel_path)
            continue
        values = result.values
        seconds = {stage: float(values[f'{stage}_ms']) / 1000.0 for stage in STAGES
                   if _float(values.get(f'{stage}_ms')) is not None}
        outcomes.append(ImageOutcome(
            path=record.rel_path, defect_type=record.defect_type,
            mask=resize_mask(record.mask, METRIC_SIZE),
            anomaly_map=resize_map(result.anomaly_map, METRIC_SIZE),
            image_score=result.image_score, anomalous=bool(result.anomalous),
            viewmat=result.viewmat, true_viewmat=record.true_viewmat, seconds=seconds))
        if _float(values.get('latency_ms')) is not None:
            latency.append(float(values['latency_ms']) / 1000.0)
        threshold = result.threshold if result.threshold is not None else threshold
        round_trip.append(result.seconds)
    if not outcomes:
        raise ReplayError(f'the inspector answered none of the {len(records)} images')
    report = category_report(category, outcomes, replay_config(outcome.parameters),
                             threshold=threshold)
    report['replay'] = {
        'n_sent': len(records), 'n_lost': len(lost), 'lost': lost,
        'unmatched_outputs': outcome.unmatched, 'recorded_messages': outcome.recorded,
        'node_latency_median_s': float(np.median(latency)) if latency else None,
        'round_trip_median_s': float(np.median(round_trip)),
    }
    return report


def write_replay_gallery(gallery_dir, records, outcome):
    """Write one gallery PNG per answered image from the node's outputs; return the count.

    Same panels and names as ``offline/evaluate.py``: test | rendered | overlay | truth.
    """
    written = 0
    for record, result in zip(records, outcome.results):
        if result.lost or result.anomaly_map is None or result.rendered is None:
            continue
        name = record.rel_path.replace('/', '_').replace('\\', '_')
        vmax = 2.0 * result.threshold if result.threshold else None
        save_gallery_image(Path(gallery_dir) / name, record.image, result.rendered,
                           result.anomaly_map, record.mask, vmax=vmax)
        written += 1
    return written


def _wait_future(future, timeout):
    """Wait for a future that the spinning executor completes; None after the timeout."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    if not done.wait(timeout):
        return None
    return future.result()


def _parse(name, msg):
    if name in ('anomaly_map', 'rendered'):
        return decode_image(msg)
    if name == 'object_pose':
        return bags.pose_to_viewmat(msg.pose)
    if name == 'verdict':
        if not msg.status:
            return {}, None
        status = msg.status[0]
        anomalous = status.level == DiagnosticStatus.ERROR
        return {kv.key: kv.value for kv in status.values}, bool(anomalous)
    return True


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None

"""Replaying MAD bags into an inspector node over real rclpy + DDS (localhost, own domain).

The replayer's bookkeeping (lossless and fixed-rate modes, lost images, recording) is checked
against a small echo node with the inspector's topics; replay against the real inspector node
must give exactly the metrics of offline/evaluate.py on the same data and configuration.
"""
import json
import os
import shutil
import threading

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, qos_profile_sensor_data
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image

from igspad_ros.core.evaluation import METRIC_KEYS
from igspad_ros.core.features import DEFAULT_EXTRACTOR
from igspad_ros.core.matching import DEFAULT_MATCHER
from igspad_ros.core.metrics import pad_metrics
from igspad_ros.data import bags
from igspad_ros.data.image_encoding import decode_image
from igspad_ros.data.mad import load_category
from igspad_ros.ros.replayer import (OUTPUT_TYPES, OutputRecorder, Replayer, ReplayError,
                                     image_to_ros, replay)


@pytest.fixture(scope='module')
def ros_context():
    """An rclpy context on a test-unique DDS domain that stays on this machine."""
    saved = {k: os.environ.get(k) for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE')}
    os.environ['ROS_DOMAIN_ID'] = str(150 + os.getpid() % 80)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def spin(ros_context):
    """Spin nodes in a background executor; stopped and destroyed after the test."""
    executor = MultiThreadedExecutor(num_threads=2, context=ros_context)
    nodes = []

    def add(node):
        nodes.append(node)
        executor.add_node(node)
        return node

    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield add
    executor.shutdown()
    thread.join(timeout=5)
    for node in nodes:
        node.destroy_node()


class EchoInspector(Node):
    """The inspector's topics, answering at once: map = grey image, score = its maximum."""

    def __init__(self, context, drop=()):
        """Answer every image except those whose stamp is in ``drop``."""
        super().__init__('inspector', context=context)
        self.drop = set(drop)
        self.declare_parameter('device', 'cpu')
        self.pubs = {name: self.create_publisher(kind, f'~/{name}', 100)
                     for name, kind in OUTPUT_TYPES.items()}
        # as the inspector in queue_mode all: SensorData QoS, deep enough for the whole burst
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                         reliability=qos_profile_sensor_data.reliability,
                         durability=qos_profile_sensor_data.durability)
        self.create_subscription(Image, 'image', self.on_image, qos)

    def on_image(self, msg):
        """Publish all five outputs with the input's header."""
        if msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec in self.drop:
            return
        grey = decode_image(msg).mean(axis=2).astype(np.float32)
        amap = image_to_ros(grey, '32FC1', 0)
        overlay = image_to_ros(decode_image(msg), 'rgb8', 0)
        pose = PoseStamped()
        pose.pose.position.z = 3.5
        pose.pose.orientation.w = 1.0
        score = float(grey.max())
        verdict = DiagnosticArray(status=[DiagnosticStatus(
            level=DiagnosticStatus.ERROR if score > 0.99 else DiagnosticStatus.OK,
            name='inspector', values=[KeyValue(key='image_score', value=repr(score)),
                                      KeyValue(key='threshold', value='0.99')])])
        for name, out in (('anomaly_map', amap), ('overlay', overlay), ('rendered', overlay),
                          ('object_pose', pose), ('verdict', verdict)):
            out.header = msg.header
            self.pubs[name].publish(out)


@pytest.fixture(scope='module')
def bag(synthetic_category_dir, tmp_path_factory):
    """The fixture category's 16 test images as an mcap bag, and its records."""
    path = tmp_path_factory.mktemp('replay') / 'bag'
    bags.write_mad_bag(load_category(synthetic_category_dir, load_train=False), path)
    return path, bags.read_mad_bag(path)


@pytest.mark.parametrize('rate', [None, 20.0])
def test_replay_loses_nothing_and_matches_by_stamp(ros_context, spin, bag, rate):
    _, records = bag
    spin(EchoInspector(ros_context))
    replayer = spin(Replayer(context=ros_context))
    replayer.wait_for_inspector(timeout=20)
    results = replayer.play(records, rate=rate, timeout=20)
    assert [r.stamp_ns for r in results] == [r.stamp_ns for r in records]
    assert [r.lost for r in results] == [False] * 16
    assert replayer.unmatched == 0
    for record, result in zip(records, results):
        np.testing.assert_array_equal(result.anomaly_map, record.image.mean(axis=2))
        assert result.image_score == float(record.image.mean(axis=2).max())
        assert result.threshold == 0.99
        assert result.anomalous == (result.image_score > 0.99)
        np.testing.assert_array_equal(result.viewmat[:3, 3], [0, 0, 3.5])
        assert result.seconds > 0


def test_unanswered_image_is_reported_lost_and_outputs_recorded(ros_context, spin, bag,
                                                                tmp_path):
    _, records = bag
    records = records[:4]
    spin(EchoInspector(ros_context, drop={records[1].stamp_ns}))
    recorder_path = tmp_path / 'out_bag'
    recorder = OutputRecorder(recorder_path, '/inspector')
    replayer = spin(Replayer(context=ros_context, recorder=recorder))
    replayer.wait_for_inspector(timeout=20)
    results = replayer.play(records, timeout=1.5)
    recorder.close()
    assert [r.lost for r in results] == [False, True, False, False]
    assert results[1].anomaly_map is None and results[1].image_score is None
    counts = {}
    with Reader(recorder_path) as reader:
        for conn, log_time, _ in reader.messages():
            counts[conn.topic] = counts.get(conn.topic, 0) + 1
            assert log_time in {r.stamp_ns for r in records}
        types = {c.topic: c.msgtype for c in reader.connections}
    assert counts == {f'/inspector/{name}': 3 for name in OUTPUT_TYPES}
    assert types['/inspector/verdict'] == 'diagnostic_msgs/msg/DiagnosticArray'
    assert types['/inspector/anomaly_map'] == 'sensor_msgs/msg/Image'


def test_replay_session_collects_results_and_node_parameters(ros_context, spin, bag):
    _, records = bag
    spin(EchoInspector(ros_context))
    outcome = replay(records[:3], wait=20, timeout=20)
    assert [r.lost for r in outcome.results] == [False] * 3
    assert outcome.parameters['device'] == 'cpu'
    assert outcome.parameters['use_sim_time'] is False
    assert (outcome.unmatched, outcome.recorded) == (0, 0)


def test_replay_without_a_node_is_a_clear_error(bag):
    _, records = bag
    with pytest.raises(ReplayError, match='no inspector answered within 1 s'):
        replay(records[:1], inspector='/nobody_here', wait=1.0)


def test_tool_writes_the_evaluation_json(ros_context, spin, bag, tmp_path, capsys, load_script):
    path, records = bag
    spin(EchoInspector(ros_context))
    out = tmp_path / 'ros.json'
    tool = load_script('offline/replay_eval.py')
    assert tool.main(['--bag', str(path), '--json', str(out), '--wait', '20',
                      '--timeout', '20', '--record', str(tmp_path / 'outputs')]) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith('replayed 16 images of brick (0 lost)')
    report = json.loads(out.read_text())
    greys = [r.image.mean(axis=2) for r in records]
    expected = pad_metrics(greys, [r.mask for r in records], [float(g.max()) for g in greys],
                           [r.defect_type != 'good' for r in records])
    assert {k: report[k] for k in METRIC_KEYS} == expected
    assert report['category'] == 'brick' and report['n_images'] == 16
    assert [i['path'] for i in report['images']] == [r.rel_path for r in records]
    assert report['config'] == {'extractor': DEFAULT_EXTRACTOR, 'matcher': DEFAULT_MATCHER,
                                'mps': True, 'steps': None, 'device': 'cpu'}
    assert report['replay']['n_lost'] == 0 and report['replay']['recorded_messages'] == 80
    assert report['pose']['rot_deg_median'] > 0
    assert report['verdict']['threshold'] == 0.99        # the node's, from its verdicts


def test_tool_user_errors_exit_2(bag, tmp_path, capsys, load_script):
    path, _ = bag
    tool = load_script('offline/replay_eval.py')
    cases = [(['--await', 'overlay'], 'must include anomaly_map and verdict'),
             (['--record', str(path)], 'exists already'),
             (['--node', '/nobody_here', '--wait', '1'], 'no inspector answered within 1 s')]
    for extra, message in cases:
        assert tool.main(['--bag', str(path), '--json', str(tmp_path / 'x.json')] + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert tool.main(['--bag', str(tmp_path), '--json', str(tmp_path / 'x.json')]) == 2
    assert 'no metadata.yaml' in capsys.readouterr().err
    assert not (tmp_path / 'x.json').exists()


STEPS = 5   # IGS steps of both runs: equality needs the same work, not pose accuracy
# The cheapest matcher and extractor: the equality holds for any configuration, and this
# test runs the whole pipeline twice (offline, then through the node).
MATCHER, EXTRACTOR = 'sift', 'pixel'


def _first_of_each_type(src, dst):
    """A MAD-format copy of ``src`` whose test split is image 0 of every defect type."""
    dst.mkdir()
    for name in ('transforms.json', 'test_poses.json'):
        shutil.copy(src / name, dst / name)
    shutil.copytree(src / 'train', dst / 'train')
    for type_dir in (src / 'test').iterdir():
        (dst / 'test' / type_dir.name).mkdir(parents=True)
        shutil.copy(type_dir / '0.png', dst / 'test' / type_dir.name / '0.png')
        if type_dir.name != 'good':
            (dst / 'ground_truth' / type_dir.name).mkdir(parents=True)
            shutil.copy(src / 'ground_truth' / type_dir.name / '0_mask.png',
                        dst / 'ground_truth' / type_dir.name / '0_mask.png')
    return dst


def test_replay_metrics_equal_offline_evaluation(ros_context, spin, synthetic_category_dir,
                                                 trained_scene_path, tmp_path, capsys,
                                                 load_script):
    """Same data, scene and configuration: replay through the node == offline/evaluate.py."""
    from rclpy.parameter import Parameter

    from igspad_ros.ros.inspector_node import InspectorNode

    data = _first_of_each_type(synthetic_category_dir, tmp_path / 'brick')
    bag_path = tmp_path / 'bag'
    assert bags.write_mad_bag(load_category(data, load_train=False), bag_path) == 4
    scene = tmp_path / 'scene' / 'scene.ply'   # a copy: the index and threshold land beside it
    scene.parent.mkdir()
    for path in trained_scene_path.parent.glob(trained_scene_path.stem + '.*'):
        shutil.copy(path, scene.parent / path.name)
    offline_json, ros_json = tmp_path / 'offline.json', tmp_path / 'ros.json'
    assert load_script('offline/evaluate.py').main([
        '--data', str(data), '--scene', str(scene), '--json', str(offline_json), '--steps',
        str(STEPS), '--device', 'cpu', '--matcher', MATCHER, '--extractor', EXTRACTOR,
        '--no-gallery', '--no-baseline-2d']) == 0
    node = InspectorNode(context=ros_context, parameter_overrides=[
        Parameter('scene_path', value=str(scene)), Parameter('igs_steps', value=STEPS),
        Parameter('device', value='cpu'), Parameter('matcher', value=MATCHER),
        Parameter('extractor', value=EXTRACTOR), Parameter('queue_mode', value='all')])
    spin(node)
    assert load_script('offline/replay_eval.py').main([
        '--bag', str(bag_path), '--json', str(ros_json), '--wait', '60', '--timeout', '120']) == 0
    capsys.readouterr()
    offline, ros = json.loads(offline_json.read_text()), json.loads(ros_json.read_text())
    assert {k: ros[k] for k in METRIC_KEYS} == {k: offline[k] for k in METRIC_KEYS}
    assert all(0.0 <= offline[k] <= 1.0 for k in METRIC_KEYS)
    assert ros['config'] == offline['config'] == {
        'extractor': EXTRACTOR, 'matcher': MATCHER, 'mps': True, 'steps': STEPS,
        'device': 'cpu'}
    keys = ('path', 'defect_type', 'image_score', 'anomalous')
    for mine, theirs in zip(ros['images'], offline['images']):
        assert {k: mine[k] for k in keys} == {k: theirs[k] for k in keys}
        assert mine['rot_deg'] == pytest.approx(theirs['rot_deg'], abs=1e-4)
        assert mine['trans_rel'] == pytest.approx(theirs['trans_rel'], abs=1e-6)
    assert ros['n_images'] == offline['n_images'] == 4 and ros['replay']['n_lost'] == 0
    assert set(ros['timing']) == set(offline['timing'])

"""Launch file, parameter file and RViz config agree with the node they start."""
import re
from pathlib import Path

import pytest
import rclpy
import yaml

from igspad_ros.ros.inspector_node import InspectorNode
from igspad_ros.ros.parameters import PARAMETERS

ROOT = Path(__file__).resolve().parents[1]
PARAMS_FILE = ROOT / 'config' / 'inspect.yaml'


def _yaml_parameters():
    data = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(data) == ['/**']
    return data['/**']['ros__parameters']


def test_parameter_file_names_only_declared_parameters_with_their_defaults():
    values = _yaml_parameters()
    assert set(values) <= set(PARAMETERS), sorted(set(values) - set(PARAMETERS))
    for name, value in values.items():
        default = PARAMETERS[name][0]
        assert type(value) is type(default), name
        assert value == default, name    # the file documents the defaults; launch overrides


def _construct_with(params_file):
    context = rclpy.context.Context()
    rclpy.init(args=['--ros-args', '--params-file', str(params_file)], context=context)
    try:
        InspectorNode(context=context)
    finally:
        rclpy.shutdown(context=context)


def test_the_node_accepts_the_parameter_file_through_rcl(tmp_path):
    # rcl parses the file as `ros2 launch` would; every value passes its declared range and
    # type, so construction gets as far as the one value the file leaves empty: scene_path
    with pytest.raises(ValueError, match='scene_path: not set'):
        _construct_with(PARAMS_FILE)
    # the same file with one value out of its declared range is refused, naming it
    broken = tmp_path / 'inspect.yaml'
    text, count = re.subn(r'igs_steps: \d+', 'igs_steps: 0', PARAMS_FILE.read_text())
    assert count == 1
    broken.write_text(text)
    with pytest.raises(rclpy.exceptions.ParameterException, match='igs_steps'):
        _construct_with(broken)


def test_rviz_config_shows_the_node_outputs_in_the_launch_fixed_frame():
    config = yaml.safe_load((ROOT / 'config' / 'igspad.rviz').read_text())
    manager = config['Visualization Manager']
    topics = {d['Class']: [] for d in manager['Displays']}
    for display in manager['Displays']:
        if 'Topic' in display:
            topics[display['Class']].append(display['Topic']['Value'])
    assert topics['rviz_default_plugins/Image'] == ['/inspector/overlay', '/inspector/rendered']
    assert topics['rviz_default_plugins/Pose'] == ['/inspector/object_pose']
    assert manager['Global Options']['Fixed Frame'] == 'map'


@pytest.mark.parametrize('autostart', ['true', 'false'])
def test_launch_description_builds_and_drives_the_lifecycle_without_autostart(
        load_script, autostart):
    # the repository's own launch/ folder imports as a namespace package: ask for a module
    pytest.importorskip('launch.launch_description',
                        reason='`launch` is not installed (it ships with ROS 2, not on PyPI)')
    pytest.importorskip('launch_ros', reason='`launch_ros` is not installed (it ships with '
                                             'ROS 2, not on PyPI)')
    from launch import LaunchContext, LaunchDescription
    from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
    from launch_ros.actions import LifecycleNode, Node

    description = load_script('launch/inspect.launch.py').generate_launch_description()
    assert isinstance(description, LaunchDescription)
    arguments = {e.name: e for e in description.entities
                 if isinstance(e, DeclareLaunchArgument)}
    assert {'scene', 'params_file', 'use_rviz', 'image_topic', 'autostart'} <= set(arguments)
    assert arguments['autostart'].default_value[0].text == 'true'
    nodes = [e for e in description.entities if isinstance(e, Node)]
    assert [n.node_executable for n in nodes] == ['inspector', 'static_transform_publisher',
                                                  'rviz2']
    assert isinstance(nodes[0], LifecycleNode)
    context = LaunchContext()
    context.launch_configurations.update(autostart=autostart, use_rviz='false')
    driving = [e for e in description.entities
               if isinstance(e, (EmitEvent, RegisterEventHandler))]
    assert len(driving) == 2      # configure at start, activate once inactive
    assert [e.condition.evaluate(context) for e in driving] == [autostart == 'false'] * 2

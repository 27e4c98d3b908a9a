"""Launch the inspector node, a static transform for a fixed frame, and optionally RViz.

Usage: ``ros2 launch igspad_ros inspect.launch.py scene:=/path/to/scene.ply
image_topic:=/camera/image_raw use_rviz:=true`` (``ros2 launch ... --show-args`` lists all).

The inspector is a lifecycle node. With ``autostart:=true`` (default) it configures and
activates itself; with ``autostart:=false`` this launch file drives it: configure once the
process runs, activate once it reports ``inactive`` (a lifecycle manager could instead).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

ARGUMENTS = {
    'scene': ('', 'scene PLY written by offline/train_scene.py (index and meta beside it)'),
    'params_file': (PathJoinSubstitution([FindPackageShare('igspad_ros'), 'config',
                                          'inspect.yaml']),
                    'parameter file of the inspector node'),
    'use_rviz': ('true', 'start RViz with config/igspad.rviz'),
    'autostart': ('true', 'the inspector configures and activates itself; false: this '
                          'launch file drives its lifecycle transitions'),
    'image_topic': ('/camera/image_raw', 'camera image topic (sensor_msgs/Image)'),
    'camera_info_topic': ('/camera/camera_info', 'camera info topic (optional)'),
    'camera_frame': ('camera_optical_frame', 'frame_id of the camera images'),
    'fixed_frame': ('map', 'fixed frame for RViz, tied to the camera frame by a static '
                           'transform'),
}


def generate_launch_description():
    """Return the launch description: inspector (and its transitions), static TF and RViz."""
    arg = LaunchConfiguration
    image_topic = arg('image_topic')
    inspector = LifecycleNode(
        package='igspad_ros', executable='inspector', name='inspector', namespace='',
        output='screen',
        parameters=[arg('params_file'), {'scene_path': arg('scene'),
                                         'autostart': ParameterValue(arg('autostart'),
                                                                     value_type=bool)}],
        remappings=[('image', image_topic), ('image/compressed', [image_topic, '/compressed']),
                    ('camera_info', arg('camera_info_topic'))])
    driven = UnlessCondition(arg('autostart'))

    def transition(transition_id, **kwargs):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(inspector),
                                           transition_id=transition_id), **kwargs)

    # autostart:=false: configure at start (loads the model), activate once inactive
    configure = transition(Transition.TRANSITION_CONFIGURE, condition=driven)
    activate = RegisterEventHandler(
        OnStateTransition(target_lifecycle_node=inspector, goal_state='inactive',
                          entities=[transition(Transition.TRANSITION_ACTIVATE)]),
        condition=driven)
    # identity transform: the camera optical frame is the fixed frame's origin, so RViz
    # can show the estimated object pose (published in the camera frame) without a robot
    static_tf = Node(
        package='tf2_ros', executable='static_transform_publisher', name='camera_frame_tf',
        arguments=['--frame-id', arg('fixed_frame'), '--child-frame-id', arg('camera_frame')])
    rviz = Node(
        package='rviz2', executable='rviz2', name='rviz2', output='log',
        arguments=['-d', PathJoinSubstitution([FindPackageShare('igspad_ros'), 'config',
                                               'igspad.rviz'])],
        condition=IfCondition(arg('use_rviz')))
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=description)
         for name, (default, description) in ARGUMENTS.items()]
        + [inspector, activate, configure, static_tf, rviz])

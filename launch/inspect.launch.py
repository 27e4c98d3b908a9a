"""Launch the inspector node, a static transform for a fixed frame, and optionally RViz.

Usage: ``ros2 launch igspad_ros inspect.launch.py scene:=/path/to/scene.ply
image_topic:=/camera/image_raw use_rviz:=true`` (``ros2 launch ... --show-args`` lists all).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = {
    'scene': ('', 'scene PLY written by offline/train_scene.py (index and meta beside it)'),
    'params_file': (PathJoinSubstitution([FindPackageShare('igspad_ros'), 'config',
                                          'inspect.yaml']),
                    'parameter file of the inspector node'),
    'use_rviz': ('true', 'start RViz with config/igspad.rviz'),
    'image_topic': ('/camera/image_raw', 'camera image topic (sensor_msgs/Image)'),
    'camera_info_topic': ('/camera/camera_info', 'camera info topic (optional)'),
    'camera_frame': ('camera_optical_frame', 'frame_id of the camera images'),
    'fixed_frame': ('map', 'fixed frame for RViz, tied to the camera frame by a static '
                           'transform'),
}


def generate_launch_description():
    """Return the launch description: inspector, static transform and RViz."""
    arg = LaunchConfiguration
    image_topic = arg('image_topic')
    inspector = Node(
        package='igspad_ros', executable='inspector', name='inspector', output='screen',
        parameters=[arg('params_file'), {'scene_path': arg('scene')}],
        remappings=[('image', image_topic), ('image/compressed', [image_topic, '/compressed']),
                    ('camera_info', arg('camera_info_topic'))])
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
        + [inspector, static_tf, rviz])

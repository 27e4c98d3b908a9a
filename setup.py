"""ament_python package definition for igspad_ros."""
from glob import glob

from setuptools import find_packages, setup

package_name = 'igspad_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml') + glob('config/*.rviz')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='igspad_ros developers',
    maintainer_email='igspad@example.com',
    description='Pose-agnostic anomaly detection by inverting 3D Gaussian Splatting (IGSPAD).',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'inspector = igspad_ros.ros.inspector_node:main',
        ],
    },
)

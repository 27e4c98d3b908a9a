"""ROS-free core of IGSPAD: cameras, Gaussian scene, rendering, pose inversion, scoring."""

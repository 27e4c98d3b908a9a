"""ROS 2 glue: the inspector node and message conversion (the only rclpy users)."""

"""igspad_ros: pose-agnostic anomaly detection by inverting 3D Gaussian Splatting."""

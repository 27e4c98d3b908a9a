"""Datasets: MAD reader, synthetic MAD-format objects, MAD <-> rosbag2."""

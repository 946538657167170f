"""endo_depth_ros: depth, point clouds and poses from endoscope video, for ROS 2.

The package is a ROS-free core (numpy/torch/OpenCV) plus a thin ROS layer in
``endo_depth_ros.ros``; only that subpackage imports rclpy or message packages.
"""

"""The ROS 2 layer: the only part of scr_ros that imports rclpy.

The nodes here wire topics, parameters, TF and threads to the ROS-free cores in
:mod:`scr_ros.node_logic` and the conversions in :mod:`scr_ros.messages`, which hold every decision
and are tested without ROS.
"""

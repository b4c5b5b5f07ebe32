"""ROS 2 adapter: the `vpr_node` node, its parameters and message mapping.

Only `node.py` imports rclpy and ROS message packages. Everything it relies on (latest-only
buffer, parameters, event payloads, covariance, diagnostics, match image) lives in ROS-free
modules here, so it is unit tested on machines without ROS 2.
"""

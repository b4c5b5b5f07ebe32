"""Frame sources: image folders, videos, rosbag2, and ROS message conversions."""

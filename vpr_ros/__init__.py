"""vpr_ros: visual place recognition for ROS 2 robots (NetVLAD + SARE, FAISS keyframe map)."""

__version__ = "0.1.0"

"""The network, defined once and shared by the robot and by training."""
from vpr_ros.model.vpr_model import ModelConfig, VPRModel, build_model

__all__ = ["ModelConfig", "VPRModel", "build_model"]

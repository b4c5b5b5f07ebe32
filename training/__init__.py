"""Training toolkit for the vpr_ros model: datasets with ground truth, hard-negative mining,
SARE / triplet / contrastive losses and a (DDP-ready) fine-tuning loop.

The network itself is defined in `vpr_ros.model`; this package only trains it, so the robot
never needs anything from here.
"""

"""Deployment artifacts: the ONNX export of the whole embedding and TensorRT engines built from it."""

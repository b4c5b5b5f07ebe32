"""Build a TensorRT engine from the ONNX export, on the target GPU, and cache it beside the ONNX.

FP16 is the recommended precision on Jetson. INT8 uses TensorRT's implicit quantization with an
`IInt8EntropyCalibrator2` fed from an image folder; TensorRT 10.1 deprecated that path in favour
of explicit quantization (Q/DQ nodes in the ONNX, e.g. from NVIDIA's Model Optimizer). It still
builds in TensorRT 10.x, and the builder says so in a warning; measure Recall@N of an INT8
engine against the FP16 one before deploying it.
"""
import logging
from pathlib import Path
from typing import Optional

from vpr_ros.export.metadata import INPUT_NAME, read_onnx_info
from vpr_ros.runtime.preprocess import STRIDE
from vpr_ros.runtime.calibration import (DEFAULT_MAX_IMAGES, calibration_batches,
                                         calibration_id, calibration_images,
                                         create_entropy_calibrator)
from vpr_ros.runtime.engine_cache import (PRECISIONS, EngineKey, ShapeProfile, engine_path_for,
                                          file_sha256, find_cached_engine, load_engine,
                                          record_path, save_engine, tensorrt_platform)
from vpr_ros.runtime.preprocess import target_size

LOG = logging.getLogger(__name__)


def default_profile(long_side: int, max_batch: int = 4) -> ShapeProfile:
    """Shapes the runtime preprocessing produces: landscape/portrait up to long_side², tuned for 4:3."""
    side = target_size(1, 1, long_side)[0]
    smallest = max(STRIDE, side // 4 // STRIDE * STRIDE)
    opt_h, opt_w = target_size(3, 4, long_side)
    return ShapeProfile(min=(1, 3, smallest, smallest), opt=(1, 3, opt_h, opt_w),
                        max=(max_batch, 3, side, side))


def build_engine(onnx_path, precision: str = "fp16", profile: Optional[ShapeProfile] = None,
                 calib_dir=None, calib_batch_size: int = 8,
                 calib_max_images: int = DEFAULT_MAX_IMAGES, workspace_gb: float = 2.0,
                 rebuild: bool = False) -> Path:
    """The engine for `onnx_path` on this GPU: reused from the cache when its key matches.

    Without an explicit `profile`, any cached engine of this ONNX, TensorRT, GPU and precision
    is reused (e.g. one built by `vpr-ros build-engine` with a custom profile); a new one gets
    `default_profile`. Returns the engine path (`<onnx stem>.<key>.engine`, with a `.json`
    record beside it).
    """
    onnx_path = Path(onnx_path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    info = read_onnx_info(onnx_path)
    tensorrt_version, gpu_name = tensorrt_platform()
    onnx_sha256 = file_sha256(onnx_path)
    if profile is None and not rebuild and (precision != "int8" or calib_dir is None):
        cached = find_cached_engine(onnx_path, onnx_sha256, tensorrt_version, gpu_name, precision)
        if cached is not None:
            LOG.info("reusing cached TensorRT engine %s", cached)
            return cached
    if precision == "int8" and calib_dir is None:
        raise ValueError("INT8 needs calibration images: pass --calib DIR (a few hundred frames "
                         "from the robot's camera), or use --fp16")
    profile = profile or default_profile(info.image_long_side)
    images = calibration_images(calib_dir, calib_max_images) if precision == "int8" else []
    key = EngineKey(onnx_sha256=onnx_sha256, tensorrt_version=tensorrt_version,
                    gpu_name=gpu_name, precision=precision, profile=profile,
                    calibration=calibration_id(images, calib_batch_size) if images else "")
    engine_path = engine_path_for(onnx_path, key)
    if not rebuild and engine_path.is_file() and record_path(engine_path).is_file():
        load_engine(engine_path, tensorrt_version, gpu_name, expected=key)
        LOG.info("reusing cached TensorRT engine %s", engine_path)
        return engine_path
    LOG.info("building %s TensorRT %s engine for '%s' from %s (takes minutes, done once)",
             precision, tensorrt_version, gpu_name, onnx_path)
    data = _build_serialized(onnx_path, precision, profile, images, calib_batch_size,
                             engine_path.with_suffix(".calib"), workspace_gb)
    save_engine(engine_path, data, key, info)
    LOG.info("wrote %s (%.1f MB)", engine_path, len(data) / 1e6)
    return engine_path


def _build_serialized(onnx_path: Path, precision: str, profile: ShapeProfile, images,
                      calib_batch_size: int, calib_cache: Path, workspace_gb: float) -> bytes:
    import pycuda.driver as cuda
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)            # TensorRT 10: networks are explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}; re-export it with "
                         f"`vpr-ros export --opset 17`")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    optimization = builder.create_optimization_profile()
    optimization.set_shape(INPUT_NAME, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(optimization)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)       # INT8 layers without INT8 kernels use FP16
    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        if precision == "int8":
            LOG.warning("INT8 uses implicit quantization with IInt8EntropyCalibrator2, deprecated "
                        "since TensorRT 10.1 (superseded by explicit Q/DQ quantization); check "
                        "Recall@N against the FP16 engine before deploying it")
            _, _, opt_h, opt_w = profile.opt
            batch_shape = (calib_batch_size, 3, opt_h, opt_w)
            calibration = builder.create_optimization_profile()
            calibration.set_shape(INPUT_NAME, batch_shape, batch_shape, batch_shape)
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = create_entropy_calibrator(
                calibration_batches(None, calib_batch_size, opt_h, opt_w, images=images),
                batch_shape, calib_cache, num_batches=len(images) // calib_batch_size)
            config.set_calibration_profile(calibration)
        serialized = builder.build_serialized_network(network, config)
    finally:
        context.pop()
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} "
                           f"({precision}); see the TensorRT messages above")
    return bytes(serialized)

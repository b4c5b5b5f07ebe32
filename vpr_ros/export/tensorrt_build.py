"""Build a TensorRT engine from the ONNX export, on the target GPU, and cache it beside the ONNX.

Networks are strongly typed (`NetworkDefinitionCreationFlag.STRONGLY_TYPED`): the precision is
in the ONNX graph that `vpr_ros.export.precision` derives from the export (float16 backbone, or
Q/DQ int8 convolutions calibrated on images), never in builder flags. `BuilderFlag.FP16` is
deprecated since TensorRT 10.12, `BuilderFlag.INT8` with an `int8_calibrator` since 10.1, and
TensorRT 11 removes both; every supported version (10.3+) has strong typing. FP16 is the
default; measure Recall@N of an INT8 engine against the FP16 one before deploying it.
"""
import logging
from pathlib import Path
from typing import Optional

from vpr_ros.export.metadata import INPUT_NAME, read_onnx_info
from vpr_ros.export.precision import network_onnx
from vpr_ros.runtime.calibration import (DEFAULT_MAX_IMAGES, calibration_batches,
                                         calibration_id, calibration_images,
                                         check_calibration_images)
from vpr_ros.runtime.engine_cache import (DEFAULT_PRECISION, PRECISIONS, RUNTIME_PRECISIONS,
                                          EngineKey, ShapeProfile, engine_path_for, file_sha256,
                                          find_cached_engine, load_engine, record_path,
                                          save_engine)
from vpr_ros.runtime.preprocess import STRIDE, target_size
from vpr_ros.runtime.tensorrt_platform import tensorrt_platform

LOG = logging.getLogger(__name__)


def default_profile(long_side: int, max_batch: int = 4) -> ShapeProfile:
    """Shapes the runtime preprocessing produces: landscape/portrait up to long_side², tuned for 4:3."""
    side = target_size(1, 1, long_side)[0]
    smallest = max(STRIDE, side // 4 // STRIDE * STRIDE)
    opt_h, opt_w = target_size(3, 4, long_side)
    return ShapeProfile(min=(1, 3, smallest, smallest), opt=(1, 3, opt_h, opt_w),
                        max=(max_batch, 3, side, side))


def build_engine(onnx_path, precision: str = DEFAULT_PRECISION,
                 profile: Optional[ShapeProfile] = None, calib_dir=None,
                 calib_batch_size: int = 8, calib_max_images: int = DEFAULT_MAX_IMAGES,
                 workspace_gb: float = 2.0, rebuild: bool = False, device_index: int = 0) -> Path:
    """The engine for `onnx_path` on CUDA device `device_index`: reused from the cache when its
    key matches.

    Without an explicit `profile` (and, for INT8, without new calibration images), any cached
    engine of this model, TensorRT, GPU and precision is reused; a new one gets
    `default_profile`. Returns the engine path (`<onnx stem>.<key>.engine`, with a `.json`
    record beside it).
    """
    onnx_path = Path(onnx_path)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    info = read_onnx_info(onnx_path)
    images = []
    if precision == "int8" and calib_dir is not None:
        images = calibration_images(calib_dir, calib_max_images)
        check_calibration_images(images, calib_batch_size, calib_dir)
    tensorrt_version, gpu_name = tensorrt_platform(device_index)
    if profile is None and not rebuild and not images:
        cached = find_cached_engine(onnx_path, info.fingerprint, tensorrt_version, gpu_name,
                                    precision)
        if cached is not None:
            LOG.info("reusing cached %s TensorRT engine %s", precision, cached)
            return cached
    if precision == "int8" and not images:
        raise ValueError("INT8 needs calibration images: pass --calib DIR (a few hundred frames "
                         "from the robot's camera), or use --precision fp16")
    profile = profile or default_profile(info.image_long_side)
    key = EngineKey(onnx_sha256=file_sha256(onnx_path), tensorrt_version=tensorrt_version,
                    gpu_name=gpu_name, precision=precision, profile=profile,
                    calibration=calibration_id(images, calib_batch_size) if images else "")
    engine_path = engine_path_for(onnx_path, key)
    if not rebuild and engine_path.is_file() and record_path(engine_path).is_file():
        load_engine(engine_path, tensorrt_version, gpu_name, expected=key)
        LOG.info("reusing cached %s TensorRT engine %s", precision, engine_path)
        return engine_path
    LOG.info("building %s TensorRT %s engine for '%s' from %s (takes minutes, done once)",
             precision, tensorrt_version, gpu_name, onnx_path)
    _, _, opt_h, opt_w = profile.opt
    batches = (calibration_batches(calib_dir, calib_batch_size, opt_h, opt_w, images=images)
               if images else ())
    network = network_onnx(onnx_path, precision, batches)
    data = serialize_network(network, f"{onnx_path} ({precision})", profile, workspace_gb,
                             device_index)
    save_engine(engine_path, data, key, info)
    LOG.info("wrote %s (%.1f MB)", engine_path, len(data) / 1e6)
    return engine_path


def runtime_engine(onnx_path, precision: str = "auto", device_index: int = 0,
                   **build_kwargs) -> Path:
    """The engine a backend loads: a cached one of this model and GPU at `precision` ("auto":
    any precision), else one built now at `precision` (auto: DEFAULT_PRECISION), with a warning
    since that takes minutes; `build_kwargs` (profile, calibration...) apply to that build only.
    """
    if precision not in RUNTIME_PRECISIONS:
        raise ValueError(f"engine precision must be one of {RUNTIME_PRECISIONS}, got "
                         f"{precision!r}")
    info = read_onnx_info(onnx_path)
    tensorrt_version, gpu_name = tensorrt_platform(device_index)
    wanted = None if precision == "auto" else precision
    cached = find_cached_engine(onnx_path, info.fingerprint, tensorrt_version, gpu_name, wanted)
    if cached is not None:
        LOG.info("found cached TensorRT engine %s (engine precision %s)", cached.name, precision)
        return cached
    build = wanted or DEFAULT_PRECISION
    LOG.warning("no cached TensorRT engine (precision %s) of model %s for TensorRT %s on '%s' "
                "beside %s: building a %s one now (minutes on a Jetson); prebuild it with "
                "`vpr-ros build-engine --onnx %s`", precision, info.fingerprint,
                tensorrt_version, gpu_name, onnx_path, build, onnx_path)
    return build_engine(onnx_path, precision=build, device_index=device_index, **build_kwargs)


def serialize_network(onnx_bytes: bytes, source: str, profile: ShapeProfile,
                      workspace_gb: float, device_index: int) -> bytes:
    """Parse `onnx_bytes` into a strongly typed network and build it on CUDA device
    `device_index` (its primary context is pushed around the build)."""
    import pycuda.driver as cuda
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT {trt.__version__} cannot parse {source}: {errors}; "
                         f"re-export it with `vpr-ros export` (opset ≤ 17)")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    optimization = builder.create_optimization_profile()
    optimization.set_shape(INPUT_NAME, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(optimization)
    context = cuda.Device(device_index).retain_primary_context()
    context.push()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        context.pop()
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {source}; see the "
                           f"TensorRT messages above")
    return bytes(serialized)

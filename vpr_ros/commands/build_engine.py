"""`vpr-ros build-engine`: TensorRT engine from the ONNX export, built on (and for) this GPU."""
import argparse

from vpr_ros.runtime.calibration import DEFAULT_MAX_IMAGES


def parse_shape(text: str):
    """'1x3x480x640' → (1, 3, 480, 640)."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 4:
        raise argparse.ArgumentTypeError(f"shape must look like 1x3x480x640 (BxCxHxW), got {text!r}")
    return shape


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, help="ONNX file from `vpr-ros export`")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="FP16 engine (recommended on Jetson)")
    precision.add_argument("--int8", action="store_true",
                           help="INT8 engine, calibrated on --calib images (implicit quantization, "
                                "deprecated since TensorRT 10.1: check recall against --fp16)")
    parser.add_argument("--calib", help="folder of calibration images (INT8)")
    parser.add_argument("--calib-batch", type=int, default=8, help="calibration batch size")
    parser.add_argument("--calib-images", type=int, default=DEFAULT_MAX_IMAGES,
                        help=f"at most this many calibration images (default {DEFAULT_MAX_IMAGES})")
    for name, help_text in (("min", "smallest"), ("opt", "tuned-for"), ("max", "largest")):
        parser.add_argument(f"--{name}-shape", type=parse_shape,
                            help=f"{help_text} input BxCxHxW (default from the model's long side)")
    parser.add_argument("--workspace-gb", type=float, default=2.0, help="builder workspace (GB)")
    parser.add_argument("--rebuild", action="store_true", help="ignore a cached engine")


def _profile(args, long_side: int):
    from vpr_ros.export.tensorrt_build import default_profile
    from vpr_ros.runtime.engine_cache import ShapeProfile

    default = default_profile(long_side)
    return ShapeProfile(min=args.min_shape or default.min, opt=args.opt_shape or default.opt,
                        max=args.max_shape or default.max)


def run(args) -> int:
    from vpr_ros.export.metadata import read_onnx_info
    from vpr_ros.export.tensorrt_build import build_engine

    info = read_onnx_info(args.onnx)
    profile = _profile(args, info.image_long_side)
    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    if args.calib and not args.int8:
        raise ValueError("--calib is only used with --int8")
    _check_tensorrt()
    path = build_engine(args.onnx, precision=precision, profile=profile, calib_dir=args.calib,
                        calib_batch_size=args.calib_batch, calib_max_images=args.calib_images,
                        workspace_gb=args.workspace_gb, rebuild=args.rebuild)
    print(f"engine {path} ({precision}, profile min {profile.min} opt {profile.opt} "
          f"max {profile.max}); backends find it from the ONNX path")
    return 0


def _check_tensorrt() -> None:
    """ValueError saying how to get TensorRT when it or a GPU is missing here."""
    from vpr_ros.runtime.engine_cache import tensorrt_platform

    try:
        tensorrt_platform()
    except ImportError as err:
        raise ValueError(f"TensorRT is not usable here ({err}); build the engine on the target "
                         f"GPU (JetPack ships tensorrt; pip install pycuda)") from err
    except Exception as err:  # pycuda raises its own error types when no driver/GPU is present
        raise ValueError(f"no usable CUDA GPU for TensorRT here ({err}); build the engine on "
                         f"the target GPU") from err

"""`vpr-ros build-engine`: TensorRT engine from the ONNX export, built on (and for) this GPU."""
import argparse

from vpr_ros.runtime.calibration import (DEFAULT_MAX_IMAGES, calibration_images,
                                         check_calibration_images)
from vpr_ros.runtime.engine_cache import DEFAULT_PRECISION, PRECISIONS


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
    parser.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                        help=f"engine precision (default {DEFAULT_PRECISION}, what the runtime "
                             f"builds too); int8 = Q/DQ calibrated on --calib images: check "
                             f"Recall@N against fp16")
    parser.add_argument("--calib", help="folder of calibration images (int8)")
    parser.add_argument("--calib-batch", type=int, default=8, help="calibration batch size")
    parser.add_argument("--calib-images", type=int, default=DEFAULT_MAX_IMAGES,
                        help=f"at most this many calibration images (default {DEFAULT_MAX_IMAGES})")
    for name, help_text in (("min", "smallest"), ("opt", "tuned-for"), ("max", "largest")):
        parser.add_argument(f"--{name}-shape", type=parse_shape,
                            help=f"{help_text} input BxCxHxW (default from the model's long side)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
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
    if args.calib and args.precision != "int8":
        raise ValueError("--calib is only used with --precision int8")
    if args.precision == "int8":
        if not args.calib:
            raise ValueError("--precision int8 needs --calib DIR (a few hundred frames from the "
                             "robot's camera)")
        check_calibration_images(calibration_images(args.calib, args.calib_images),
                                 args.calib_batch, args.calib)     # before TensorRT starts
    _check_tensorrt(args.device)
    path = build_engine(args.onnx, precision=args.precision, profile=profile,
                        calib_dir=args.calib, calib_batch_size=args.calib_batch,
                        calib_max_images=args.calib_images, workspace_gb=args.workspace_gb,
                        rebuild=args.rebuild, device_index=args.device)
    print(f"engine {path} ({args.precision}, profile min {profile.min} opt {profile.opt} "
          f"max {profile.max}); backends find it from the ONNX path")
    return 0


def _check_tensorrt(device_index: int) -> None:
    """ValueError saying how to get TensorRT when it, a supported version or the GPU is missing."""
    from vpr_ros.runtime.tensorrt_platform import UnsupportedTensorRT, tensorrt_platform

    try:
        tensorrt_platform(device_index)
    except UnsupportedTensorRT as err:
        raise ValueError(str(err)) from err
    except ImportError as err:
        raise ValueError(f"TensorRT is not usable here ({err}); build the engine on the target "
                         f"GPU (JetPack ships tensorrt; pip install pycuda)") from err
    except Exception as err:  # pycuda raises its own error types when no driver/GPU is present
        raise ValueError(f"no usable CUDA GPU for TensorRT here ({err}); build the engine on "
                         f"the target GPU") from err

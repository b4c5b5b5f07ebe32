"""`--backend`: the same choices and default in every command that embeds images."""
import argparse

from vpr_ros.runtime.backends import BACKENDS, check_backend


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="embedding backend (default auto: TensorRT, then ONNX Runtime on "
                             "CUDA, then on the CPU, then torch; the first that works here)")


def check(args) -> None:
    """Fail at once when the chosen backend cannot run here, before any clustering or embedding."""
    check_backend(args.backend)

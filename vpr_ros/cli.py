"""`vpr-ros` command line: one subcommand per job, each in its own module under `commands/`.

Modules are imported only when their subcommand runs, so `vpr-ros --help` stays fast and a
missing optional dependency (onnx, tensorrt) only matters for the command that needs it.
"""
import argparse
import importlib
import logging
import sys

from vpr_ros import __version__

COMMANDS = {
    "demo": ("demo", "Build a map from the bundled day sample and relocalize the night sample."),
    "eval": ("evaluate", "Recall@N, PR curve and AUC of a model on a database/query image pair."),
    "build-map": ("build_map", "Build (or extend) a keyframe map from images, a video or a rosbag2."),
    "localize": ("localize", "Replay images, a video or a rosbag2 against a map; write events as JSONL."),
    "export": ("export", "Export a checkpoint to one ONNX graph (normalization to L2 output)."),
    "build-engine": ("build_engine", "Build a TensorRT engine from an ONNX file on this GPU."),
    "extract-drive": ("extract_drive", "Save a drive's frames and positions as training data "
                      "(images + path,x,y CSV)."),
}


def build_parser(command=None) -> argparse.ArgumentParser:
    """The `vpr-ros` parser; the chosen command's module adds its own arguments."""
    parser = argparse.ArgumentParser(
        prog="vpr-ros", description="Visual place recognition for ROS 2 robots: maps, "
        "relocalization, evaluation and deployment.")
    parser.add_argument("--version", action="version", version=f"vpr-ros {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(f"vpr_ros.commands.{module_name}")
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


EXIT_INTERRUPTED = 130
"""128 + SIGINT, as shells report a process ended by Ctrl-C."""


def main(argv=None) -> int:
    """Entry point of the `vpr-ros` console script; Ctrl-C ends any command with one line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if a in COMMANDS), None)
    try:
        args = build_parser(command).parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
        )
        return int(args._run(args) or 0)
    except (FileNotFoundError, ValueError) as err:
        logging.getLogger("vpr_ros").error("%s", err)
        return 2
    except KeyboardInterrupt:
        print(f"vpr-ros{' ' + command if command else ''}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

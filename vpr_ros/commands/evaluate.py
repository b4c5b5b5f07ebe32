"""`vpr-ros eval`: Recall@N, PR curve and AUC on a database/query pair of image folders."""
import argparse

from vpr_ros.commands import backend_option
from vpr_ros.evaluation.run import format_table, run_eval
from vpr_ros.localization.config import EngineConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", required=True, help="folder of database (map) images")
    parser.add_argument("--query", required=True, help="folder of query images")
    gt = parser.add_mutually_exclusive_group()
    gt.add_argument("--gt", help="ground-truth CSV (columns query,positives; or Gardens Point's)")
    gt.add_argument("--tolerance-frames", type=int, default=2,
                    help="aligned folders: query frame f matches db frames f±N, by the "
                         "frame numbers in the file names when every name carries one "
                         "(Image042.jpg), else by position in the folder (default 2)")
    parser.add_argument("--model", help="checkpoint; default: off-the-shelf model clustered on --db")
    parser.add_argument("--save-model", help="keep the off-the-shelf model as this checkpoint")
    backend_option.add_argument(parser)
    parser.add_argument("--sequence-length", type=int, default=0, metavar="N",
                        help="also score sequence matching over each query and its N-1 "
                             "predecessors in the folder (engine defaults otherwise; 0: off)")
    parser.add_argument("--out", required=True, help="output folder for metrics.json and PNGs")


def run(args) -> int:
    backend_option.check(args)
    sequence = None
    if args.sequence_length:
        sequence = EngineConfig(sequence_length=args.sequence_length)
    metrics = run_eval(args.db, args.query, args.out, model_path=args.model, gt_csv=args.gt,
                       tolerance=args.tolerance_frames, backend=args.backend,
                       save_model=args.save_model, sequence=sequence)
    print(format_table(metrics))
    print(f"wrote {args.out}/metrics.json, pr_curve.png, matches.png")
    return 0

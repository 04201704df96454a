"""The Middlebury ``other`` benchmark: find its sequences, interpolate frame10i11, score it.

Layout: ``ROOT/other-data/<seq>/frame07.png .. frame14.png``, ground truth (public for some
sequences) ``ROOT/other-gt-interp/<seq>/frame10i11.png``. The model sees frame09..frame12; a
sequence with only frame10 and frame11 is fed [10, 10, 11, 11] as FLAVR did. Frames keep their
sizes: the model pads them to multiples of 8 and its output is cropped back, never resized."""
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import torch

from dataset.middlebury import input_frame_paths
from myutils import calc_psnr, calc_ssim

from .frame_io import InferenceInputError, read_rgb, rgb_to_tensor, tensor_to_rgb, write_rgb

log = logging.getLogger(__name__)

EVALUATION_SEQUENCES = ("Backyard", "Basketball", "Dumptruck", "Evergreen", "Mequon", "Schefflera",
                        "Teddy", "Urban")  # ground truth hidden: results are uploaded
RESULT_NAME = "frame10i11.png"


@dataclass
class MiddleburySequence:
    """One sequence: its input frame paths (4, time order) and its ground truth path or None."""
    name: str
    input_paths: list
    gt_path: str = None

    @property
    def is_evaluation(self):
        return self.name in EVALUATION_SEQUENCES


@dataclass
class SequenceScore:
    """PSNR (dB) and SSIM on float RGB in [0, 1] (FLAVR's protocol); IE (Baker et al.) on the 8-bit
    result: the root mean square over pixels of the L2 norm of the RGB difference, in 8-bit levels."""
    name: str
    psnr: float
    ssim: float
    ie: float


def find_sequences(root):
    """Sequences under ``ROOT/other-data`` that are evaluation sequences or have ground truth, sorted
    by name; InferenceInputError if the layout is not Middlebury's."""
    data_dir = os.path.join(root, "other-data")
    if not os.path.isdir(data_dir):
        raise InferenceInputError(f"no other-data folder in {root}: pass the Middlebury 'other' folder "
                                  "(it holds other-data and other-gt-interp)")
    gt_dir = os.path.join(root, "other-gt-interp")
    sequences = []
    for name in sorted(n for n in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, n))):
        gt_path = os.path.join(gt_dir, name, RESULT_NAME)
        sequence = MiddleburySequence(name, [], gt_path if os.path.isfile(gt_path) else None)
        if not sequence.is_evaluation and sequence.gt_path is None:
            log.warning("skipping %s: not an evaluation sequence and no ground truth", name)
            continue
        sequence.input_paths = input_frame_paths(os.path.join(data_dir, name))
        sequences.append(sequence)
    if not sequences:
        raise InferenceInputError(f"no Middlebury sequences with frame10/frame11 in {data_dir}")
    return sequences


@torch.no_grad()
def interpolate_sequence(model, sequence, device):
    """frame10i11 of ``sequence`` from ``model`` (a PaddedModel, 2x): ``1 x 3 x H x W`` float."""
    frames = [read_rgb(p) for p in sequence.input_paths]
    if any(f.shape != frames[0].shape for f in frames):
        raise InferenceInputError(f"the input frames of Middlebury sequence {sequence.name} differ in size")
    return model([rgb_to_tensor(f, device) for f in frames])[0].float()


def interpolation_error(result_rgb, gt_rgb):
    """Baker et al.'s IE: sqrt(mean over pixels of |result - gt|^2), |.| the L2 norm of the 8-bit RGB
    difference (sqrt(3) times the RMS over all colour values)."""
    difference = result_rgb.astype(np.float64) - gt_rgb.astype(np.float64)
    return math.sqrt(float((difference ** 2).sum(axis=2).mean()))


def score_sequence(sequence, prediction, result_rgb):
    """PSNR / SSIM of the float ``prediction`` (``1 x 3 x H x W``) and IE of the 8-bit ``result_rgb``
    against the sequence's ground truth."""
    gt_rgb = read_rgb(sequence.gt_path)
    if gt_rgb.shape != result_rgb.shape:
        raise InferenceInputError(f"ground truth {sequence.gt_path} is {gt_rgb.shape[1]}x{gt_rgb.shape[0]}, "
                                  f"the input frames {result_rgb.shape[1]}x{result_rgb.shape[0]}")
    gt = rgb_to_tensor(gt_rgb, prediction.device)
    return SequenceScore(sequence.name, calc_psnr(prediction, gt), calc_ssim(prediction, gt),
                         interpolation_error(result_rgb, gt_rgb))


def result_path(output_dir, sequence):
    """``<output_dir>/<seq>/frame10i11.png``, the file the benchmark's upload expects."""
    return os.path.join(output_dir, sequence.name, RESULT_NAME)


def check_result_paths(sequences, output_dir, overwrite):
    """Raise InferenceInputError if ``output_dir`` is a file or, unless ``overwrite``, if a result
    file of an evaluation sequence already exists there."""
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise InferenceInputError(f"--output_dir {output_dir} is a file: give a folder")
    taken = [result_path(output_dir, s) for s in sequences if s.is_evaluation]
    taken = [p for p in taken if os.path.exists(p)]
    if taken and not overwrite:
        raise InferenceInputError(f"{taken[0]} already exists ({len(taken)} result file(s) in all): choose "
                                  "another --output_dir or pass --overwrite")


def evaluate_middlebury(model, sequences, device, output_dir):
    """Interpolate every sequence; write ``<output_dir>/<seq>/frame10i11.png`` for the evaluation
    sequences and score those with ground truth. Returns ``(scores, written paths)``."""
    scores, written = [], []
    for sequence in sequences:
        prediction = interpolate_sequence(model, sequence, device)
        result_rgb = tensor_to_rgb(prediction)[0]
        if sequence.is_evaluation:
            written.append(result_path(output_dir, sequence))
            os.makedirs(os.path.dirname(written[-1]), exist_ok=True)
            write_rgb(written[-1], result_rgb)
        if sequence.gt_path is not None:
            scores.append(score_sequence(sequence, prediction, result_rgb))
        log.info("interpolated %s", sequence.name)
    return scores, written

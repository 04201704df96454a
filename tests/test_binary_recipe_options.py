"""The options of the binary recipe: parameter-free real shortcuts, the residual and warp heads,
the matching and DIS motion priors, flow supervision, what --pretrained copies between heads, weight decay, distillation, two-stage training and the
per-step learning-rate schedules (with exact resume), on a tiny Vimeo-90K-layout data set."""
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from fixtures import REPO, write_random_checkpoint, write_vimeo
from model import build_model, describe_config, model_config
from model.binconv import BinConv3d, BinConvTranspose3d, ParameterFreeShortcut
from loss import flow_supervision_loss
from model.motion_prior import (FLOW_SCALE, MATCH_TEMPERATURE, STILL_GATE, backward_warp, still_motion, dis_flow,
                                dis_fused_flow, dis_fused_still_flow, fuse_dis_flows, half_motion, linear_blend,
                                matching_flow, grey_images, host_half_motion, minmod, output_times, prior_flows,
                                quadratic_shift, reference_flows, warp_blend)
from model.files import read_checkpoint, state_dict_of
from training import main
from training.trainer import Trainer, initialise_from_pretrained, inside_prior_context, make_optimizer
from training.weight_schedule import SHARPNESS as SOFT_SIGN_SHARPNESS
from training.weight_schedule import WeightSchedule, soft_sign_epochs
from engine import pack_binary_model
from util import BinOp


def tiny(data_root, checkpoint_dir, exp_name, *extra):
    return ["--dataset", "vimeo90K_septuplet", "--data_root", str(data_root), "--crop_size", "32",
            "--batch_size", "2", "--test_batch_size", "2", "--max_steps_per_epoch", "1", "--max_val_batches", "1",
            "--num_workers", "0", "--progress", "False", "--cuda", "False", "--base_channels", "8",
            "--checkpoint_dir", str(checkpoint_dir), "--exp_name", exp_name, *extra]


@pytest.fixture(scope="module")
def vimeo(tmp_path_factory):
    root = tmp_path_factory.mktemp("vimeo")
    write_vimeo(root, n_seqs=2)
    return root


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_shortcut_repeats_averages_pools_and_upsamples_to_the_layers_output_shape():
    x = torch.randn(2, 4, 3, 8, 12)
    wider = BinConv3d(4, 8, 3, (1, 2, 2), 1, shortcut=True)
    assert wider(x).shape == wider.shortcut(x).shape == (2, 8, 3, 4, 6)
    pooled = F.avg_pool3d(x, (1, 2, 2))
    assert torch.equal(wider.shortcut(x), torch.cat([pooled, pooled], dim=1))
    narrower = BinConv3d(4, 2, 3, 1, 1, shortcut=True)
    assert torch.allclose(narrower.shortcut(x), (x[:, :2] + x[:, 2:]) / 2)
    up = BinConvTranspose3d(4, 1, (3, 4, 4), (1, 2, 2), (1, 1, 1), shortcut=True)
    assert up(x).shape == up.shortcut(x).shape == (2, 1, 3, 16, 24)
    assert torch.allclose(up.shortcut(x)[:, :, :, ::2, ::2], x.mean(dim=1, keepdim=True))
    with pytest.raises(ValueError, match="divide"):
        ParameterFreeShortcut(4, 6)


@pytest.mark.parametrize("arch", ["binary", "flavr"])
@pytest.mark.parametrize("head", ["residual", "warp"])
def test_new_heads_start_at_the_blend_of_the_middle_frames(arch, head):
    model = build_model({"arch": arch, "base_channels": 8, "head": head, "n_outputs": 3}, log_summary=False).eval()
    inputs = [torch.rand(1, 3, 32, 48) for _ in range(4)]
    with torch.no_grad():
        outputs = model(inputs)
    for output, blend in zip(outputs, linear_blend(inputs, 3)):
        assert torch.allclose(output, blend, atol=1e-5)


def test_warp_head_moves_the_frame_by_its_flow():
    before, after = torch.rand(1, 3, 16, 24), torch.rand(1, 3, 16, 24)
    head = torch.zeros(1, 8, 16, 24)
    head[:, 0] = 1.0 / FLOW_SCALE  # sample `before` one pixel to the right
    head[:, 4] = 40.0              # mask ~1: all from `before`
    out = warp_blend(head, before, after, 0.5)
    assert torch.allclose(out[..., :-1], before[..., 1:], atol=1e-5)


def photo_scene():
    """scikit-image's ``chelsea`` photograph at half size, ``1 x 3 x 150 x 225`` in [0, 1]."""
    picture = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).float().unsqueeze(0) / 255
    return F.avg_pool2d(picture, 2)


def crop(scene, x, y, height=64, width=96):
    return scene[..., y:y + height, x:x + width]


def psnr(a, b):
    return (10 * torch.log10(1 / ((a - b) ** 2).mean())).item()


INNER = (..., slice(12, -12), slice(12, -12))  # away from the borders, where content leaves the frame


@pytest.mark.parametrize("find", [matching_flow, dis_flow, dis_fused_flow])
def test_matching_and_dis_flows_find_a_translation_of_the_scene(find):
    scene = photo_scene()
    before, middle, after = crop(scene, 40, 40), crop(scene, 43, 38), crop(scene, 46, 36)  # moves (-6, 4) px
    motion = find(before, after)  # before(p - v) = after(p + v): v = (-3, 2)
    assert abs(motion[INNER][:, 0].median().item() + 3) < 0.4
    assert abs(motion[INNER][:, 1].median().item() - 2) < 0.4
    matched = (backward_warp(before, -motion) + backward_warp(after, motion)) / 2
    assert psnr(matched[INNER], middle[INNER]) > psnr(((before + after) / 2)[INNER], middle[INNER]) + 10


def subpixel_frames(pool):
    """Before, middle and after: the full-size ``chelsea`` photograph moving 1 px per frame to the left,
    each ``avg_pool2d``-ed ``pool`` times to ``1 x 3 x 64 x 96``, so the middle is 1 / pool px from
    each: a half motion of ``(-1 / pool, 0)``."""
    full = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).float().unsqueeze(0) / 255
    return [F.avg_pool2d(full[..., 20:20 + 64 * pool, x:x + 96 * pool], pool) for x in (20, 21, 22)]


def warped_to_the_middle(before, after, half_motion, interpolation):
    return (backward_warp(before, -half_motion, interpolation) + backward_warp(after, half_motion, interpolation)) / 2


def test_bicubic_warping_keeps_the_detail_that_bilinear_resampling_blurs():
    before, middle, after = subpixel_frames(2)
    motion = torch.zeros(1, 2, 64, 96)
    motion[:, 0] = -0.5
    bilinear, bicubic = (psnr(warped_to_the_middle(before, after, motion, i)[INNER], middle[INNER])
                         for i in ("bilinear", "bicubic"))
    assert bicubic > bilinear + 1  # half a pixel: bilinear averages two neighbours, as blending would
    assert torch.allclose(backward_warp(before, torch.zeros_like(motion), "bicubic"), before, atol=1e-5)
    shifted = torch.zeros_like(motion)
    shifted[:, 0] = 1
    assert torch.allclose(backward_warp(before, shifted, "bicubic")[..., :-2], before[..., 1:-1], atol=1e-5)


def test_below_a_third_of_a_pixel_standing_still_restores_the_middle_better_than_warping():
    before, middle, after = subpixel_frames(4)  # a quarter of a pixel each way
    motion = torch.zeros(1, 2, 64, 96)
    motion[:, 0] = -0.25
    still = psnr(((before + after) / 2)[INNER], middle[INNER])
    for interpolation in ("bilinear", "bicubic"):
        assert still > psnr(warped_to_the_middle(before, after, motion, interpolation)[INNER], middle[INNER]) + 1
    assert torch.equal(still_motion(motion, 0.35), torch.zeros_like(motion))


def test_quadratic_shift_is_none_for_constant_velocity_and_an_eighth_of_a_constant_acceleration():
    def fields(u, a):  # x(s) = x0 + u s + a s^2 / 2 per component: half motion, flow to frame -1, flow from 1 to 2
        u, a = np.array(u, np.float32), np.array(a, np.float32)
        ones = np.ones((8, 12, 2), np.float32)
        return (u + a / 2) / 2 * ones, (a / 2 - u) * ones, (u + 1.5 * a) * ones
    assert np.array_equal(quadratic_shift(*fields([3.0, -1.5], [0.0, 0.0])), np.zeros((8, 12, 2), np.float32))
    shift = quadratic_shift(*fields([3.0, -1.5], [2.0, -0.4]))
    np.testing.assert_allclose(shift, np.broadcast_to(np.float32([0.25, -0.05]), (8, 12, 2)), atol=1e-6)


def accelerating_pan(positions=(0.0, 2.0, 6.0, 12.0), middle=3.75):
    """Views of a photograph at ``positions`` (x, px; 2 px per frame squared by default) and the view at ``middle``."""
    scene = F.interpolate(photo_scene(), scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)

    def view(x):
        flow = torch.zeros(1, 2, *scene.shape[-2:])
        flow[:, 0] = x
        return crop(backward_warp(scene, flow, "bicubic"), 40, 60)
    return [view(x) for x in positions], view(middle)


def test_a_new_quadratic_prior_model_restores_an_accelerating_pan_far_better_and_a_repeated_outer_frame_stays_linear():
    frames, truth = accelerating_pan()
    outputs = {}
    for prior in ("dis_fused_still", "dis_quadratic"):
        model = build_model({"arch": "binary", "base_channels": 8, "head": "warp", "motion_prior": prior,
                             "warp_interpolation": "bicubic"}, log_summary=False).eval()
        with torch.no_grad():
            outputs[prior] = model(frames)[0]
        if prior == "dis_quadratic":
            motion = model.prior_motion(frames)
            assert motion.shape == (1, 4, 64, 96)
            assert torch.equal(motion[:, :2], half_motion("dis_fused_still", frames[1], frames[2]))
            clamped = model.prior_motion([frames[1], frames[1], frames[2], frames[3]])  # a clip's first gap
            assert torch.equal(clamped[:, 2:], torch.zeros_like(clamped[:, 2:]))
            assert torch.equal(clamped[:, :2], motion[:, :2])
    linear, quadratic = (psnr(outputs[prior][INNER], truth[INNER]) for prior in ("dis_fused_still", "dis_quadratic"))
    assert quadratic > linear + 10


def test_minmod_takes_the_smaller_estimate_where_both_agree_in_sign_and_none_where_they_disagree():
    a, b = np.float32([[1.0, -2.0, 3.0, 0.5, 0.0, -1.0]]), np.float32([[2.0, -0.5, -1.0, 0.5, 4.0, -1.5]])
    assert np.array_equal(minmod(a, b), np.float32([[1.0, -0.5, 0.0, 0.5, 0.0, -1.0]]))
    half_motion, to_before, to_after = (np.full((4, 4, 2), value, np.float32) for value in (2.0, -3.0, 3.0))
    assert np.array_equal(quadratic_shift(half_motion, to_before, to_after), np.zeros((4, 4, 2), np.float32))  # +1, -1


def test_quadratic_shift_from_dis_finds_an_accelerating_pan_and_restores_its_middle_frame_better():
    """Views at x = 0, 2, 6, 12 (a pan of 2, then 4, then 6 px a frame: 2 px per frame squared): the middle time's
    view is at 3.75, a quarter pixel short of the middle frames' midpoint (the content moves the other way, so the
    flows' acceleration and the shift are negative)."""
    frames, truth = accelerating_pan()
    greys = grey_images(torch.cat(frames))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    to_before, to_after = (dis.calc(greys[a], greys[b], None) for a, b in ((1, 0), (2, 3)))
    motion = half_motion("dis_fused", frames[1], frames[2])
    shift = torch.from_numpy(quadratic_shift(motion[0].permute(1, 2, 0).numpy(), to_before, to_after))
    shift = shift.permute(2, 0, 1)[None]
    assert abs(float(shift[INNER][:, 0].median()) + 0.25) < 0.05 and float(shift[INNER][:, 1].abs().median()) < 0.05
    linear = 0.5 * (backward_warp(frames[1], -motion, "bicubic") + backward_warp(frames[2], motion, "bicubic"))
    quadratic = 0.5 * (backward_warp(frames[1], shift - motion, "bicubic") +
                       backward_warp(frames[2], shift + motion, "bicubic"))
    assert psnr(quadratic[INNER], truth[INNER]) > psnr(linear[INNER], truth[INNER]) + 10


def test_the_dead_zone_takes_small_motion_as_none_and_keeps_large_motion_whole():
    lengths = torch.tensor([0.0, 0.2, 0.35, 0.5, 0.7, 3.0])
    motion = torch.stack([0.6 * lengths, -0.8 * lengths]).view(1, 2, 1, 6)
    kept = torch.linalg.vector_norm(still_motion(motion, 0.35), dim=1).flatten()
    assert torch.allclose(kept, torch.tensor([0, 0, 0, 0.5 * 0.15 / 0.35, 0.7, 3.0]), atol=1e-6)  # 0.5 px: 3/7 kept
    assert torch.equal(still_motion(motion, 0.0), motion)
    scene = photo_scene()
    noise = torch.Generator().manual_seed(0)
    frames = [crop(scene, 40, 40) + 0.01 * torch.randn(1, 3, 64, 96, generator=noise) for _ in range(4)]
    config = {"arch": "binary", "base_channels": 8, "head": "warp", "motion_prior": "dis_fused",
              "warp_interpolation": "bicubic", "prior_dead_zone": 0.35}
    model = build_model(config, log_summary=False).eval()
    with torch.no_grad():  # a still scene with sensor noise: the prior's motion is noise, and ignored
        assert half_motion("dis_fused", frames[1], frames[2]).abs().max() > 0
        assert torch.allclose(model(frames)[0], (frames[1] + frames[2]) / 2, atol=1e-5)
    assert "bicubic warping" in describe_config(model.config) and "under 0.35 px" in describe_config(model.config)


def test_the_fused_dis_prior_takes_the_flow_that_aligns_the_frames_where_forward_and_backward_disagree():
    scene = photo_scene()
    before, after = crop(scene, 40, 40), crop(scene, 46, 36)  # before(p - v) = after(p + v): v = (-3, 2)
    grey = [cv2.cvtColor((frame[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
            for frame in (before, after)]
    truth = np.broadcast_to(np.float32([-3, 2]), (64, 96, 2))
    top = np.zeros((64, 96, 1), np.float32)
    top[:32] = 1
    forward = 2 * truth * top                            # F / 2 = v above, no motion below (a flow that lost it)
    backward = -2 * (truth * (1 - top) - 2 * truth * top)  # -G / 2 = v below, twice v the wrong way above
    mean = (forward - backward) / 4                      # dis_flow's prior: right nowhere
    fused = fuse_dis_flows(*grey, forward, backward)
    assert fused.shape == (64, 96, 2) and fused.dtype == np.float32
    for rows in (slice(12, 24), slice(40, 52)):  # away from the edge between the halves and the borders
        error = np.abs(fused[rows, 12:-12] - truth[rows, 12:-12])
        assert error.mean() < 0.01 and error.max() < 0.25  # soft where the scene is flat
        assert np.abs(mean[rows, 12:-12] - truth[rows, 12:-12]).min() >= 1
    flat = np.full((64, 96), 128, np.uint8)  # every motion aligns a flat scene: the two flows weigh the same
    assert np.allclose(fuse_dis_flows(flat, flat, forward, backward), mean, atol=1e-5)


def _box_cost(grey_a, grey_b, half):
    """fuse_dis_flows's cost of the half motion ``half`` (``H x W x 2`` px), written out: the 9x9 box mean of
    |a(p - h) - b(p + h)| (OpenCV's bilinear remap, borders replicated), intensities in [0, 1]."""
    grid = np.stack(np.meshgrid(np.arange(grey_a.shape[1]), np.arange(grey_a.shape[0])), axis=-1).astype(np.float32)
    a, b = (cv2.remap(grey.astype(np.float32) / 255, grid + sign * half, None, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE) for grey, sign in ((grey_a, -1), (grey_b, 1)))
    return cv2.blur(np.abs(a - b), (9, 9), borderType=cv2.BORDER_REPLICATE)


def test_the_still_candidate_weighs_no_motion_against_both_flows_by_the_softmin_of_their_costs_within_the_gate():
    rng = np.random.default_rng(0)
    grey_a, grey_b = (cv2.GaussianBlur(rng.integers(0, 256, (40, 56), dtype=np.uint8), (5, 5), 1.5) for _ in range(2))
    forward, backward = (rng.normal(0, 6, (40, 56, 2)).astype(np.float32) for _ in range(2))
    costs = np.stack([_box_cost(grey_a, grey_b, h) for h in (forward / 2, -backward / 2, np.zeros_like(forward))])
    weights = torch.softmax(torch.from_numpy(costs) / -MATCH_TEMPERATURE, dim=0).numpy()[..., None]
    longest = np.maximum(np.linalg.norm(forward, axis=-1), np.linalg.norm(backward, axis=-1))[..., None]
    three = weights[0] * forward / 2 - weights[1] * backward / 2         # no motion, the third, adds nothing
    two = (weights[0] * forward / 2 - weights[1] * backward / 2) / (weights[0] + weights[1])
    expected = np.where(longest <= STILL_GATE, three, two)                # beyond the gate: the two flows alone
    assert 0.2 < (longest <= STILL_GATE).mean() < 0.8
    fused = fuse_dis_flows(grey_a, grey_b, forward, backward, still_gate=STILL_GATE)
    np.testing.assert_allclose(fused, expected, atol=2e-4)
    np.testing.assert_allclose(fuse_dis_flows(grey_a, grey_b, forward, backward), two, atol=2e-4)
    assert 0.1 < (longest <= 6).mean() < 0.3
    assert np.array_equal(fuse_dis_flows(grey_a, grey_b, forward, backward, still_gate=6),
                          np.where(longest <= 6, fused, fuse_dis_flows(grey_a, grey_b, forward, backward)))


def test_the_still_candidate_keeps_its_softmin_weight_where_one_flow_aligns_far_better_than_the_other():
    stripes = np.tile(np.repeat(np.uint8([0, 255]), 2), (40, 14))      # a still scene, period 4 px
    forward = np.tile(np.float32([2, 0]), (40, 56, 1))                  # F / 2: half a period off, cost 1
    backward = np.tile(np.float32([-4, 0]), (40, 56, 1))                # -G / 2: a whole period, cost 0
    inside = (slice(8, -8), slice(8, -8))
    two = fuse_dis_flows(stripes, stripes, forward, backward)           # the margin is -1 / 0.01: a = 0
    np.testing.assert_allclose(two[inside], -backward[inside] / 2, atol=1e-6)
    three = fuse_dis_flows(stripes, stripes, forward, backward, still_gate=STILL_GATE)
    np.testing.assert_allclose(three[inside], -backward[inside] / 4, atol=1e-6)  # no motion costs 0 too: half


def test_the_still_prior_takes_a_still_scenes_small_drift_as_none_and_keeps_real_and_large_motion():
    scene = photo_scene()
    grey = [cv2.cvtColor((frame[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
            for frame in (crop(scene, 40, 40), crop(scene, 46, 36))]  # before(p - v) = after(p + v): v = (-3, 2)
    truth = np.broadcast_to(np.float32([-3, 2]), (64, 96, 2))           # |2v| = 7.2 px, within the gate
    inside = (slice(12, -12), slice(12, -12))
    moved = fuse_dis_flows(*grey, 2 * truth, -2 * truth, still_gate=STILL_GATE)
    error = np.abs(moved[inside] - truth[inside])                       # no motion aligns a textured scene worse,
    assert error.mean() < 0.01 and error.max() < 0.25                   # a flat patch about as well
    drift = np.tile(np.float32([1.5, -1.0]), (64, 96, 1))               # DIS's drift in a still scene: 0.9 px a half
    kept = np.linalg.norm(fuse_dis_flows(grey[0], grey[0], drift, -drift, still_gate=STILL_GATE)[inside], axis=-1)
    assert kept.mean() < 0.05 and kept.max() < 0.45                    # mostly none, a third at most where flat
    assert np.abs(fuse_dis_flows(grey[0], grey[0], drift, -drift)[inside] - drift[inside] / 2).max() < 1e-5
    far = 8 * drift                                                     # 14 px: beyond the gate, kept as found
    assert np.array_equal(fuse_dis_flows(grey[0], grey[0], far, -far, still_gate=STILL_GATE),
                          fuse_dis_flows(grey[0], grey[0], far, -far))


def test_the_dis_fused_prior_runs_the_fusion_in_the_model():
    scene = photo_scene()
    inputs = [crop(scene, 40 + 6 * k, 40 - 4 * k) for k in range(-1, 3)]
    model = build_model({"arch": "binary", "base_channels": 8, "head": "warp", "motion_prior": "dis_fused"},
                        log_summary=False)
    motion = model.prior_motion(inputs)
    assert torch.equal(motion, dis_fused_flow(inputs[1], inputs[2]))
    assert not torch.equal(motion, dis_flow(inputs[1], inputs[2]))  # DIS's two flows differ somewhere
    with pytest.raises(ValueError, match="finds no motion"):
        half_motion("none", inputs[1], inputs[2])


def test_the_host_prior_from_grey_images_made_once_per_frame_is_the_models_own():
    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(2)]
    tensors = [torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 for image in rgb]
    greys = [grey_images(tensor)[0] for tensor in tensors]
    for image, grey in zip(rgb, greys):  # 8-bit frames come back as they were, then OpenCV's grey
        np.testing.assert_array_equal(grey, cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    for prior, find in (("dis_fused", dis_fused_flow), ("dis_fused_still", dis_fused_still_flow), ("dis", dis_flow)):
        assert torch.equal(host_half_motion(prior, greys[:1], greys[1:]), find(*tensors))
    with pytest.raises(ValueError, match="not a host prior"):
        host_half_motion("matching", greys[:1], greys[1:])


def test_warping_first_done_under_inference_mode_still_trains_at_that_size_afterwards():
    image = torch.rand(1, 3, 24, 40)
    with torch.inference_mode():  # the packed engine's forward, e.g. a grid scoring a run before training the next
        backward_warp(image, torch.zeros(1, 2, 24, 40), "bicubic")
    flow = torch.zeros(1, 2, 24, 40, requires_grad=True)
    backward_warp(image, flow * 1.0, "bicubic").sum().backward()
    assert flow.grad is not None and torch.isfinite(flow.grad).all()


def test_the_dead_zone_measures_each_vector_by_its_length():
    motion = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    length = torch.linalg.vector_norm(motion, dim=1, keepdim=True)
    assert torch.allclose(still_motion(motion, 0.5), motion * ((length - 0.5) / 0.5).clamp(0, 1), atol=1e-6)


def test_reference_flows_point_from_the_real_middle_frame_to_each_input_where_its_content_is():
    scene = photo_scene()
    before, middle, after = crop(scene, 40, 40), crop(scene, 43, 38).clone(), crop(scene, 46, 36)
    middle[..., 20:36, 40:60] = torch.tensor([1.0, 0.0, 1.0]).view(1, 3, 1, 1)  # in neither input
    flows, holds = reference_flows(middle, before, after)
    assert flows.shape == (1, 4, 64, 96) and holds.shape == (1, 2, 64, 96)
    outside = holds.clone()
    outside[..., 14:42, 34:66] = 0  # the patch, with DIS's smoothing around it
    assert outside[INNER].mean() > 0.6 * outside[INNER].numel() / holds[INNER].numel()
    for k, (x, y) in enumerate([(3, -2), (-3, 2)]):  # middle(p) = before(p + (3, -2)) = after(p - (3, -2))
        held = outside[:, k:k + 1].expand(1, 2, 64, 96)[INNER] > 0
        assert (flows[:, 2 * k:2 * k + 2][INNER][held].view(2, -1).median(dim=1).values
                - torch.tensor([x, y])).abs().max() < 0.4
    assert holds[..., 24:32, 46:54].sum() == 0  # the patch matches nothing: never supervised


def test_flow_supervision_loss_is_the_pixel_distance_where_the_reference_holds():
    reference = torch.randn(2, 4, 8, 12) * 5
    holds = torch.ones(2, 2, 8, 12)
    holds[:, 1, :4] = 0
    assert flow_supervision_loss([reference], [reference], [holds]).item() < 2e-3
    off = reference + 1.0
    off[:, 2:4, :4] += 100.0  # wrong only where the reference does not hold
    assert flow_supervision_loss([off], [reference], [holds]).item() == pytest.approx(1.0, abs=2e-3)
    assert flow_supervision_loss([off], [reference], [torch.zeros_like(holds)]).item() == 0


@pytest.mark.parametrize("arch", ["binary", "flavr"])
def test_the_model_returns_the_flows_it_warped_with(arch):
    scene = photo_scene()
    inputs = [crop(scene, 40 + 6 * k, 40 - 4 * k) for k in range(-1, 3)]
    model = build_model({"arch": arch, "base_channels": 8, "head": "warp", "motion_prior": "dis", "n_outputs": 3,
                         "network_scale": 2}, log_summary=False).eval()
    with torch.no_grad():
        outputs, flows = model(inputs, with_flows=True)
        assert all(torch.equal(a, b) for a, b in zip(outputs, model(inputs)))
    motion = dis_flow(inputs[1], inputs[2])
    for flow, t in zip(flows, output_times(3)):  # a new model: its head adds nothing to the prior's flows
        assert torch.allclose(flow, prior_flows(motion, t), atol=1e-5)
    frames_head = build_model({"arch": arch, "base_channels": 8, "head": "frames"}, log_summary=False)
    with pytest.raises(ValueError, match="no flows"):
        frames_head(inputs, with_flows=True)


@pytest.mark.parametrize("context", ["0", "8"])  # with --prior_context the workers compute the inner crop's references
def test_flow_supervision_trains_the_warp_head_and_is_recorded(vimeo, tmp_path, capsys, context):
    options = ("--head", "warp", "--motion_prior", "dis", "--flow_supervision", "dis", "--flow_weight", "0.1",
               "--prior_context", context)
    assert main(tiny(vimeo, tmp_path, "flow", "--max_epoch", "1", *options)) == 0
    events = EventAccumulator(str(tmp_path / "flow" / "tensorboard"))
    events.Reload()
    assert "train/flow" in events.Tags()["scalars"] and events.Scalars("train/flow")[0].value > 0
    saved = load(tmp_path / "flow" / "checkpoint.pth")
    assert saved["args"]["flow_supervision"] == "dis" and saved["args"]["flow_weight"] == 0.1
    capsys.readouterr()
    assert main(tiny(vimeo, tmp_path, "frames", "--head", "frames", "--flow_supervision", "dis")) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--head warp" in error
    assert not (tmp_path / "frames").exists()


def test_bench_motion_prior_scores_each_candidate_alone_on_a_real_video_file(tmp_path):
    scene = (photo_scene()[0].permute(1, 2, 0).numpy() * 255).astype("uint8")[..., ::-1]  # BGR for OpenCV
    path = str(tmp_path / "pan.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (96, 64))
    for k in range(13):  # the scene pans 3 px a frame
        writer.write(np.ascontiguousarray(scene[40:104, 40 + 3 * k:136 + 3 * k]))
    writer.release()
    (tmp_path / "runs" / "fused").mkdir(parents=True)
    new_model = write_random_checkpoint(tmp_path / "runs" / "fused" / "checkpoint.pth", arch="binary", base_channels=8,
                                        head="warp", motion_prior="dis_fused", network_scale=4)  # starts at its prior
    command = [sys.executable, os.path.join(REPO, "benchmarks", "bench_motion_prior.py"), "--videos", path,
               "--frames", "13", "--threads", "1", "--candidates", "average", "matching", "dis", "dis_fused",
               "demo_still", "demo_quadratic", "dis_consistency", "dis_forward", "dis_gd50", "dis_reference"]
    done = subprocess.run(command + ["--models", new_model], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {line.split()[2]: [float(v) for v in line.split()[3:]] for line in done.stdout.splitlines()
            if line.startswith("pan.mp4")}
    candidates = ("matching", "dis", "dis_fused", "demo_still", "demo_quadratic", "dis_consistency", "dis_forward",
                  "dis_gd50", "dis_reference", "fused")
    assert set(rows) == {"average", *candidates} and "(4 gaps)" in done.stdout
    assert all(rows[name][0] > rows["average"][0] + 3 for name in candidates)
    assert abs(rows["fused"][0] - rows["dis_fused"][0]) < 0.05  # a new model outputs its prior's blend
    assert abs(rows["demo_quadratic"][0] - rows["demo_still"][0]) < 0.1  # a steady pan: no acceleration to find
    missing = subprocess.run(command + ["--models", str(tmp_path / "none.pth")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "none.pth" in missing.stderr.strip().splitlines()[-1]
    twice = subprocess.run(command + ["--models", new_model, new_model], capture_output=True, text=True, timeout=120)
    assert twice.returncode == 2 and "named fused" in twice.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("arch, prior", [("binary", "matching"), ("flavr", "matching"), ("binary", "aligned"),
                                         ("binary", "dis"), ("binary", "dis_aligned"), ("binary", "dis_fused"),
                                         ("binary", "dis_fused_still"), ("binary", "dis_quadratic")])
def test_a_new_motion_prior_model_starts_at_the_matched_blend(arch, prior):
    scene = photo_scene()
    inputs = [crop(scene, 40 + 6 * k, 40 - 4 * k) for k in range(-1, 3)]  # 4 frames, steady motion
    config = {"arch": arch, "base_channels": 8, "head": "warp", "motion_prior": prior, "n_outputs": 3}
    model = build_model(config, log_summary=False).eval()
    with torch.no_grad():
        outputs = model(inputs)
    for k, (output, blend) in enumerate(zip(outputs, linear_blend(inputs, 3)), start=1):
        shift = torch.tensor([6 * k / 4, -4 * k / 4]).view(1, 2, 1, 1).expand(1, 2, 64, 96)
        truth = backward_warp(inputs[1], shift)
        assert psnr(output[INNER], truth[INNER]) > psnr(blend[INNER], truth[INNER]) + 10


def test_the_motion_prior_needs_the_warp_head(vimeo, tmp_path, capsys):
    with pytest.raises(ValueError, match="head='warp'"):
        build_model(model_config(arch="binary", base_channels=8, head="frames", motion_prior="matching"))
    assert main(tiny(vimeo, tmp_path, "mp", "--head", "residual", "--motion_prior", "matching")) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--head warp" in error
    assert not (tmp_path / "mp").exists()


def test_binary_runs_default_to_the_matching_prior_only_with_the_warp_head(vimeo, tmp_path):
    assert main(tiny(vimeo, tmp_path, "default", "--max_epoch", "1")) == 0
    assert main(tiny(vimeo, tmp_path, "frames", "--max_epoch", "1", "--head", "frames")) == 0
    assert load(tmp_path / "default/checkpoint.pth")["config"]["motion_prior"] == "matching"
    assert load(tmp_path / "frames/checkpoint.pth")["config"]["motion_prior"] == "none"


def test_the_aligned_prior_shows_the_network_the_middle_frames_warped_by_the_matched_flows():
    scene = photo_scene()
    inputs = [crop(scene, 40 + 6 * k, 40 - 4 * k) for k in range(-1, 3)]
    model = build_model({"base_channels": 8, "head": "warp", "motion_prior": "aligned"}, log_summary=False)
    motion = model.prior_motion(inputs)
    seen = model.network_input(inputs, motion)
    assert torch.equal(seen[:, :, 0], inputs[0]) and torch.equal(seen[:, :, 3], inputs[3])
    before, after = seen[:, :, 1], seen[:, :, 2]  # both now show the scene at the middle time
    assert psnr(before[INNER], after[INNER]) > psnr(inputs[1][INNER], inputs[2][INNER]) + 10


@pytest.mark.parametrize("arch", ["binary", "flavr"])
def test_network_scale_runs_the_unet_on_downscaled_frames_and_starts_where_a_full_scale_model_does(arch):
    scene = photo_scene()
    inputs = [crop(scene, 40 + 6 * k, 40 - 4 * k) for k in range(-1, 3)]  # 64 x 96
    config = {"arch": arch, "base_channels": 8, "head": "warp", "motion_prior": "dis", "n_outputs": 3}
    full = build_model(config, log_summary=False).eval()
    half = build_model({**config, "network_scale": 2}, log_summary=False).eval()
    seen = []
    half.encoder.stem.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    with torch.no_grad():
        for a, b in zip(full(inputs), half(inputs)):
            assert b.shape == a.shape == (1, 3, 64, 96) and torch.allclose(a, b, atol=1e-6)
    assert seen == [(1, 3, 4, 32, 48)]
    assert "network at 1/2 scale" in describe_config(half.config)


def test_network_scale_upsamples_the_head_and_rescales_its_flows_to_full_resolution_pixels():
    model = build_model({"base_channels": 8, "head": "warp", "network_scale": 2, "n_outputs": 3}, log_summary=False)
    assert model.network_size(64, 96) == (32, 48) and model.network_size(72, 96) == (32, 48)
    frames = [torch.rand(1, 3, 72, 96) for _ in range(4)]
    head = torch.ones(1, 24, 32, 48)
    out = model.full_resolution(head, frames)
    gains = torch.tensor([96 / 48, 72 / 32, 96 / 48, 72 / 32, 1, 1, 1, 1]).repeat(3)
    assert out.shape == (1, 24, 72, 96) and torch.allclose(out, gains.view(1, -1, 1, 1).expand_as(out))
    with pytest.raises(ValueError, match="network_scale"):
        build_model({"head": "frames", "network_scale": 2}, log_summary=False)


def test_a_frames_head_with_a_network_scale_is_refused_in_one_line(vimeo, tmp_path, capsys):
    assert main(tiny(vimeo, tmp_path, "ns", "--head", "frames", "--network_scale", "2")) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--network_scale 2" in error and "--head warp" in error


def test_a_prior_found_with_context_restores_a_small_crop_better_and_the_packed_model_takes_it_too():
    scene = photo_scene()
    inputs = [crop(scene, 60 + 10 * k, 50 - 6 * k) for k in range(-1, 3)]  # 20 px between the middle frames
    truth = crop(scene, 65, 47)
    inner, targets, motion = inside_prior_context(inputs, [truth], 16)
    assert [x.shape[-2:] for x in inner + targets] == [(32, 64)] * 5 and motion.shape == (1, 2, 32, 64)
    assert torch.equal(inner[1], inputs[1][..., 16:-16, 16:-16]) and torch.equal(targets[0], truth[..., 16:-16, 16:-16])
    given = half_motion("matching", inputs[1], inputs[2])  # the whole crop's, as a loader's workers compute it
    assert torch.equal(inside_prior_context(inputs, [truth], 16, motion=given)[2], motion)
    torch.manual_seed(3)
    model = build_model({"arch": "binary", "base_channels": 8, "head": "warp", "motion_prior": "matching"},
                        log_summary=False).eval()  # a new model: the matched blend
    with torch.no_grad():
        with_context, alone = model(inner, motion=motion)[0], model(inner)[0]
    assert psnr(with_context, targets[0]) > psnr(alone, targets[0]) + 3  # the crop's own borders lose the match
    model.binop = BinOp(model)
    model.binop.binarization()
    packed = pack_binary_model(model)
    with torch.inference_mode():
        assert (packed(inner, motion=motion)[0] - model(inner, motion=motion)[0]).abs().max() <= 1e-4


def test_pretrained_copies_everything_but_the_head_between_heads(tmp_path):
    path = write_random_checkpoint(tmp_path / "flavr.pth", arch="flavr", base_channels=8)
    binary = build_model(model_config(arch="binary", base_channels=8, head="warp"), log_summary=False)
    checkpoint = read_checkpoint(path)
    report = initialise_from_pretrained(binary, state_dict_of(checkpoint, path), path, checkpoint["config"])
    assert {"outconv.1.weight", "outconv.1.bias"} <= set(report.missing)
    assert not binary.outconv[1].weight.any() and "encoder.stem.0.weight" in report.copied
    warp = write_random_checkpoint(tmp_path / "warp.pth", arch="binary", base_channels=8, head="warp")
    matched = build_model(model_config(arch="binary", base_channels=8, head="warp", motion_prior="matching"),
                          log_summary=False)
    checkpoint = read_checkpoint(warp)  # flows of a model without the prior are not corrections to it
    report = initialise_from_pretrained(matched, state_dict_of(checkpoint, warp), warp, checkpoint["config"])
    assert {"outconv.1.weight", "outconv.1.bias"} <= set(report.missing)


def test_weight_decay_never_touches_latent_binary_weights():
    model = build_model(model_config(arch="binary", base_channels=8), log_summary=False)
    args = type("Args", (), {"lr": 1e-3, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.01, "binary_lr_scale": 1})()
    decayed, others = make_optimizer(model, args).param_groups
    binary = {id(m.weight) for m in model.modules() if isinstance(m, (BinConv3d, BinConvTranspose3d))}
    assert decayed["weight_decay"] == 0.01 and others["weight_decay"] == 0.0
    assert binary and not binary & {id(p) for p in decayed["params"]}
    assert id(model.encoder.stem[0].weight) in {id(p) for p in decayed["params"]}


def test_binary_lr_scale_sets_the_latent_binary_weights_rate_and_resumes_with_it(vimeo, tmp_path):
    model = build_model(model_config(arch="binary", base_channels=8), log_summary=False)
    args = type("Args", (), {"lr": 1e-3, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0, "binary_lr_scale": 0.1})()
    binary_group, others = make_optimizer(model, args).param_groups
    binary = {id(m.weight) for m in model.modules() if isinstance(m, (BinConv3d, BinConvTranspose3d))}
    assert {id(p) for p in binary_group["params"]} == binary
    assert binary_group["lr"] == pytest.approx(1e-4) and others["lr"] == 1e-3
    args.binary_lr_scale = 1  # the default keeps FLAVR's single Adam group (old checkpoints resume)
    assert len(make_optimizer(model, args).param_groups) == 1

    options = ["--binary_lr_scale", "0.1", "--lr", "1e-3", "--lr_schedule", "linear", "--lr_decay_steps", "4"]
    assert main(tiny(vimeo, tmp_path, "scaled", "--max_epoch", "1", *options)) == 0
    assert main(tiny(vimeo, tmp_path, "scaled", "--max_epoch", "2", "--resume", *options)) == 0
    groups = load(tmp_path / "scaled" / "checkpoint.pth")["optimizer"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.5e-4, 0.5e-3])  # 2 of 4 steps along the decay
    assert main(tiny(vimeo, tmp_path, "fp_scaled", "--arch", "flavr", "--binary_lr_scale", "0.1")) == 2


def test_distillation_and_two_stages_train_and_are_recorded(vimeo, tmp_path, caplog):
    teacher = write_random_checkpoint(tmp_path / "teacher.pth", arch="flavr", base_channels=8)
    with caplog.at_level("INFO"):
        code = main(tiny(vimeo, tmp_path, "kd", "--max_epoch", "2", "--teacher", teacher, "--distill_weight", "0.5",
                         "--stage1_epochs", "1"))
    assert code == 0 and "distilling from" in caplog.text
    events = EventAccumulator(str(tmp_path / "kd" / "tensorboard"))
    events.Reload()
    assert "train/distill" in events.Tags()["scalars"]
    assert load(tmp_path / "kd" / "model_best.pth")["epoch"] == 2  # stage 1 (real weights) is never kept
    wrong = write_random_checkpoint(tmp_path / "teacher4x.pth", arch="flavr", base_channels=8, n_outputs=3)
    assert main(tiny(vimeo, tmp_path, "kd4x", "--teacher", wrong)) == 2


@pytest.mark.parametrize("student, teacher, shared", [("dis", "dis_aligned", True), ("dis_fused", "dis", False),
                                                      ("dis_fused", "dis_fused", True), ("dis_fused_still", "dis_fused", False),
                                                      ("dis_fused_still", "dis_fused_still", True), ("matching", "aligned", True),
                                                      ("dis_quadratic", "dis_fused_still", False),
                                                      ("dis_quadratic", "dis_quadratic", True),
                                                      ("matching", "dis", False), ("dis", "none", False)])
def test_a_teacher_is_handed_the_students_motion_only_when_its_prior_finds_the_same_half_motion(student, teacher, shared):
    trainer = Trainer.__new__(Trainer)
    trainer.args = type("Args", (), {"motion_prior": student})()
    trainer.teacher = type("Teacher", (), {"motion_prior": teacher})()
    assert trainer._teacher_shares_prior() is shared


def test_soft_sign_epochs_harden_the_weights_and_only_the_binary_epochs_are_kept(vimeo, tmp_path, caplog):
    args = type("Args", (), {"stage1_epochs": 1, "soft_sign_epochs": 2})()
    trainer = Trainer.__new__(Trainer)
    trainer.args = args
    sharpness = [trainer.soft_sign_sharpness(epoch, step, 4) for epoch in (1, 2, 3, 4) for step in (1, 2, 3, 4)]
    assert sharpness[:4] == [None] * 4 and sharpness[-4:] == [None] * 4  # real weights, then hard signs
    soft = sharpness[4:12]
    assert all(a < b for a, b in zip(soft, soft[1:])) and soft[-1] == pytest.approx(SOFT_SIGN_SHARPNESS[1])
    assert [trainer.final_stage(epoch) for epoch in (1, 2, 3, 4)] == [False, False, False, True]

    def options(**given):
        return type("Args", (), {"arch": "binary", "max_epoch": 6, "stage1_epochs": 0, "soft_sign_epochs": None,
                                 **given})()
    assert soft_sign_epochs(options()) == 5  # new binary runs: 5/6 of the epochs
    assert soft_sign_epochs(options(stage1_epochs=2)) == 3 and soft_sign_epochs(options(arch="flavr")) == 0
    assert soft_sign_epochs(options(soft_sign_epochs=1)) == 1
    assert soft_sign_epochs(options(max_epoch=12), {"soft_sign_epochs": 5}) == 5  # a resumed run keeps its own
    assert soft_sign_epochs(options(max_epoch=12), {}) == 0  # runs from before the option trained hard signs

    with caplog.at_level("INFO"):
        assert main(tiny(vimeo, tmp_path, "soft", "--max_epoch", "2", "--soft_sign_epochs", "1")) == 0
    assert "epoch 1: soft signs" in caplog.text and "epoch 2: binary weights" in caplog.text
    assert load(tmp_path / "soft" / "model_best.pth")["epoch"] == 2  # the soft-sign epoch is never kept
    assert main(tiny(vimeo, tmp_path, "too_soft", "--max_epoch", "2", "--soft_sign_epochs", "2")) == 2
    assert main(tiny(vimeo, tmp_path, "fp_soft", "--arch", "flavr", "--max_epoch", "2",
                     "--soft_sign_epochs", "1")) == 2


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_per_step_schedules_decay_to_zero_and_resume_exactly(vimeo, tmp_path, schedule):
    options = ["--lr_schedule", schedule, "--lr", "1e-3", "--lr_decay_steps", "2",  # one step per epoch
               "--soft_sign_epochs", "0"]  # the run is extended: fix the (by default --max_epoch-long) phases
    assert main(tiny(vimeo, tmp_path, "whole", "--max_epoch", "2", *options)) == 0
    assert main(tiny(vimeo, tmp_path, "split", "--max_epoch", "1", *options)) == 0
    assert main(tiny(vimeo, tmp_path, "split", "--max_epoch", "2", "--resume", *options)) == 0
    whole, split = load(tmp_path / "whole/checkpoint.pth"), load(tmp_path / "split/checkpoint.pth")
    for key, value in whole["state_dict"].items():
        assert torch.equal(split["state_dict"][key], value), key
    assert whole["scheduler"]["last_epoch"] == 2 and math.isclose(whole["scheduler"]["_last_lr"][0], 0.0, abs_tol=1e-12)


def test_diverging_recipe_model_stops_with_exit_code_3_and_no_best_model(vimeo, tmp_path, capsys):
    assert main(tiny(vimeo, tmp_path, "diverge", "--max_epoch", "2", "--lr", "1e30")) == 3
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert ("nan" in error or "inf" in error) and "checkpoint" in error
    assert not (tmp_path / "diverge/model_best.pth").exists()


def test_the_weight_schedule_says_which_weights_each_epoch_trains():
    schedule = WeightSchedule(real_epochs=1, soft_epochs=2)
    assert [schedule.binarizes(epoch) for epoch in (1, 2, 3, 4)] == [False, True, True, True]
    assert [schedule.final_stage(epoch) for epoch in (1, 2, 3, 4)] == [False, False, False, True]
    assert schedule.sharpness(2, 0, 4) == pytest.approx(SOFT_SIGN_SHARPNESS[0])
    assert schedule.describe(6) == ("epoch 1: real weights; epochs 2-3: soft signs alpha*tanh(kW/alpha), k 1 -> 100; "
                                    "epochs 4-6: binary weights (only these count for model_best.pth)")
    assert WeightSchedule().describe(6) == "binary weights from the first step"

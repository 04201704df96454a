"""The warp head's frame synthesis and the parameter-free matching motion prior (``UNet3D``'s
``head="warp"`` and ``motion_prior``; docs/MODEL.md).

``warp_blend`` turns the head's 8 channels per output frame into a frame:
``m * warp(I_a, f_a) + (1 - m) * warp(I_b, f_b) + r`` with backward warping (``backward_warp``), bilinear
or bicubic (``WARP_INTERPOLATIONS``: bicubic keeps the detail that bilinear resampling at fractional
offsets blurs away).
``matching_flow`` finds half the motion between the two middle frames by symmetric block matching
over an image pyramid (``MATCH_LEVELS``, a 3x3 search per level, softmin for sub-pixel shifts); the
model adds it to the head's flows (``prior_flows``), so a new model starts at motion-compensated
blending. Everything here is batched tensor code, the same on the CPU, a GPU and in the packed engine,
except ``dis_flow`` (``motion_prior="dis"``): OpenCV's DIS optical flow, run on the CPU (frames on a
GPU are copied there and back; training's data workers and interpolate.py's sliding window compute it
beforehand, ``HOST_PRIORS``), the same function in training, test.py and the packed engine, and
``dis_fused_flow`` (``"dis_fused"``), which takes per pixel DIS's forward or backward half motion,
whichever aligns the frames (``fuse_dis_flows``), and ``"dis_fused_still"``, which also offers no motion
where both flows are short (``STILL_GATE``), whichever of the three aligns best. ``"dis_quadratic"`` adds to it
where quadratic motion through the outer inputs puts each point at the middle time (``quadratic_shift``, from DIS
flows to the outer frames; ``quadratic_motion``), so its motion is ``B x 4 x H x W``; ``find_motion`` finds any
prior's motion from a model's input frames.
``still_motion`` takes a prior's half motion below a few tenths of a pixel as none (``prior_dead_zone``):
such motion is mostly the flow's noise in flat or unchanged regions, where warping only resamples.
``reference_flows`` is DIS flow from the real middle frame, what ``--flow_supervision dis`` teaches the
head's flows (``warp_flows``) in training.
"""
import functools
import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

FLOW_SCALE = 8.0  # pixels of flow per unit of the warp head's output: flows of a few pixels need only small weights


def output_times(n_outputs):
    """Times of the output frames between the middle inputs (0 and 1): k / (n_outputs + 1)."""
    return [k / (n_outputs + 1) for k in range(1, n_outputs + 1)]


def backward_warp(image, flow, interpolation="bilinear"):
    """``image`` (``B x C x H x W``) sampled at each pixel plus ``flow`` (``B x 2 x H x W``, x then y, in
    pixels), borders replicated; ``interpolation``: "bilinear" or "bicubic" (``WARP_INTERPOLATIONS``;
    bicubic may overshoot [0, 1] slightly at edges, as any output is clamped when saved)."""
    pixels, scale = _sampling_grid(*image.shape[-2:], image.dtype, image.device)
    grid = (flow.permute(0, 2, 3, 1) + pixels).mul_(scale).sub_(1.0)  # (p + flow) in grid_sample's [-1, 1]
    return F.grid_sample(image, grid, mode=interpolation, padding_mode="border", align_corners=True)


@functools.lru_cache(maxsize=8)
def _sampling_grid(height, width, dtype, device):
    """``backward_warp``'s constants for a size: each pixel's (x, y) (``1 x H x W x 2``) and the scale of x and
    y to ``grid_sample``'s [-1, 1] (``2``), made once (10x faster than building the grid per axis and stacking);
    ordinary tensors even when first asked for under ``torch.inference_mode`` (the packed engine's), so that
    training in the same process can save them for backward."""
    with torch.inference_mode(False):
        ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype, device=device),
                                torch.arange(width, dtype=dtype, device=device), indexing="ij")
        scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=dtype, device=device)
        return torch.stack([xs, ys], dim=-1)[None], scale


def warp_flows(head, prior=None):
    """The flows (``B x 4 x H x W`` pixels: to the frame before, then to the frame after) that the warp
    head's 8 channels ``head`` (``B x 8 x H x W``) and the ``prior``'s flows (optional) warp with."""
    flows = head[:, 0:4] * FLOW_SCALE
    return flows if prior is None else flows + prior


def warp_blend(head, before, after, t, prior=None, interpolation="bilinear", both=None):
    """The ``warp`` head's frame at time ``t`` from its 8 channels ``head`` (``B x 8 x H x W``: flow to
    ``before`` and to ``after`` in units of ``FLOW_SCALE`` pixels, mask logit, correction) and the
    middle frames ``B x 3 x H x W``. ``prior`` (``B x 4 x H x W`` pixels, optional) is added to the
    flows; ``interpolation``: ``backward_warp``'s; ``both``: ``torch.cat([before, after])`` when the caller
    has it (one per forward, not one per output frame)."""
    mask = torch.sigmoid(head[:, 4:5] + math.log((1 - t) / t))
    flows = warp_flows(head, prior)
    batch = before.shape[0]  # both frames in one grid_sample (the same values, 20% less time for bicubic on a CPU)
    both = torch.cat([before, after]) if both is None else both
    warped = backward_warp(both, torch.cat([flows[:, 0:2], flows[:, 2:4]]), interpolation)
    return torch.lerp(warped[batch:], warped[:batch], mask.to(warped.dtype)) + head[:, 5:8]  # m * before + (1 - m) * after


WARP_INTERPOLATIONS = ("bilinear", "bicubic")  # backward_warp's resampling of the warp head's frames
MOTION_PRIORS = ("none", "matching", "aligned", "dis", "dis_aligned", "dis_fused", "dis_fused_still", "dis_quadratic")
ALIGNED_PRIORS = ("aligned", "dis_aligned")  # priors whose network sees the middle frames warped to the middle time
HOST_PRIORS = ("dis", "dis_aligned", "dis_fused", "dis_fused_still", "dis_quadratic")  # by OpenCV on the host
QUADRATIC_PRIORS = ("dis_quadratic",)  # priors of quadratic motion, from the outer inputs too: B x 4 x H x W motion
HALF_MOTION_OF = {"matching": "matching", "aligned": "matching", "dis": "dis", "dis_aligned": "dis",
                  "dis_fused": "dis_fused", "dis_fused_still": "dis_fused_still",
                  "dis_quadratic": "dis_fused_still"}  # the half motion each prior finds
MATCH_LEVELS = (16, 8, 4, 2, 1)  # pyramid scales of matching_flow, coarse to fine
MATCH_RADIUS = 1                 # integer shifts searched per level: [-1, 1]^2 (up to +-31 px in all)
MATCH_WINDOW = 9                 # side of the box over which absolute differences are averaged
MATCH_TEMPERATURE = 0.01         # softmin temperature on mean absolute differences (intensities in [0, 1])


def _shifted(image, dx, dy):
    """``image`` (``B x C x h x w``) sampled at each pixel plus the integer shift (dx, dy), borders replicated."""
    r = max(abs(dx), abs(dy))
    if r == 0:
        return image
    height, width = image.shape[-2:]
    padded = F.pad(image, (r, r, r, r), mode="replicate")
    return padded[..., r + dy:r + dy + height, r + dx:r + dx + width]


def symmetric_matching(a, b, radius=MATCH_RADIUS, window=MATCH_WINDOW, temperature=MATCH_TEMPERATURE):
    """Sub-pixel shift ``k`` (``B x 2 x h x w``, x then y, pixels) at which ``a(p - k)`` matches ``b(p + k)``
    for ``a``, ``b`` ``B x 1 x h x w``: the softmin-weighted mean of the integer shifts in
    ``[-radius, radius]^2``, each scored by its absolute difference averaged over a ``window`` box."""
    shifts = [(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    costs = torch.cat([(_shifted(a, -dx, -dy) - _shifted(b, dx, dy)).abs() for dx, dy in shifts], dim=1)
    half = window // 2
    costs = F.pad(costs, (half, half, half, half), mode="replicate")
    costs = F.avg_pool2d(F.avg_pool2d(costs, (1, window), stride=1), (window, 1), stride=1)  # box, separably
    weights = torch.softmax(costs / -temperature, dim=1)
    steps = torch.arange(-radius, radius + 1, dtype=a.dtype, device=a.device)  # made on the device: no upload
    offsets = torch.stack([steps.repeat(len(steps)), steps.repeat_interleave(len(steps))]).reshape(1, 2, -1, 1, 1)
    return (weights.unsqueeze(1) * offsets).sum(dim=2)


@torch.no_grad()
def matching_flow(before, after, levels=MATCH_LEVELS):
    """The motion prior: half the motion ``v`` (``B x 2 x H x W``, pixels) from ``before`` to ``after``
    (``B x 3 x H x W`` in [0, 1]), found by ``symmetric_matching`` of their grey levels at each scale of
    ``levels`` (coarse to fine, each refining the warped result of the coarser one), so
    ``before(p - v)`` and ``after(p + v)`` show the same point at the middle time. Parameter-free."""
    grey_a, grey_b = before.float().mean(1, keepdim=True), after.float().mean(1, keepdim=True)
    height, width = grey_a.shape[-2:]
    flow = None  # full-resolution pixels
    for scale in levels:
        if height // scale < 2 or width // scale < 2:
            continue
        a = F.avg_pool2d(grey_a, scale) if scale > 1 else grey_a
        b = F.avg_pool2d(grey_b, scale) if scale > 1 else grey_b
        if flow is None:
            level_flow = a.new_zeros(a.shape[0], 2, *a.shape[-2:])
        else:
            level_flow = F.interpolate(flow, size=a.shape[-2:], mode="bilinear", align_corners=False) / scale
            a, b = backward_warp(a, -level_flow), backward_warp(b, level_flow)
        flow = (level_flow + symmetric_matching(a, b)) * scale
    return flow.to(before.dtype)


DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM  # dis_flow's OpenCV preset (benchmarks/bench_motion_prior.py)


def grey_images(frames):
    """``B x 3 x H x W`` in [0, 1] -> B OpenCV grey images (``H x W`` uint8), what the host priors see
    (8-bit frames, e.g. ``rgb_to_tensor``'s, come back as they were before the grey conversion)."""
    levels = frames.detach().float().mul(255).clamp_(0, 255).round_().to(torch.uint8)
    rgb = levels.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in rgb]


def _mean_half_motion(grey_a, grey_b, forward, backward):
    """``dis_flow``'s half motion ``(F - G) / 4`` (``H x W x 2`` float32 px) from DIS's two flows."""
    return (forward - backward) / 4


def host_half_motion(prior, greys_before, greys_after):
    """The half motion (``B x 2 x H x W`` float32 px, on the CPU) that host prior ``prior`` (``HOST_PRIORS``)
    finds between the grey middle frames (``grey_images``: B of each): OpenCV's DIS optical flow
    (``DIS_PRESET``) forward ``F`` (from ``before``) and backward ``G`` (from ``after``) of each pair, then
    ``(F - G) / 4`` ("dis", "dis_aligned") or ``fuse_dis_flows`` ("dis_fused"; "dis_fused_still": with the
    ``STILL_GATE``)."""
    if prior not in HOST_PRIORS or prior in QUADRATIC_PRIORS:
        raise ValueError(f"{prior!r} is not a host prior of the middle frames alone "
                         f"({', '.join(p for p in HOST_PRIORS if p not in QUADRATIC_PRIORS)}): see quadratic_motion")
    combine = {"dis": _mean_half_motion, "dis_fused": fuse_dis_flows,
               "dis_fused_still": functools.partial(fuse_dis_flows, still_gate=STILL_GATE)}[HALF_MOTION_OF[prior]]
    dis = cv2.DISOpticalFlow_create(DIS_PRESET)
    halves = [torch.from_numpy(combine(grey_a, grey_b, dis.calc(grey_a, grey_b, None), dis.calc(grey_b, grey_a, None)))
              for grey_a, grey_b in zip(greys_before, greys_after)]
    return torch.stack(halves).permute(0, 3, 1, 2).contiguous()


def _on_host(prior, before, after):
    """``host_half_motion`` of the middle frames ``B x 3 x H x W``, on their device and in their dtype."""
    return host_half_motion(prior, grey_images(before), grey_images(after)).to(device=before.device, dtype=before.dtype)


@torch.no_grad()
def dis_flow(before, after):
    """The DIS motion prior: half the motion ``v`` (``B x 2 x H x W``, pixels; as ``matching_flow``) from
    OpenCV's DIS optical flow (``DIS_PRESET``) of the 8-bit grey frames, forward ``F`` (from ``before``)
    and backward ``G`` (from ``after``): ``v = (F - G) / 4``, so that the flows to the middle time are
    the ones Super SloMo approximates from ``F`` and ``G`` (-v to ``before``, +v to ``after``)."""
    return _on_host("dis", before, after)


@functools.lru_cache(maxsize=8)
def _pixel_grid(height, width):
    """The (x, y) coordinates of each pixel, ``height x width x 2`` float32, read-only."""
    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)), axis=-1)
    grid.setflags(write=False)
    return grid


STILL_GATE = 8.0  # "dis_fused_still": no motion a candidate where both DIS flows are at most this many px


def fuse_dis_flows(grey_a, grey_b, forward, backward, window=MATCH_WINDOW, temperature=MATCH_TEMPERATURE,
                   still_gate=0.0):
    """The fused half motion ``v = a * F / 2 - (1 - a) * G / 2`` (``H x W x 2`` float32 px) from DIS's forward
    and backward flows ``F``, ``G`` (``H x W x 2`` px) between grey frames ``grey_a``, ``grey_b`` (``H x W``
    uint8): per pixel, ``a = sigmoid((cost(-G / 2) - cost(F / 2)) / temperature)``, where ``cost(h)`` is the
    mean absolute difference (in [0, 1]) of ``grey_a(p - h)`` and ``grey_b(p + h)`` (OpenCV's bilinear
    ``remap``, positions to 1/32 px) over a ``window`` box, as ``symmetric_matching`` scores a shift. Where
    the two flows align the frames equally, ``a = 1/2``: ``dis_flow``'s prior.
    ``still_gate`` > 0 (px): where both ``|F|`` and ``|G|`` are at most it, no motion is a third candidate, the
    three weighted by the softmin of their costs (``v`` times ``1 - w0``, ``_moving_weight``); beyond it ``v``
    is as without."""
    grid = _pixel_grid(*grey_a.shape)
    a, b = (grey.astype(np.float32) * np.float32(1 / 255) for grey in (grey_a, grey_b))

    def error(flow, sign):  # |a(p - h) - b(p + h)| for the half motion h = sign * flow / 2 (bilinear, borders replicated)
        at_a, at_b = cv2.scaleAdd(flow, -0.5 * sign, grid), cv2.scaleAdd(flow, 0.5 * sign, grid)
        return cv2.absdiff(*(cv2.remap(image, at, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                             for image, at in ((a, at_a), (b, at_b))))

    def box(image):
        return cv2.blur(image, (window, window), borderType=cv2.BORDER_REPLICATE)

    forward_error = error(forward, 1)
    margin = torch.from_numpy(box(cv2.subtract(error(backward, -1), forward_error))).mul_(1 / temperature)
    share = torch.sigmoid(margin).numpy()  # a; margin: (cost(-G / 2) - cost(F / 2)) / temperature
    scale = np.float32(0.5)  # each flow's weight is its share of this
    if still_gate > 0:
        still_margin = box(cv2.subtract(cv2.absdiff(a, b), forward_error))  # cost(0) - cost(F / 2)
        longest = cv2.max(cv2.magnitude(*cv2.split(forward)), cv2.magnitude(*cv2.split(backward)))
        beyond = cv2.threshold(longest, still_gate, 1.0, cv2.THRESH_BINARY)[1]  # 1 where either is longer
        scale = cv2.max(_moving_weight(still_margin, margin, temperature), beyond) * scale  # (1 - w0) / 2
    to_forward = share * scale           # a / 2
    to_backward = to_forward - scale     # -(1 - a) / 2
    return cv2.add(cv2.multiply(forward, cv2.merge([to_forward, to_forward])),
                   cv2.multiply(backward, cv2.merge([to_backward, to_backward])))


def _moving_weight(still_margin, margin, temperature):
    """``fuse_dis_flows``'s ``1 - w0`` (``H x W`` float32): the softmin weight of DIS's two half motions against
    no motion, ``sigmoid(still_margin / T + softplus(-margin))``, from ``still_margin = cost(0) - cost(F / 2)``
    (``H x W`` float32) and ``margin = (cost(-G / 2) - cost(F / 2)) / T`` (tensor)."""
    return torch.sigmoid(torch.from_numpy(still_margin).mul_(1 / temperature).add_(F.softplus(-margin))).numpy()


@torch.no_grad()
def dis_fused_flow(before, after):
    """The fused DIS prior (``motion_prior="dis_fused"``): per pixel, DIS's forward or backward half motion,
    whichever aligns the middle frames better, or their mean where both do (``fuse_dis_flows``). Where the
    two disagree (a moving object's edge, large motion that one direction lost), their mean, ``dis_flow``'s
    prior, aligns neither. ``B x 2 x H x W`` px, computed on the CPU whatever the frames' device."""
    return _on_host("dis_fused", before, after)


@torch.no_grad()
def dis_fused_still_flow(before, after):
    """``dis_fused_flow`` with no motion a third candidate where both DIS flows are at most ``STILL_GATE`` px
    (``motion_prior="dis_fused_still"``, ``fuse_dis_flows``'s ``still_gate``). ``B x 2 x H x W`` px."""
    return _on_host("dis_fused_still", before, after)


REFERENCE_MATCH_ERROR = 0.04  # reference_flows: largest mean absolute RGB difference (in [0, 1]) where a flow holds


@torch.no_grad()
def reference_flows(target, before, after):
    """What ``--flow_supervision dis`` teaches the warp head's flows: OpenCV's DIS optical flow
    (``DIS_PRESET``) from the real frame ``target`` to ``before`` and to ``after`` (all ``B x 3 x H x W``
    in [0, 1]), so ``B x 4 x H x W`` pixels laid out as ``warp_flows``'s, and where each holds
    (``B x 2 x H x W``, 1 or 0: the frame it warps matches ``target`` within ``REFERENCE_MATCH_ERROR`` per
    pixel; not where ``target``'s content is occluded in that frame or the flow is wrong). It sees the
    frame the model has to make: training-time supervision, never a prior."""
    dis = cv2.DISOpticalFlow_create(DIS_PRESET)
    flows = []
    for grey_t, grey_a, grey_b in zip(grey_images(target), grey_images(before), grey_images(after)):
        to_before, to_after = dis.calc(grey_t, grey_a, None), dis.calc(grey_t, grey_b, None)
        flows.append(torch.from_numpy(np.concatenate([to_before, to_after], axis=2)).permute(2, 0, 1))
    flows = torch.stack(flows).to(device=target.device, dtype=torch.float32)
    return flows, where_flows_hold(flows, target, before, after)


def where_flows_hold(flows, target, before, after):
    """Where each of ``flows`` (``B x 4 x H x W`` px, to ``before`` then to ``after``) brings its frame onto
    ``target`` (all ``B x 3 x H x W`` in [0, 1]) within ``REFERENCE_MATCH_ERROR`` (mean over RGB per
    pixel): ``B x 2 x H x W``, 1 or 0, float32."""
    target = target.float()
    holds = [(backward_warp(frame.float(), flow) - target).abs().mean(1, keepdim=True) < REFERENCE_MATCH_ERROR
             for frame, flow in ((before, flows[:, 0:2]), (after, flows[:, 2:4]))]
    return torch.cat(holds, dim=1).float()


def half_motion(prior, before, after):
    """The half motion (``B x 2 x H x W`` px) between the middle frames that motion prior ``prior``
    ("matching", "aligned": ``matching_flow``; "dis", "dis_aligned": ``dis_flow``; "dis_fused":
    ``dis_fused_flow``; "dis_fused_still": ``dis_fused_still_flow``) finds."""
    if prior not in HALF_MOTION_OF:
        raise ValueError(f"motion prior {prior!r} finds no motion: one of {', '.join(HALF_MOTION_OF)}")
    find = {"matching": matching_flow, "dis": dis_flow, "dis_fused": dis_fused_flow,
            "dis_fused_still": dis_fused_still_flow}[HALF_MOTION_OF[prior]]
    return find(before, after)


def find_motion(prior, frames):
    """The motion that motion prior ``prior`` finds in a model's input ``frames`` (a list of ``B x 3 x H x W``):
    the half motion between the middle two (``B x 2 x H x W`` px, ``half_motion``), and for ``QUADRATIC_PRIORS``
    also the ``quadratic_shift`` (``B x 4 x H x W``: the half motion, then the shift; ``quadratic_motion``)."""
    middle = len(frames) // 2
    if prior in QUADRATIC_PRIORS:
        return quadratic_motion(frames[middle - 2] if middle >= 2 else frames[middle - 1], frames[middle - 1],
                                frames[middle], frames[middle + 1] if middle + 1 < len(frames) else frames[middle])
    return half_motion(prior, frames[middle - 1], frames[middle])


@torch.no_grad()
def quadratic_motion(outer_before, before, after, outer_after):
    """``motion_prior="dis_quadratic"``: ``dis_fused_still_flow``'s half motion between ``before`` and ``after`` and
    its ``quadratic_shift`` from DIS flows to ``outer_before`` and ``outer_after`` (all ``B x 3 x H x W``), as
    ``B x 4 x H x W`` px, on the frames' device and in their dtype (computed on the CPU)."""
    greys = [grey_images(frames) for frames in (outer_before, before, after, outer_after)]
    dis = cv2.DISOpticalFlow_create(DIS_PRESET)
    motions = []
    for grey_0, grey_a, grey_b, grey_3 in zip(*greys):
        forward, backward = dis.calc(grey_a, grey_b, None), dis.calc(grey_b, grey_a, None)
        outer = [None if np.array_equal(grey_o, grey) else dis.calc(grey, grey_o, None)
                 for grey, grey_o in ((grey_a, grey_0), (grey_b, grey_3))]
        motions.append(quadratic_motion_from_flows(grey_a, grey_b, forward, backward, *outer))
    return torch.cat(motions).to(device=before.device, dtype=before.dtype)


def quadratic_motion_from_flows(grey_a, grey_b, forward, backward, before_to_outer, after_to_outer):
    """``quadratic_motion`` of one pair of grey frames (``H x W`` uint8) from DIS's flows (``H x W x 2`` float32 px):
    forward and backward between them, from ``grey_a`` to the frame before it and from ``grey_b`` to the frame after
    it (None where there is none: a clip's end, a scene cut, a window that repeats its middle frame; then the motion
    stays linear). ``1 x 4 x H x W`` float32 px."""
    half = fuse_dis_flows(grey_a, grey_b, forward, backward, still_gate=STILL_GATE)
    linear = before_to_outer is None or after_to_outer is None
    shift = np.zeros_like(half) if linear else quadratic_shift(half, before_to_outer, after_to_outer)
    return torch.from_numpy(np.stack(cv2.split(half) + cv2.split(shift)))[None]


def still_motion(half_motion, dead_zone):
    """``half_motion`` (``B x 2 x H x W`` px) with the motion below ``dead_zone`` px taken as none: each
    pixel's vector scaled by ``clamp((|v| - dead_zone) / dead_zone, 0, 1)``, so zero up to ``dead_zone``,
    whole from twice it, continuous between. 0 leaves it as it is. (The priors' motion carries no gradient;
    ``torch.hypot``'s would be undefined at zero motion.)"""
    if dead_zone <= 0:
        return half_motion
    if half_motion.shape[1] == 4:  # a quadratic prior's motion: the dead zone is the half motion's
        return torch.cat([still_motion(half_motion[:, 0:2], dead_zone), half_motion[:, 2:4]], dim=1)
    length = torch.hypot(half_motion[:, 0:1], half_motion[:, 1:2])  # 60x faster than vector_norm(dim=1) on a CPU
    return half_motion * ((length - dead_zone) / dead_zone).clamp(0, 1)


def minmod(a, b):
    """Per element the one of ``a``, ``b`` (float32 arrays) nearer zero where both have the same sign, else 0 (a slope
    limiter): ``max(min(a, b), 0) + min(max(a, b), 0)``."""
    nearer_if_positive = cv2.threshold(cv2.min(a, b), 0, 0, cv2.THRESH_TOZERO)[1]
    nearer_if_negative = cv2.threshold(cv2.max(a, b), 0, 0, cv2.THRESH_TOZERO_INV)[1]
    return cv2.add(nearer_if_positive, nearer_if_negative)


def quadratic_shift(half_motion, before_to_outer, after_to_outer):
    """The shift (``H x W x 2`` float32 px) from each pixel at the middle time to the midpoint of the point's positions
    in the middle frames when it moves with constant acceleration (quadratic motion, as QVI): both middle frames are
    then sampled at ``p -+ v`` plus it. From the middle frames' half motion ``v`` and the flows from the frame before
    to the one before it (``E``) and from the frame after to the one after it (``F``), each ``H x W x 2`` float32 px
    on its frame's grid, sampled where the point is (``p - v``, ``p + v``; OpenCV's bilinear ``remap``, borders
    replicated): two estimates of its acceleration per frame interval squared, ``2v + E`` and ``F - 2v``; for
    x(s) = x0 + u s + a s^2 / 2, (x0 + x1) / 2 is ``a / 8`` from x(1/2). The two are combined by ``minmod``: where
    they disagree (occlusions, flows that failed, motion that is not quadratic) the motion stays linear."""
    grid = _pixel_grid(*half_motion.shape[:2])

    def sampled(flow, at):
        return cv2.remap(flow, at, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    twice = cv2.add(half_motion, half_motion)
    from_before = cv2.add(twice, sampled(before_to_outer, cv2.subtract(grid, half_motion)))
    from_after = cv2.subtract(sampled(after_to_outer, cv2.add(grid, half_motion)), twice)
    return cv2.multiply(minmod(from_before, from_after), (0.125, 0.125, 0.0, 0.0))


def prior_flows(half_motion, t):
    """Flows (``B x 4 x H x W``: to the frame before, then to the frame after) at time ``t`` for
    linear motion of ``2 * half_motion`` between them; for a quadratic prior's motion (``B x 4 x H x W``:
    the half motion, then the middle time's ``quadratic_shift``) both flows also move by the shift at t,
    ``4 t (1 - t)`` times the middle time's (the offset of x(t) from the chord is a t (1 - t) / 2)."""
    if half_motion.shape[1] == 4:
        half_motion, shift = half_motion[:, 0:2], half_motion[:, 2:4] * (4 * t * (1 - t))
        return torch.cat([half_motion * (-2 * t) + shift, half_motion * (2 * (1 - t)) + shift], dim=1)
    return torch.cat([half_motion * (-2 * t), half_motion * (2 * (1 - t))], dim=1)


def linear_blend(frames, n_outputs):
    """The linear blend of the two middle frames at times k / (n_outputs + 1), k = 1..n_outputs:
    a list of ``n_outputs`` tensors shaped like the frames (``B x 3 x H x W``)."""
    before, after = frames[len(frames) // 2 - 1], frames[len(frames) // 2]
    return [before * (1 - t) + after * t for t in output_times(n_outputs)]

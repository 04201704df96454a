"""The synthetic data set: short clips rendered on the fly from still pictures with random smooth
motion, so a CPU-scale run sees unlimited, varied motion with exact ground truth.

Pictures: the colour photographs that scikit-image ships inside its package (no download; see
``SKIMAGE_PICTURES``), or every image file in ``data_root`` (read with ``image_io``, a longer side
shrunk to ``MAX_SIDE`` px). Each is held in memory with a pyramid of ``LEVELS`` halvings (pyrDown),
so that zoomed-out views are not aliased.

A sample is a clip of ``(n_inputs - 1) * factor + 1`` frames rendered directly at the crop size
(default 64x64, for 'val' and 'test' too); its inputs and targets are the frames of
``windows.WindowLayout`` (inputs 0, f, 2f, ...; targets strictly between the middle two inputs).
Time t counts frames from the middle of the clip. The clip shows

* a camera view of one picture, whose centre follows a quadratic path (velocity + acceleration),
  with a random zoom (MIN_ZOOM to MAX_ZOOM picture px per output px, changing by up to
  MAX_ZOOM_RATE per frame) and rotation (up to MAX_ANGLE, turning up to MAX_SPIN per frame);
* 1 to MAX_PATCHES patches cut from other pictures, each inside a soft-edged ellipse (radii
  PATCH_RADII of the frame's shorter side) that follows its own quadratic path on screen and lies
  on the screen at t = 0, composited over the background in order.

A path's speed is ``cap * u**2`` output px per frame (u uniform, cap <= MAX_SPEED = 16), so small
motion is common (median 4 px, a quarter under 1 px); with the acceleration, no point of a path
moves more than MAX_SPEED px in a frame (camera zoom and spin add at most ~2 px at the corners).
The camera's zoom is drawn so that its whole path stays inside the picture where the picture is
large enough (else BORDER_REFLECT fills the outside).

Every random draw of sample ``index`` comes from a numpy Generator seeded by
``SeedSequence([seed, epoch, index])``, as the augmentation is: the same samples for any number of
workers and on resume. 'val' and 'test' use EVAL_EPOCH, an epoch no training run reaches, so they
are the same samples every time and none is a training sample. An epoch holds 4096 samples for
'train', 64 for 'val' and 'test' (EPOCH_SAMPLES); ``sample_id(i)`` is ``synthetic/<i, 6 digits>``.
The base class's augmentation (flips, colour jitter, time reversal) applies on top; its crop is a
no-op. Rendering a 64x64 2x sample takes about 1.5 ms on one CPU core."""
import math
import os
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .base import InterpolationDataset
from .errors import DatasetError, require_dir
from .image_io import IMAGE_EXTENSIONS, list_images, read_rgb
from .windows import WindowLayout

NAME = "synthetic"
SKIMAGE_PICTURES = {  # colour photographs inside the scikit-image package: name -> loader
    "astronaut": lambda data: data.astronaut(),  # 512x512
    "chelsea": lambda data: data.chelsea(),  # 300x451
    "coffee": lambda data: data.coffee(),  # 400x600
    "rocket": lambda data: data.rocket(),  # 427x640
    "immunohistochemistry": lambda data: data.immunohistochemistry(),  # 512x512
    "motorcycle": lambda data: data.stereo_motorcycle()[0],  # 500x741, the left view
}
EPOCH_SAMPLES = {"train": 4096, "val": 64, "test": 64}
EVAL_EPOCH = 2 ** 32  # the epoch that 'val' and 'test' always draw from
SIZE = (64, 64)  # rendered (height, width) unless crop_size says otherwise
MAX_SIDE = 1024  # pictures from data_root are shrunk to this longer side (px)
LEVELS = 3  # pyramid levels per picture: 1, 1/2, 1/4
MAX_SPEED = 16.0  # output px per frame
MAX_ACCEL = 0.5  # output px per frame**2
MIN_ZOOM, MAX_ZOOM = 0.75, 4.0  # picture px per output px
MAX_ZOOM_RATE = 0.02  # change of log(zoom) per frame
MAX_ANGLE, MAX_SPIN = math.radians(15), math.radians(1)  # radians, radians per frame
MAX_PATCHES = 3
PATCH_RADII = (0.1, 0.25)  # fractions of the frame's shorter side
EDGE = 2.0  # width of a patch's soft edge, output px


@dataclass(frozen=True)
class Path:
    """A point moving in output px (x, y): ``start + velocity t + accel t**2 / 2`` at frame t."""
    start: tuple
    velocity: tuple
    accel: tuple

    def at(self, times):
        """Positions at ``times`` (T,) frames: a T x 2 float64 array of (x, y)."""
        t = np.asarray(times, np.float64)[:, None]
        return np.asarray(self.start) + np.asarray(self.velocity) * t + np.asarray(self.accel) * t ** 2 / 2


@dataclass(frozen=True)
class Camera:
    """A moving view of ``picture`` at pyramid ``level``: at frame t, output px p (relative to the
    frame's centre) shows picture px ``centre + z(t) * (path(t) + R(angle + spin t) p)`` with
    ``z(t) = zoom * exp(zoom_rate t)``; ``centre`` in picture px, ``path`` in output px."""
    picture: int
    level: int
    centre: tuple
    zoom: float
    zoom_rate: float
    angle: float
    spin: float
    path: Path


@dataclass(frozen=True)
class Patch:
    """A piece of ``picture`` (pyramid ``level``) inside an ellipse of ``radii`` (output px) tilted by
    ``tilt`` radians, centred at ``path(t)`` on screen; screen px p shows picture px
    ``source_centre + zoom * R(tilt) (p - path(t))``."""
    picture: int
    level: int
    source_centre: tuple
    zoom: float
    radii: tuple
    tilt: float
    path: Path


@dataclass(frozen=True)
class Scene:
    """Everything one sample shows: a camera view and the patches drawn over it, in order."""
    camera: Camera
    patches: tuple


# ---------------------------------------------------------------- pictures

@lru_cache(maxsize=1)
def skimage_pictures():
    """The pictures of SKIMAGE_PICTURES that load here, as (name, ``H x W x 3`` uint8 RGB) pairs."""
    from skimage import data  # scikit-image is only needed by this data set
    pictures = []
    for name, load in SKIMAGE_PICTURES.items():
        try:
            pictures.append((name, load(data)))
        except (ImportError, OSError, ValueError):  # e.g. a version that needs a download for it
            continue
    if not pictures:
        raise DatasetError(f"none of scikit-image's pictures {', '.join(SKIMAGE_PICTURES)} load here; "
                           f"pass a folder of pictures as the data root")
    return tuple(pictures)


def folder_pictures(folder):
    """Every image file in ``folder`` as (name, ``H x W x 3`` uint8 RGB), a longer side shrunk to
    MAX_SIDE px (INTER_AREA); DatasetError naming a missing or empty folder or a broken file."""
    paths = list_images(require_dir(folder, "synthetic picture folder"))
    if not paths:
        raise DatasetError(f"no pictures ({' '.join(IMAGE_EXTENSIONS[:4])} ...) in synthetic picture "
                           f"folder: {folder}")
    pictures = []
    for path in paths:
        picture = read_rgb(path)
        shrink = MAX_SIDE / max(picture.shape[:2])
        if shrink < 1:
            size = (round(picture.shape[1] * shrink), round(picture.shape[0] * shrink))
            picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
        pictures.append((os.path.basename(path), picture))
    return pictures


def pyramid(picture):
    """``picture`` and up to LEVELS - 1 halvings of it (cv2.pyrDown), none shorter than 16 px."""
    levels = [picture]
    while len(levels) < LEVELS and min(levels[-1].shape[:2]) >= 32:
        levels.append(cv2.pyrDown(levels[-1]))
    return levels


# ---------------------------------------------------------------- random scenes

def _polar(rng, length):
    """A 2-vector of ``length`` in a uniformly random direction."""
    angle = rng.uniform(0, 2 * math.pi)
    return length * math.cos(angle), length * math.sin(angle)


def _split_zoom(zoom, n_levels):
    """(pyramid level, zoom left at that level) for a total ``zoom`` (picture px per output px),
    the level chosen so that the zoom left lies in [MIN_ZOOM, 2 MIN_ZOOM) where it can."""
    level = min(max(int(math.log2(zoom / MIN_ZOOM)), 0), n_levels - 1)
    return level, zoom / 2 ** level


def draw_path(rng, half, start=(0.0, 0.0)):
    """A random quadratic path from ``start`` (output px at t = 0) whose speed stays under
    MAX_SPEED px per frame for |t| <= ``half`` frames; speed ``cap * u**2``, u uniform."""
    accel_cap = min(MAX_ACCEL, MAX_SPEED / (2 * half))
    accel = _polar(rng, accel_cap * rng.uniform())
    speed_cap = MAX_SPEED - math.hypot(*accel) * half
    return Path(start=tuple(start), velocity=_polar(rng, speed_cap * rng.uniform() ** 2), accel=accel)


def draw_camera(rng, pyramids, size, times):
    """A random camera over a random picture for frames ``times`` (from the middle) at ``size``
    (h, w): zoom log-uniform from MIN_ZOOM up to the largest that keeps the whole moving view
    inside the picture (at most MAX_ZOOM), centre uniform where the view stays inside."""
    picture, half = int(rng.integers(len(pyramids))), float(np.abs(times).max())
    path = draw_path(rng, half)
    zoom_rate, angle, spin = (rng.uniform(-limit, limit) for limit in (MAX_ZOOM_RATE, MAX_ANGLE, MAX_SPIN))
    growth = math.exp(abs(zoom_rate) * half)  # the largest zoom in the clip / zoom at t = 0
    radius = 0.5 * math.hypot(*size)  # output px around the view's centre that it may show
    travel = path.at(times)  # T x 2 output px
    reach_low, reach_high = radius - travel.min(0), radius + travel.max(0)  # (x, y) output px
    picture_xy = np.array(pyramids[picture][0].shape[1::-1]) - 1
    fit = float(np.min(picture_xy / ((reach_low + reach_high) * growth)))
    zoom = math.exp(rng.uniform(math.log(MIN_ZOOM), math.log(min(max(fit, MIN_ZOOM), MAX_ZOOM))))
    level, zoom = _split_zoom(zoom, len(pyramids[picture]))
    picture_xy = np.array(pyramids[picture][level].shape[1::-1]) - 1
    low, high = zoom * growth * reach_low, picture_xy - zoom * growth * reach_high
    centre = np.where(low <= high, rng.uniform(low, np.maximum(low, high)), (low + high) / 2)
    return Camera(picture=picture, level=level, centre=tuple(centre.tolist()), zoom=zoom,
                  zoom_rate=zoom_rate, angle=angle, spin=spin, path=path)


def draw_patch(rng, pyramids, size, half, background):
    """A random elliptic patch of a picture other than ``background`` (where there is one), on
    screen at t = 0 and moving on its own path for |t| <= ``half`` frames."""
    others = [i for i in range(len(pyramids)) if i != background] or [background]
    picture = others[int(rng.integers(len(others)))]
    level, zoom = _split_zoom(math.exp(rng.uniform(math.log(MIN_ZOOM), math.log(MAX_ZOOM))),
                              len(pyramids[picture]))
    picture_xy = np.array(pyramids[picture][level].shape[1::-1]) - 1
    radii = tuple((rng.uniform(*PATCH_RADII, size=2) * min(size)).tolist())
    start = rng.uniform((0, 0), (size[1] - 1, size[0] - 1)).tolist()
    return Patch(picture=picture, level=level, source_centre=tuple(rng.uniform((0, 0), picture_xy).tolist()),
                 zoom=zoom, radii=radii, tilt=rng.uniform(0, math.pi), path=draw_path(rng, half, start))


def draw_scene(rng, pyramids, size, times):
    """A random scene (camera and 1 to MAX_PATCHES patches) for frames ``times`` at ``size``."""
    camera = draw_camera(rng, pyramids, size, times)
    half = float(np.abs(times).max())
    patches = tuple(draw_patch(rng, pyramids, size, half, camera.picture)
                    for _ in range(int(rng.integers(1, MAX_PATCHES + 1))))
    return Scene(camera=camera, patches=patches)


# ---------------------------------------------------------------- rendering

def _warp(picture, centre, zoom, angle, anchor, size):
    """``size`` (h, w) px showing ``picture`` px ``centre + zoom R(angle) (p - anchor)`` at output
    px p = (x, y) (bilinear, BORDER_REFLECT): ``h x w x 3`` float32 in [0, 255]."""
    cos, sin = zoom * math.cos(angle), zoom * math.sin(angle)
    linear = np.array([[cos, -sin], [sin, cos]])
    matrix = np.hstack([linear, (np.asarray(centre) - linear @ np.asarray(anchor))[:, None]])
    view = cv2.warpAffine(picture, matrix, (size[1], size[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)
    return view.astype(np.float32)


def render_camera(camera, pyramids, size, times):
    """The camera's view at frames ``times``: ``T x h x w x 3`` float32 in [0, 255]."""
    picture = pyramids[camera.picture][camera.level]
    middle = ((size[1] - 1) / 2, (size[0] - 1) / 2)
    frames = []
    for t, offset in zip(times, camera.path.at(times)):
        zoom = camera.zoom * math.exp(camera.zoom_rate * t)
        angle = camera.angle + camera.spin * t
        cos, sin = math.cos(angle), math.sin(angle)  # anchor = middle - R(angle)^T offset
        anchor = (middle[0] - cos * offset[0] - sin * offset[1],
                  middle[1] + sin * offset[0] - cos * offset[1])
        frames.append(_warp(picture, camera.centre, zoom, angle, anchor, size))
    return np.stack(frames)


def patch_masks(patch, size, times):
    """The patch's soft ellipse at frames ``times``: ``T x h x w`` float32 in [0, 1], 1/2 on the
    ellipse, ramping over EDGE px across it."""
    centres = patch.path.at(times)
    dx = np.arange(size[1])[None, None, :] - centres[:, 0, None, None]
    dy = np.arange(size[0])[None, :, None] - centres[:, 1, None, None]
    cos, sin = math.cos(patch.tilt), math.sin(patch.tilt)
    u, v = (cos * dx + sin * dy) / patch.radii[0], (cos * dy - sin * dx) / patch.radii[1]
    ramp = (1 - np.sqrt(u ** 2 + v ** 2)) * min(patch.radii) / EDGE + 0.5
    return np.clip(ramp, 0, 1).astype(np.float32)


def render(scene, pyramids, size, times):
    """Frames ``times`` (counted from the clip's middle) of ``scene`` at ``size`` (h, w):
    ``T x h x w x 3`` uint8 RGB."""
    frames = render_camera(scene.camera, pyramids, size, times)
    for patch in scene.patches:
        picture = pyramids[patch.picture][patch.level]
        masks = patch_masks(patch, size, times)[..., None]
        for frame, mask, centre in zip(frames, masks, patch.path.at(times)):
            view = _warp(picture, patch.source_centre, patch.zoom, patch.tilt, centre, size)
            frame += mask * (view - frame)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- the data set

def frame_times(layout):
    """The times of ``layout``'s inputs, then its targets, in frames from the clip's middle: (T,)."""
    offsets = np.array(layout.input_offsets + layout.target_offsets, np.float64)
    return offsets - (layout.length - 1) / 2


class SyntheticDataset(InterpolationDataset):
    """``n_samples`` clips rendered from ``pictures`` ((name, ``H x W x 3`` uint8) pairs) at ``size``
    (h, w) with the frames of ``layout``; sample ``index`` is drawn from (seed, epoch, index), the
    epoch being ``fixed_epoch`` if given, else the one ``set_epoch`` chose."""

    def __init__(self, pictures, layout, size, *, n_samples, fixed_epoch=None, root, augment, seed):
        super().__init__(root=root, crop_hw=size, augment=augment, seed=seed)
        self.names = [name for name, _ in pictures]
        self.pyramids = [pyramid(picture) for _, picture in pictures]
        self.layout, self.size = layout, size
        self.n_samples, self.fixed_epoch = n_samples, fixed_epoch
        self.times = frame_times(layout)
        self.check_first_sample()

    def __len__(self):
        return self.n_samples

    def sample_id(self, index):
        return f"{NAME}/{index:06d}"

    def scene(self, index):
        """The random scene of sample ``index`` in this data set's epoch."""
        epoch = self.epoch if self.fixed_epoch is None else self.fixed_epoch
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, index]))
        return draw_scene(rng, self.pyramids, self.size, self.times)

    def load_frames(self, index):
        frames = list(render(self.scene(index), self.pyramids, self.size, self.times))
        return frames[:self.layout.n_inputs], frames[self.layout.n_inputs:]


def build(split, data_root, options):
    """EPOCH_SAMPLES[split] clips from scikit-image's pictures, or from the pictures in ``data_root``."""
    if data_root is None:
        root, pictures = "scikit-image's pictures", skimage_pictures()
    else:
        root = os.path.normpath(os.path.expanduser(data_root))
        pictures = folder_pictures(root)
    return SyntheticDataset(pictures, WindowLayout(options.n_inputs, options.factor),
                            options.crop_for(test_default=SIZE, train_default=SIZE),
                            n_samples=EPOCH_SAMPLES[split],
                            fixed_epoch=None if split == "train" else EVAL_EPOCH,
                            root=root, augment=options.augment, seed=options.seed)

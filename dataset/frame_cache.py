"""Frame caches: a clip folder's frames decoded once into one uint8 array file, so that training reads
its crops without decoding (GoPro 8x otherwise decodes eleven 1280x720 PNGs per sample: about 3 samples
per second for a worker, tens of workers per GPU).

``python cache_frames.py --dataset gopro --data_root input/GOPRO --cache_dir cache/gopro`` writes for
each clip folder ``<cache_dir>/<parent folder>/<clip>.npy`` (``T x H x W x 3`` uint8 RGB, NumPy's
format; the same bytes as the decoded frames, so the same samples) and ``<clip>.json``, the manifest of
the frames it was made from (names, sizes in bytes, modification times). ``--frame_cache cache/gopro``
then makes the data set read each clip through a memory map (``CachedClip``): a crop touches only its
own rows, and the page cache serves them after the first epoch. A clip whose cache is missing, or
whose frames no longer match the manifest, is a DatasetError at start that says how to rebuild."""
import json
import os
import tempfile

import numpy as np

from .errors import DatasetError
from .image_io import list_images, read_rgb

REBUILD = "python cache_frames.py --dataset <gopro|davis> --data_root <the data set's folder> --cache_dir {cache_dir}"


def cache_paths(cache_dir, clip_folder):
    """(array file, manifest) of ``clip_folder``'s cache in ``cache_dir``: named by its parent folder and
    its own name (GoPro's ``train/<clip>`` and ``test/<clip>`` stay apart)."""
    folder = os.path.normpath(clip_folder)
    stem = os.path.join(cache_dir, os.path.basename(os.path.dirname(folder)), os.path.basename(folder))
    return stem + ".npy", stem + ".json"


def frames_manifest(frame_paths):
    """What a cache was made from: ``[name, bytes, modification time in ns]`` per frame, in order."""
    manifest = []
    for path in frame_paths:
        stat = os.stat(path)
        manifest.append([os.path.basename(path), stat.st_size, stat.st_mtime_ns])
    return manifest


def cached_frames(clip_folder, cache_dir):
    """The manifest's frames of ``clip_folder``'s cache in ``cache_dir`` (``frames_manifest``'s rows), or
    None without a complete cache (array and manifest)."""
    array_path, manifest_path = cache_paths(cache_dir, clip_folder)
    if not (os.path.isfile(array_path) and os.path.isfile(manifest_path)):
        return None
    with open(manifest_path, encoding="utf-8") as handle:
        return json.load(handle).get("frames")


def cache_is_current(clip_folder, cache_dir):
    """Whether ``clip_folder`` has a cache in ``cache_dir`` made from its frames as they are now."""
    return cached_frames(clip_folder, cache_dir) == frames_manifest(list_images(clip_folder))


def _write_atomically(path, write):
    """``write(handle)`` into a temporary file beside ``path`` (binary), then rename it to ``path``; on any
    error the temporary file is removed and ``path`` is left as it was. Plain writes, not a memory map:
    a full disk is an OSError (one line), not a bus error."""
    descriptor, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=os.path.basename(path) + ".",
                                             suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as any file this user writes (mkstemp's is private)
        os.replace(temporary, path)
    except BaseException:
        os.remove(temporary)
        raise


def write_clip_cache(clip_folder, cache_dir):
    """Decode every frame of ``clip_folder`` into its cache (array first, then manifest, each written to a
    temporary file and renamed: an interrupted run leaves no cache that looks complete). Returns the
    array's path; DatasetError for an unreadable frame or frames of different sizes."""
    frame_paths = list_images(clip_folder)
    if not frame_paths:
        raise DatasetError(f"no image files in clip folder: {clip_folder}")
    manifest = frames_manifest(frame_paths)
    array_path, manifest_path = cache_paths(cache_dir, clip_folder)
    os.makedirs(os.path.dirname(array_path), exist_ok=True)
    first = read_rgb(frame_paths[0])

    def write_frames(handle):
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": (len(frame_paths), *first.shape)}
        np.lib.format.write_array_header_1_0(handle, header)
        for index, path in enumerate(frame_paths):
            frame = first if index == 0 else read_rgb(path)
            if frame.shape != first.shape:
                raise DatasetError(f"{path} is {frame.shape[1]}x{frame.shape[0]}, the clip's first frame "
                                   f"{first.shape[1]}x{first.shape[0]}: a cached clip needs one frame size")
            handle.write(np.ascontiguousarray(frame).tobytes())

    _write_atomically(array_path, write_frames)
    record = {"source": os.path.abspath(clip_folder), "shape": list(first.shape), "frames": manifest}
    _write_atomically(manifest_path, lambda handle: handle.write(json.dumps(record).encode("utf-8")))
    return array_path


class CachedClip:
    """A frame folder read from its cache in ``cache_dir`` (a clip source, as ``FrameFolderClip``):
    ``read`` hands out views of a memory map, so only the rows a crop keeps are read. The map is opened
    in each process on first use (a worker never receives the frames through a pickle)."""

    def __init__(self, folder, cache_dir, name=None):
        self.name = name or os.path.basename(os.path.normpath(folder))
        self.path = folder
        self.array_path = cache_paths(cache_dir, folder)[0]
        frames = cached_frames(folder, cache_dir)
        if frames is None:
            raise DatasetError(f"no frame cache for {folder} in {cache_dir}: build it with "
                               f"{REBUILD.format(cache_dir=cache_dir)}, or leave out --frame_cache")
        if frames != frames_manifest(list_images(folder)):
            raise DatasetError(f"the frame cache {self.array_path} no longer matches the frames of {folder} "
                               f"(changed since it was written): run {REBUILD.format(cache_dir=cache_dir)} again")
        self.n_frames = len(frames)
        self._frames = None

    def __len__(self):
        return self.n_frames

    def __getstate__(self):
        return {**self.__dict__, "_frames": None}

    def read(self, indices):
        """Frames ``indices`` as ``H x W x 3`` uint8 RGB arrays (read-only views of the cache)."""
        if self._frames is None:
            frames = np.load(self.array_path, mmap_mode="r")
            if len(frames) != self.n_frames:
                raise DatasetError(f"the frame cache {self.array_path} changed while this run used it: one "
                                   "cache_frames.py at a time, and not into the cache of a running job")
            self._frames = frames
        return [self._frames[i] for i in indices]

"""Inference on real data: streaming frame sources and sinks (video through FFmpeg/PyAV, with the
input's audio copied and its timestamps kept), the sliding-window interpolation engine with scene
cut detection, the threaded decode/model/encode pipeline, padding for any frame size, the
Middlebury benchmark, and the scripts' shared CLI helpers."""
from .frame_io import InferenceInputError
from .readers import FolderReader, VideoReader, open_frame_source
from .sliding_window import SlidingWindowInterpolator
from .writers import CODECS, PngFolderWriter, VideoFileWriter, check_output_file, check_output_folder

__all__ = ["CODECS", "FolderReader", "InferenceInputError", "PngFolderWriter",
           "SlidingWindowInterpolator", "VideoFileWriter", "VideoReader", "check_output_file",
           "check_output_folder", "open_frame_source"]

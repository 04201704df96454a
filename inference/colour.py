"""Colour conventions of Y'CbCr video: which matrix and range turn decoded frames into RGB and RGB
back into frames to encode, and the tags that tell players which ones were used.

A stream's own tags win; what it leaves unspecified follows the usual convention: BT.709 for HD
(height >= 720), BT.601 (SMPTE 170M) below, limited range (16-235) except for ``yuvj`` formats."""
from dataclasses import dataclass, replace

HD_HEIGHT = 720
LIMITED, FULL = 1, 2  # FFmpeg's AVColorRange: MPEG (16-235), JPEG (0-255)
UNSPECIFIED_TAGS = (0, 2, 3)  # reserved, unspecified, reserved in FFmpeg's primaries / trc codes
RGB_MATRIX = 0  # AVCOL_SPC_RGB: the tag of a stream stored as RGB
MATRICES = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020",  # AVColorSpace ->
            10: "BT2020"}                                                                 # swscale's name


@dataclass(frozen=True)
class Colour:
    """FFmpeg's codes for a Y'CbCr stream: matrix (AVColorSpace), range, primaries, transfer."""
    colorspace: int
    color_range: int
    primaries: int
    trc: int

    @property
    def matrix(self):
        """The swscale name of the matrix (``av.video.reformatter.Colorspace``)."""
        return MATRICES[self.colorspace]

    def to_rgb(self):
        """``VideoFrame.reformat`` arguments that convert a frame of this colour to full-range RGB."""
        return {"src_colorspace": self.matrix, "dst_colorspace": self.matrix,
                "src_color_range": self.color_range, "dst_color_range": FULL}

    def from_rgb(self):
        """``VideoFrame.reformat`` arguments that convert full-range RGB to this colour."""
        return {"src_colorspace": self.matrix, "dst_colorspace": self.matrix,
                "src_color_range": FULL, "dst_color_range": self.color_range}

    def tag(self, codec_context, rgb=False):
        """Write the tags on an encoder's ``codec_context``; ``rgb``: the stream stores RGB."""
        codec_context.colorspace = RGB_MATRIX if rgb else self.colorspace
        codec_context.color_range = FULL if rgb else self.color_range
        codec_context.color_primaries = self.primaries
        codec_context.color_trc = self.trc


def default_colour(height):
    """BT.709 for frames ``height`` >= 720, BT.601 (SMPTE 170M) below; limited range."""
    if height >= HD_HEIGHT:
        return Colour(colorspace=1, color_range=LIMITED, primaries=1, trc=1)
    return Colour(colorspace=6, color_range=LIMITED, primaries=6, trc=6)


def stream_colour(codec_context):
    """The colour of a decoder's stream: its tags where set, ``default_colour`` for the rest."""
    colour = default_colour(codec_context.height)
    pix_fmt = codec_context.pix_fmt or ""
    if codec_context.colorspace in MATRICES:
        colour = replace(colour, colorspace=codec_context.colorspace)
    if codec_context.color_range in (LIMITED, FULL):
        colour = replace(colour, color_range=codec_context.color_range)
    elif pix_fmt.startswith("yuvj"):
        colour = replace(colour, color_range=FULL)
    if codec_context.color_primaries not in UNSPECIFIED_TAGS:
        colour = replace(colour, primaries=codec_context.color_primaries)
    if codec_context.color_trc not in UNSPECIFIED_TAGS:
        colour = replace(colour, trc=codec_context.color_trc)
    return colour

"""Binary FLAVR deployment engine: bit-packed XNOR-popcount convolutions on the CPU.

    model, description = engine.load_packed("model.bfl", device="cpu")
    frames_out = model([f0, f1, f2, f3])   # same convention as binary FLAVR
"""
from engine.packed_format import PackedFileError, read_packed, write_packed
from engine.packed_model import PackedBinaryConv, PackedFLAVR, build_packed_model, load_packed, pack_binary_model

__all__ = ["PackedBinaryConv", "PackedFLAVR", "PackedFileError", "build_packed_model", "load_packed",
           "pack_binary_model", "read_packed", "write_packed"]

"""The packed model file (.bfl): a self-describing container of tensors, no pickle.

Layout (integers little-endian):
    8 bytes   magic  b"BFLAVRPK"
    4 bytes   format version (uint32)
    8 bytes   header length N (uint64)
    N bytes   JSON header: {"config": {...}, "metadata": {...},
                            "tensors": [{"name", "dtype", "shape", "offset", "nbytes"}, ...]}
    ...       raw tensor buffers, each at a 64-byte aligned `offset` from the data start
    32 bytes  SHA-256 of every byte before it

A truncated, corrupted or foreign file raises PackedFileError with a one-line reason.
"""

import hashlib
import json
import os
import struct
import sys

import torch

from model.files import PACKED_MAGIC, ModelFileError, write_atomically

FORMAT_VERSION = 1
ALIGNMENT = 64
_PREAMBLE = struct.Struct("<8sIQ")
_DIGEST_BYTES = 32
_DTYPES = {"float32": torch.float32, "int64": torch.int64, "float16": torch.float16, "uint8": torch.uint8}


class PackedFileError(ModelFileError):
    """A packed model file that cannot be read or written; the message says why."""


def _check_little_endian():
    if sys.byteorder != "little":
        raise PackedFileError("packed model files are little-endian; this machine is big-endian")


def _dtype_name(tensor):
    for name, dtype in _DTYPES.items():
        if tensor.dtype == dtype:
            return name
    raise PackedFileError(f"cannot store dtype {tensor.dtype} in a packed model file")


def encode(config, tensors, metadata=None):
    """(config dict, {name: tensor}, metadata dict) -> the file's bytes."""
    _check_little_endian()
    entries, buffers, offset = [], [], 0
    for name, tensor in tensors.items():
        data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        padding = -offset % ALIGNMENT
        buffers.append(b"\0" * padding + data)
        offset += padding
        entries.append({"name": name, "dtype": _dtype_name(tensor), "shape": list(tensor.shape),
                        "offset": offset, "nbytes": len(data)})
        offset += len(data)
    header = json.dumps({"config": config, "metadata": metadata or {}, "tensors": entries}).encode("utf-8")
    body = _PREAMBLE.pack(PACKED_MAGIC, FORMAT_VERSION, len(header)) + header + b"".join(buffers)
    return body + hashlib.sha256(body).digest()


def decode(blob, source="packed file"):
    """The file's bytes -> (config, {name: tensor}, metadata); PackedFileError if malformed."""
    _check_little_endian()
    if len(blob) < _PREAMBLE.size + _DIGEST_BYTES or blob[:len(PACKED_MAGIC)] != PACKED_MAGIC:
        raise PackedFileError(f"{source}: not a packed Binary-FLAVR model (.bfl); export one with export_packed.py")
    _, version, header_length = _PREAMBLE.unpack_from(blob)
    if version != FORMAT_VERSION:
        raise PackedFileError(f"{source}: packed format version {version}, this code reads version {FORMAT_VERSION}; "
                              "re-export it with this version's export_packed.py")
    body, digest = blob[:-_DIGEST_BYTES], blob[-_DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise PackedFileError(f"{source}: checksum mismatch, the file is truncated or corrupted; export it again")
    header_end = _PREAMBLE.size + header_length
    try:
        header = json.loads(body[_PREAMBLE.size:header_end].decode("utf-8"))
        data = memoryview(body)[header_end:]
        tensors = {e["name"]: _tensor_from(data, e) for e in header["tensors"]}
        return header["config"], tensors, header.get("metadata", {})
    except (ValueError, KeyError, TypeError) as error:
        raise PackedFileError(f"{source}: malformed header ({error}); export the model again") from None


def _tensor_from(data, entry):
    dtype = _DTYPES[entry["dtype"]]
    start, nbytes = entry["offset"], entry["nbytes"]
    if start < 0 or start + nbytes > len(data):
        raise ValueError(f"tensor {entry['name']} lies outside the file")
    raw = torch.frombuffer(bytearray(data[start:start + nbytes]), dtype=torch.uint8)
    return raw.view(dtype).reshape(entry["shape"])


def write_packed(path, config, tensors, metadata=None, overwrite=False):
    """Write a packed model file atomically; an existing file needs overwrite=True."""
    if os.path.exists(path) and not overwrite:
        raise PackedFileError(f"{path} already exists: choose another --output or pass --overwrite")
    blob = encode(config, tensors, metadata)
    write_atomically(path, lambda f: f.write(blob))
    return len(blob)


def read_packed(path):
    """Read a packed model file -> (config, {name: tensor}, metadata)."""
    if not os.path.isfile(path):
        raise PackedFileError(f"{path}: no such file: give the path of a packed model (.bfl)")
    with open(path, "rb") as f:
        blob = f.read()
    return decode(blob, source=path)

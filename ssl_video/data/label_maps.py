"""Read the rows a clip needs from a packed ``sp.<algo>.npz`` without decompressing the whole array.

A sample's maps are one ``(frames, H, W)`` array in a deflated ``.npy`` inside the npz (``np.savez_compressed``).
``np.load`` inflates all of it, checks its CRC and copies it twice before the loader keeps 4 rows: at 16 maps of
256x454 that was ~40% of the loader's superpixel time, and it grows with the packed frame count (300 maps per
sample at ``superpixels.frame_stride=1``). Here the deflate stream is inflated only up to the last row needed, with
zlib directly (Python's zipfile has no partial read without a CRC pass over the bytes read), and the rows are copied
once into an int32 array. A corrupt stream still fails (``zlib.error`` -> ValueError); anything that is not a plain
stored/deflated C-order ``.npy`` member goes through ``np.load`` as before.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (version .. sizes), name length, extra length: 30 bytes


def read_rows(npz: bytes, rows: Sequence[int], member: str = "labels") -> np.ndarray:
    """``np.load(npz)[member][rows].astype(np.int32)``, inflating only the bytes up to ``max(rows)``."""
    rows = [int(r) for r in rows]
    try:
        with zipfile.ZipFile(io.BytesIO(npz)) as archive:
            info = archive.getinfo(f"{member}.npy")
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(f"bad superpixel npz: {exc}") from None
    signature, name_len, extra_len = _LOCAL_HEADER.unpack_from(npz, info.header_offset)
    if signature != b"PK\x03\x04" or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return _read_rows_np(npz, rows, member)
    start = info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
    stream = _Inflater(memoryview(npz)[start : start + info.compress_size], info.compress_type)
    head = io.BytesIO(stream.read(512))  # .npy v1/v2 headers are padded to a multiple of 64 bytes, << 512
    try:
        version = np.lib.format.read_magic(head)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(head)
    except ValueError:  # e.g. a header longer than the bytes read: numpy's own reader decides
        return _read_rows_np(npz, rows, member)
    if fortran or dtype.hasobject or not shape:
        return _read_rows_np(npz, rows, member)
    if rows and (min(rows) < 0 or max(rows) >= shape[0]):
        raise ValueError(f"superpixel rows {min(rows)}..{max(rows)} outside 0..{shape[0] - 1}")
    row_bytes = dtype.itemsize * int(np.prod(shape[1:]))
    needed = head.tell() + row_bytes * (max(rows, default=-1) + 1)
    data = stream.read_to(needed)
    if len(data) < needed:
        raise ValueError("bad superpixel npz: the array ends early")
    array = np.frombuffer(data, dtype=dtype, count=(max(rows, default=-1) + 1) * row_bytes // dtype.itemsize,
                          offset=head.tell()).reshape(-1, *shape[1:])  # fmt: skip
    out = np.empty((len(rows), *shape[1:]), dtype=np.int32)
    for k, row in enumerate(rows):  # one copy, converting as it goes (fancy indexing + astype would copy twice)
        out[k] = array[row]
    return out


def _read_rows_np(npz: bytes, rows: list[int], member: str) -> np.ndarray:
    try:
        with np.load(io.BytesIO(npz)) as arrays:
            return arrays[member][rows].astype(np.int32)
    except IndexError as exc:
        raise ValueError(f"superpixel rows: {exc}") from None
    except Exception as exc:  # numpy/zipfile/zlib raise many types for a damaged file: one line
        raise ValueError(f"bad superpixel npz: {type(exc).__name__}: {exc}") from None


class _Inflater:
    """The first bytes of a stored or raw-deflate stream, inflated on demand (``read`` then ``read_to``)."""

    def __init__(self, raw: memoryview, compress_type: int) -> None:
        self.raw, self.stored = raw, compress_type == zipfile.ZIP_STORED
        self.inflater = None if self.stored else zlib.decompressobj(-zlib.MAX_WBITS)
        self.out = bytearray()

    def read(self, size: int) -> bytes:
        return bytes(self.read_to(size)[:size])

    def read_to(self, size: int) -> bytearray | memoryview:
        """The stream's first ``size`` bytes, or more (fewer if it ends first)."""
        if self.stored:
            return self.raw[:size]
        try:
            if len(self.out) < size and self.raw is not None:
                self.out += self.inflater.decompress(self.raw, size - len(self.out))
                self.raw = None  # the rest of the input is kept by the inflater itself
            while len(self.out) < size and self.inflater.unconsumed_tail:
                self.out += self.inflater.decompress(self.inflater.unconsumed_tail, size - len(self.out))
        except zlib.error as exc:
            raise ValueError(f"bad superpixel npz: {exc}") from None
        return self.out

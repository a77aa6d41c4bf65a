"""8-bit block-wise dynamic quantization in NumPy: the twin of csrc/storage/q8.h.

``quantize`` cuts a tensor (flattened) into blocks of 256 elements from its
start, takes each block's absmax (NaN ignored, Inf saturated at the largest
float32, so that one Inf does not make the whole block NaN) and stores every element as the
code of the nearest value of the dynamic map to ``x * (1/absmax)``;
``dequantize`` reads ``map[code] * absmax``.  The maps and the code arithmetic
are those of ``fusedopt._qmap``, which the C tables are generated from.
"""
import numpy as np

from .. import _qmap
from .._qmap import BLOCK, dynamic_map

__all__ = ["BLOCK", "dynamic_map", "quantize", "dequantize", "n_blocks"]


def n_blocks(size):
    """Number of absmax blocks of a tensor of `size` elements."""
    return -(-size // BLOCK)


def _blocks(x):
    flat = np.asarray(x, dtype=np.float32).ravel()
    padded = np.zeros(n_blocks(flat.size) * BLOCK, dtype=np.float32)
    padded[:flat.size] = flat
    return padded.reshape(-1, BLOCK), flat.size


def quantize(x, signed):
    """(codes, absmax): uint8 codes in x's shape, float32 absmax per block."""
    blocks, size = _blocks(x)
    magnitude = np.abs(blocks)
    absmax = np.max(np.where(np.isnan(magnitude), np.float32(0), magnitude), axis=1, initial=np.float32(0))
    absmax = np.minimum(absmax, np.finfo(np.float32).max)   # Inf saturates: the block stays readable
    with np.errstate(divide="ignore"):
        inverse = np.where(absmax > 0, np.float32(1) / absmax, np.float32(0)).astype(np.float32)
    with np.errstate(invalid="ignore"):
        scaled = blocks * inverse[:, None]
    codes = _qmap.encode(scaled, signed).ravel()[:size]
    return codes.reshape(np.shape(x)), absmax.astype(np.float32)


def dequantize(codes, absmax, signed):
    """float32 values in the codes' shape: map[code] * absmax of its block."""
    codes = np.asarray(codes)
    flat = codes.ravel()
    per_element = np.repeat(np.asarray(absmax, dtype=np.float32), BLOCK)[:flat.size]
    return (dynamic_map(signed)[flat] * per_element).reshape(codes.shape)

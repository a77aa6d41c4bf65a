"""The 8-bit dynamic quantization maps, defined once.

Block-wise dynamic quantization (Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit
Optimizers via Block-wise Quantization", ICLR 2022), with the maps bitsandbytes
builds (``create_dynamic_map``): 256 sorted values in [-1, 1] (signed, for first
moments and momentum) or [0, 1] (unsigned, for second moments), dense near zero
(one decade per exponent, 10^-6 to 1) and coarse near 1.

A value x of a block with absmax a is stored as the code of the map value nearest
to x * (1/a) (ties to the lower code); it reads back as map[code] * a.

This file uses NumPy only: csrc/generate.py reads it at build time to write the
C tables, and fusedopt.slow.quantization (the NumPy twin) at run time.
"""
import numpy as np

#: elements per absmax block
BLOCK = 256

#: |x| below 2**(_EXP_MIN - 127) shares one bucket of the code search table
_EXP_MIN = 127 - 25
#: buckets per sign of the search table: 26 exponents x 256 mantissa prefixes
BUCKETS = (127 - _EXP_MIN + 1) * 256


def dynamic_map(signed):
    """The 256 sorted float32 values of the signed or unsigned dynamic map."""
    values = [0.0, 1.0]
    for i in range(7):                      # the decade [10^(i-6) * 0.1, 10^(i-6)]
        n = 2 ** i if signed else 2 ** (i + 1)
        bounds = np.linspace(0.1, 1.0, n + 1)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        values.extend(10.0 ** (i - 6) * means)
        if signed:
            values.extend(-(10.0 ** (i - 6)) * means)
    out = np.array(sorted(values), dtype=np.float32)
    assert out.shape == (256,) and np.all(np.diff(out) > 0)
    return out


def midpoints(signed):
    """mid[j] = (map[j] + map[j+1]) / 2 (rounded to float32), mid[255] = +inf:
    a value's code is the number of midpoints below it."""
    m = dynamic_map(signed).astype(np.float64)
    mid = np.empty(256, dtype=np.float32)
    mid[:255] = (m[:-1] + m[1:]) / 2.0
    mid[255] = np.inf
    return mid


def bucket_of(x):
    """The search-table bucket of float32 values x: sign, exponent (clamped to
    [_EXP_MIN, 127]) and the top 8 mantissa bits, so that buckets are ordered by |x|."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.int64)
    magnitude = bits & 0x7FFFFFFF
    exponent = magnitude >> 23
    mantissa = np.where(exponent < _EXP_MIN, 0, (magnitude >> 15) & 0xFF)
    exponent = np.clip(exponent, _EXP_MIN, 127) - _EXP_MIN
    return (bits >> 31) * BUCKETS + exponent * 256 + mantissa


def search_table(signed):
    """start[b]: the code of the lowest value of bucket b.  Every bucket holds at
    most two midpoints, so start[b] and two comparisons give any value's code."""
    mid = midpoints(signed)
    table = np.empty(2 * BUCKETS, dtype=np.int32)
    for sign in (0, 1):
        b = np.arange(BUCKETS)
        exponent, mantissa = b // 256 + _EXP_MIN, b % 256
        low = (exponent << 23) | (mantissa << 15)
        low[0] = 0                                   # the bucket of all tiny values starts at 0
        high = np.append(low[1:], (128 << 23)) - 1   # the largest magnitude of each bucket
        low = low.astype(np.uint32).view(np.float32)
        high = high.astype(np.uint32).view(np.float32)
        if sign:
            low, high = -high, -low                  # x in [-high, -low]
        first = np.searchsorted(mid, low, side="left")
        last = np.searchsorted(mid, high, side="left")
        assert np.all(last - first <= 2)
        table[sign * BUCKETS:(sign + 1) * BUCKETS] = first
    return table

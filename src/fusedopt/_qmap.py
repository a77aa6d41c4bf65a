"""The 8-bit dynamic quantization maps and their code search, defined once.

Block-wise dynamic quantization (Dettmers, Lewis, Shleifer & Zettlemoyer, "8-bit
Optimizers via Block-wise Quantization", ICLR 2022) with the maps bitsandbytes
builds (``create_dynamic_map``): 256 sorted values, one decade per exponent from
10^-7 to 1, each decade split evenly (linspace(0.1, 1) midpoints), plus 0 and 1.
The signed map (first moments, momentum) has 2^i values in decade i on each side
of zero; the unsigned one (second moments) 2^(i+1).

Here each value is computed in float32 as ``first[i] + j * step[i]`` (the j-th
value of decade i), and a value's code by the same arithmetic in reverse: the
decade is found by comparing with the 8 decade boundaries (midpoints between
neighbouring decades), then j = floor((x - first) / step + 1/2).  That is the
nearest map value (up to float32 rounding at a boundary), with no table search,
so the kernels vectorise it; the NumPy twin (fusedopt.slow.quantization) runs
the same float32 operations, so codes are bitwise equal.

One deliberate difference from nearest rounding (and from bitsandbytes): in the
unsigned map a positive value below the first boundary gets the smallest
nonzero code, not 0.  A second moment below ~1.6e-7 of its block's absmax would
otherwise be stored as exactly 0 while the first moment is not, and the next
Adam update would be m / eps: single steps of 10^3-10^4 x lr, which made a
digits MLP with every tensor in 8 bits diverge (tests/test_low_precision_training.py).

This file uses NumPy only: csrc/generate.py reads it at build time to write the
C constants, and fusedopt.slow.quantization at run time.
"""
import numpy as np

#: elements per absmax block
BLOCK = 256
#: decades per side
DECADES = 7
#: the code of 0 and of 1.0 in each map
ZERO = {True: 127, False: 0}
ONE = 255

_f32 = np.float32


def constants(signed):
    """Per decade i: count (values), base (code of its first positive value), and
    the float32 first value, step and 1/step; and the 8 float32 decade boundaries."""
    count = np.array([2 ** i if signed else 2 ** (i + 1) for i in range(DECADES)], dtype=np.int32)
    base = np.array([127 + 2 ** i if signed else 2 ** (i + 1) - 1 for i in range(DECADES)], dtype=np.int32)
    scale = 10.0 ** (np.arange(DECADES) - 6.0)
    first = (scale * (0.1 + 0.45 / count)).astype(np.float32)      # the first linspace midpoint
    step = (scale * 0.9 / count).astype(np.float32)
    inverse = (1.0 / step.astype(np.float64)).astype(np.float32)
    last = first + (count - 1).astype(np.float32) * step          # float32, as decoded
    bound = np.empty(DECADES + 1, dtype=np.float32)
    bound[0] = first[0] * _f32(0.5)                                # between 0 and the first value
    bound[1:DECADES] = (last[:-1] + first[1:]) * _f32(0.5)
    bound[DECADES] = (last[-1] + _f32(1.0)) * _f32(0.5)            # between the last value and 1
    return {"count": count, "base": base, "first": first, "step": step, "inverse": inverse,
            "bound": bound}


def dynamic_map(signed):
    """The 256 sorted float32 values of the signed or unsigned map."""
    c = constants(signed)
    values = np.zeros(256, dtype=np.float32)
    for i in range(DECADES):
        j = np.arange(c["count"][i], dtype=np.float32)
        values[c["base"][i]:c["base"][i] + c["count"][i]] = c["first"][i] + j * c["step"][i]
    values[ONE] = 1.0
    if signed:
        values[:127] = -values[254:127:-1]          # code c < 127 is -(code 254 - c)
    values[ZERO[signed]] = 0.0
    assert np.all(np.diff(values) > 0)
    return values


def encode(x, signed):
    """The codes of float32 values x (x = value / absmax, in [-1, 1]): the float32
    arithmetic the kernels run, element by element."""
    c = constants(signed)
    x = np.asarray(x, dtype=np.float32)
    a = np.abs(x) if signed else x
    first = np.full(x.shape, c["first"][0])
    inverse = np.full(x.shape, c["inverse"][0])
    decade = np.zeros(x.shape, dtype=np.int32)
    for i in range(1, DECADES):
        above = a >= c["bound"][i]
        first = np.where(above, c["first"][i], first)
        inverse = np.where(above, c["inverse"][i], inverse)
        decade += above
    base, last = c["base"][decade], (c["count"][decade] - 1).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        t = (a - first) * inverse + _f32(0.5)
    t = np.where(t < last, t, last)                 # NaN -> last
    t = np.where(t > 0, t, _f32(0.0))
    code = base + t.astype(np.int32)
    # a positive second moment never becomes 0 (the next update would be m / eps)
    small = ZERO[signed] if signed else np.where(a > 0, 1, ZERO[signed])
    code = np.where(a < c["bound"][0], small, code)
    code = np.where(a >= c["bound"][DECADES], ONE, code)
    if signed:
        code = np.where(x < 0, np.maximum(254 - code, 0), code)
    return code.astype(np.uint8)

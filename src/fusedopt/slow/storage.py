"""Low-precision storage in NumPy: the twin of csrc/storage/ (bf16.h, f16.h, bits.h)
and of how the kernels load, update and store each storage.

A kernel widens every input to float32 exactly (16-bit parameters and
gradients, bfloat16 state, 8-bit codes times their block's absmax), runs the
float32 arithmetic of its algorithm, and narrows on store: round to nearest even,
or stochastically with random bits that depend only on (seed, step, parameter
index, element index).  :func:`step` does the same around a float32 twin of
:mod:`fusedopt.slow`.
"""
import ml_dtypes
import numpy as np

from . import quantization

__all__ = ["hash32", "rounding_key", "element_random", "slot_random", "round_nearest",
           "round_stochastic", "step"]

_U32 = np.uint32


def hash32(x):
    """C. Wellons' lowbias32 on uint32 arrays (wrapping arithmetic)."""
    x = np.asarray(x, dtype=_U32).copy()
    x ^= x >> _U32(16)
    x *= _U32(0x7FEB352D)
    x ^= x >> _U32(15)
    x *= _U32(0x846CA68B)
    x ^= x >> _U32(16)
    return x


def rounding_key(seed, step, index):
    """The key of a parameter's random bits at a step (the optimizer's step count
    before it) from the seed and the parameter's position in the optimizer."""
    key = hash32(_U32((index & 0xFFFFFFFF) ^ 0x632BE5AB))
    for word in (index >> 32, step & 0xFFFFFFFF, step >> 32, seed & 0xFFFFFFFF, seed >> 32):
        key = hash32(key ^ _U32(word))
    return _U32(key)


def element_random(key, size):
    """The 32 random bits of elements 0..size-1 of a tensor."""
    k = np.arange(size, dtype=np.uint64)
    low, high = (k & np.uint64(0xFFFFFFFF)).astype(_U32), (k >> np.uint64(32)).astype(_U32)
    return hash32(hash32(low ^ _U32(key)) + high)


def slot_random(r, slot):
    """The random bits of state slot number `slot` at elements drawing r."""
    return hash32(r ^ _U32((0x9E3779B9 * (slot + 1)) & 0xFFFFFFFF))


def round_nearest(x, dtype):
    """float32 x to a 16-bit dtype, to nearest even (NumPy's and ml_dtypes' casts)."""
    return np.asarray(x, dtype=np.float32).astype(dtype)


def _f16_stochastic(x, r):
    u = x.view(_U32)
    a = u & _U32(0x7FFFFFFF)
    sign = (u >> _U32(16)) & _U32(0x8000)
    with np.errstate(over="ignore", invalid="ignore"):
        units = np.where(a < 0x38800000, a, _U32(0)).view(np.float32) * np.float32(16777216.0)
        nearest = (units + np.float32(8388608.0)) - np.float32(8388608.0)
        whole = np.where(nearest > units, nearest - np.float32(1), nearest)
        up = (r >> _U32(8)).astype(np.int32).astype(np.float32) * np.float32(5.9604644775390625e-08) < units - whole
    subnormal = whole.astype(_U32) + up.astype(_U32)
    normal = (a - _U32(112 << 23) + (r & _U32(0x1FFF))) >> _U32(13)
    special = np.where(a > 0x7F800000, _U32(0x7E00) | ((a >> _U32(13)) & _U32(0x3FF)), _U32(0x7C00))
    h = np.where(a >= 0x47800000, special, np.where(a < 0x38800000, subnormal, normal))
    return (sign | h).astype(np.uint16).view(np.float16)


def round_stochastic(x, dtype, r):
    """float32 x to a 16-bit dtype, rounding up with probability equal to the
    dropped fraction, decided by the random bits r (as the kernels do)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    r = np.asarray(r, dtype=_U32).reshape(x.shape)
    if np.dtype(dtype) == np.float16:
        return _f16_stochastic(x, r)
    u = x.view(_U32)
    nan = (u & _U32(0x7FFFFFFF)) > 0x7F800000
    with np.errstate(over="ignore"):
        rounded = (u + (r & _U32(0xFFFF))) >> _U32(16)
    quiet = ((u >> _U32(16)) | _U32(0x0040)) & _U32(0xFFC0)
    return np.where(nan, quiet, rounded).astype(np.uint16).view(ml_dtypes.bfloat16)


def step(twin, param, grad, state, *, signed, master=None, stochastic_rounding=False, key=0,
         **hyper):
    """One step of `twin` (a float32 :mod:`fusedopt.slow` function) over one
    parameter with the kernels' storage, in place.

    param : float32, float16 or bfloat16 array (updated)
    grad : array of an allowed dtype (widened exactly)
    state : dict slot name -> (slot number, stored value): a float32 or bfloat16
        array, or a (codes, absmax) pair for 8-bit state (replaced in place)
    signed : dict slot name -> whether its 8-bit map is signed
    master : float32 master copy of a 16-bit param (updated), or None
    key : rounding_key(...) of this parameter and step
    hyper : the twin's keyword arguments; state slots are passed by name
    """
    work = master.copy() if master is not None else param.astype(np.float32)
    values = {}
    for name, (_, stored) in state.items():
        values[name] = (quantization.dequantize(*stored, signed[name]) if isinstance(stored, tuple)
                        else stored.astype(np.float32))
    twin(work, grad.astype(np.float32), **values, **hyper)
    r = element_random(key, param.size).reshape(param.shape) if stochastic_rounding else None
    for name, (slot, stored) in state.items():
        if isinstance(stored, tuple):
            codes, absmax = quantization.quantize(values[name], signed[name])
            stored[0][...] = codes
            stored[1][...] = absmax
        elif stored.dtype == np.float32:
            stored[...] = values[name]
        elif r is not None:
            stored[...] = round_stochastic(values[name], stored.dtype, slot_random(r, slot))
        else:
            stored[...] = round_nearest(values[name], stored.dtype)
    if master is not None:
        master[...] = work
        param[...] = round_nearest(work, param.dtype)
    elif param.dtype == np.float32:
        param[...] = work
    elif r is not None:
        param[...] = round_stochastic(work, param.dtype, r)
    else:
        param[...] = round_nearest(work, param.dtype)

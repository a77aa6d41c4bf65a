"""Low-precision storage: 16-bit parameters and gradients, bfloat16 and 8-bit
state, float32 master weights, stochastic rounding.

References, independent of the kernels:
- the 16-bit conversions: NumPy's float16 cast and ml_dtypes' bfloat16 cast;
- the 8-bit maps: bitsandbytes' construction (create_dynamic_map), rewritten here;
- the trajectories: fusedopt.slow.storage.step around the float32 NumPy twins.

Tolerance: none.  Every storage widens to float32 exactly and the kernels run
the twins' float32 operations in the same order (no FMA contraction), so the
parameters, codes, scales and master copies must be bitwise equal, for every
thread count and SIMD path.
"""
import ml_dtypes
import numpy as np
import pytest

import fusedopt
from fusedopt import _qmap, slow
from fusedopt.slow import quantization, storage

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
SIMD_PATHS = fusedopt._core.simd_supported()


def bits(a):
    """Bit patterns, so that equality is bitwise (NaN included)."""
    a = np.ascontiguousarray(a)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def assert_bitwise(actual, expected, what):
    assert actual.dtype == expected.dtype, what
    mismatch = np.flatnonzero(bits(actual).ravel() != bits(expected).ravel())
    assert mismatch.size == 0, (f"{what}: {mismatch.size} elements differ, first at {mismatch[0]}: "
                                f"{actual.ravel()[mismatch[0]]!r} vs {expected.ravel()[mismatch[0]]!r}")


def run_everywhere(threads=(1, 2)):
    """(threads, simd path) pairs: every SIMD path this CPU has, one and two threads."""
    return [(t, s) for s in SIMD_PATHS for t in threads]


def use(threads, simd):
    fusedopt.set_num_threads(threads)
    fusedopt._core.set_simd_path(simd)
    fusedopt._core.set_parallel_min_elements(0 if threads > 1 else 1 << 40)


# -- the 8-bit maps ------------------------------------------------------------------

def bitsandbytes_map(signed):
    """bitsandbytes' create_dynamic_map (max_exponent_bits=7, total_bits=8), in float64."""
    data = []
    for i in range(7):
        items = 2 ** i + 1 if signed else 2 ** (i + 1) + 1
        bounds = np.linspace(0.1, 1, items)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += list(10.0 ** (-6 + i) * means)
        if signed:
            data += list(-(10.0 ** (-6 + i)) * means)
    data += [0.0, 1.0]
    return np.array(sorted(data))


@pytest.mark.parametrize("signed", [True, False])
def test_maps_are_the_dynamic_maps_of_bitsandbytes(signed):
    """The same 256 values as bitsandbytes' construction, to float32 rounding of
    first + j * step (a few ulps)."""
    ours = _qmap.dynamic_map(signed)
    assert ours.dtype == np.float32 and ours.shape == (256,) and np.all(np.diff(ours) > 0)
    np.testing.assert_allclose(ours, bitsandbytes_map(signed), rtol=4 * np.finfo(np.float32).eps, atol=0)
    assert ours[255] == 1.0 and ours[_qmap.ZERO[signed]] == 0.0


@pytest.mark.parametrize("signed", [True, False])
def test_every_code_round_trips_exactly(signed):
    values = _qmap.dynamic_map(signed)
    np.testing.assert_array_equal(_qmap.encode(values, signed), np.arange(256))


@pytest.mark.parametrize("signed", [True, False])
def test_codes_are_the_nearest_map_value(signed):
    """The float32 arithmetic picks the nearest value: it agrees with a search of
    the float64 midpoints except within float32 rounding of a midpoint."""
    values = _qmap.dynamic_map(signed).astype(np.float64)
    mid = (values[:-1] + values[1:]) / 2
    x = np.random.default_rng(0).uniform(-1.0 if signed else 0.0, 1.0, 200_000).astype(np.float32)
    x = np.concatenate([x, (mid * (1 - 1e-6)).astype(np.float32), (mid * (1 + 1e-6)).astype(np.float32)])
    if not signed:
        x = np.abs(x)
    codes = _qmap.encode(x, signed).astype(np.int64)
    exact = np.searchsorted(mid, x.astype(np.float64), side="left")
    if not signed:
        # by design a positive second moment never becomes 0: below the first
        # midpoint it takes the smallest nonzero code (see fusedopt._qmap)
        tiny = (x > 0) & (x < mid[0])
        assert np.all(codes[tiny] == 1)
        assert _qmap.encode(np.float32([1e-30, 1e-8, 0.0, -0.0]), False).tolist() == [1, 1, 0, 0]
        exact[tiny] = 1
    off = codes != exact
    assert np.all(np.abs(codes - exact) <= 1)
    # a differing code is (within float32 rounding) as near as the exact one
    gap = np.abs(np.abs(values[codes[off]] - x[off]) - np.abs(values[exact[off]] - x[off]))
    assert np.all(gap <= 4e-7 * np.maximum(np.abs(x[off]), 1e-7))


@pytest.mark.parametrize("signed", [True, False])
def test_quantization_error_per_block_is_within_half_a_gap(signed):
    """|dequantize(quantize(x)) - x| <= absmax * (largest gap of the map) / 2, per block
    (plus float32 rounding of x / absmax and of the product)."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(256 * 40 + 77) * np.repeat(10.0 ** rng.uniform(-6, 3, 41), 256)[:256 * 40 + 77])
    x = (x if signed else np.abs(x)).astype(np.float32)
    codes, absmax = quantization.quantize(x, signed)
    back = quantization.dequantize(codes, absmax, signed)
    half_gap = np.max(np.diff(_qmap.dynamic_map(signed).astype(np.float64))) / 2
    bound = np.repeat(absmax.astype(np.float64), 256)[:x.size] * (half_gap + 4 * np.finfo(np.float32).eps)
    assert np.all(np.abs(back.astype(np.float64) - x) <= bound)
    # and the block maximum itself comes back exactly (its code is +-1 times absmax), unless negative
    first = x[:256]
    assert back[np.argmax(np.abs(first))] == first[np.argmax(np.abs(first))] or first.min() < 0


# -- the kernels' conversions against the independent casts ------------------------

def special_floats():
    """Round-to-nearest edge cases: ties (even/odd), subnormals of both formats, the
    largest finite values and the overflow threshold, signed zeros, infinities."""
    rng = np.random.default_rng(2)
    u = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    finite = u.view(np.float32)[np.isfinite(u.view(np.float32))]
    ties = (rng.integers(0, 2 ** 16, 4000, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    ties16 = (rng.integers(0x3880_0000 >> 13, 0x4780_0000 >> 13, 4000, dtype=np.uint32) << 13
              | 0x1000).view(np.float32)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, 65504, 65519.99, 65520, 65536, 6.1e-5, 5.96e-8, 2.98e-8,
                      1e-45, 3.4e38, -3.4e38, 1.0, -1.0], dtype=np.float32)
    sub16 = rng.uniform(-6.2e-5, 6.2e-5, 4000).astype(np.float32)
    return np.concatenate([finite, ties, ties16, edges, sub16]).astype(np.float32)


def sgd_first_momentum(values, state_dtype, **storage_options):
    """The bfloat16 momentum buffer after one SGD step from zero: buffer = g exactly
    rounded, so the kernel's bfloat16 store is observed directly."""
    p = np.zeros(values.size, np.float32)
    opt = fusedopt.SGD([p], lr=0.0, momentum=0.9, state_dtype=state_dtype, **storage_options)
    opt.step([values])
    return opt.state[0]["momentum_buffer"]


@pytest.mark.parametrize("simd", SIMD_PATHS)
def test_bfloat16_store_rounds_as_ml_dtypes_casts(simd):
    fusedopt._core.set_simd_path(simd)
    x = special_floats()
    with np.errstate(invalid="ignore"):
        expected = x.astype(BF16)
    assert_bitwise(sgd_first_momentum(x, "bfloat16"), expected, "bfloat16 round to nearest")
    nan = np.array([np.nan, -np.nan], np.float32)
    stored = sgd_first_momentum(nan, "bfloat16").astype(np.float32)
    assert np.all(np.isnan(stored)) and list(np.signbit(stored)) == [False, True]


@pytest.mark.parametrize("simd", SIMD_PATHS)
def test_float16_parameter_store_rounds_as_numpy_casts(simd):
    """A float16 parameter without master weights stores p - lr*g rounded; with
    p = 0 and lr = -1 the stored value is g's float32 product rounded by the kernel:
    compare with NumPy's cast of the same float32 value (computed by the twin)."""
    fusedopt._core.set_simd_path(simd)
    with np.errstate(over="ignore"):
        x16 = special_floats().astype(np.float16)  # gradients must be float16 here
    x16 = x16[np.isfinite(x16)]
    p = np.zeros(x16.size, np.float16)
    lr = 1.0009765625                             # exact in float32: products need rounding
    opt = fusedopt.SGD([p], lr=lr, master_weights=False)
    opt.step([x16])
    with np.errstate(over="ignore"):
        expected = (np.float32(0) - np.float32(lr) * x16.astype(np.float32)).astype(np.float16)
    assert_bitwise(p, expected, "float16 round to nearest")


def test_float16_and_bfloat16_loads_are_exact():
    """Every 16-bit pattern widens exactly: a float32 parameter stepped by SGD(lr=1)
    with a 16-bit gradient becomes -g exactly."""
    for dtype in (F16, BF16):
        g = np.arange(2 ** 16, dtype=np.uint32).astype(np.uint16).view(dtype)
        g = g[np.isfinite(g.astype(np.float32))]
        p = np.zeros(g.size, np.float32)
        fusedopt.SGD([p], lr=1.0).step([g])
        assert_bitwise(p, np.float32(0) - g.astype(np.float32), f"{dtype} widening")


# -- stochastic rounding -----------------------------------------------------------

def test_stochastic_rounding_is_unbiased():
    """The mean of many stochastic roundings of x approaches x: after N independent
    draws the error of the mean is within 5 standard deviations (ulp/(2 sqrt N))."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-4, 4, 64).astype(np.float32)
    draws = 4000
    for dtype, ulp in ((BF16, 2.0 ** -7), (F16, 2.0 ** -10)):
        total = np.zeros(x.size)
        for seed in range(draws):
            r = storage.element_random(storage.rounding_key(seed, 0, 0), x.size)
            total += storage.round_stochastic(x, dtype, r).astype(np.float64)
        spacing = ulp * 2.0 ** np.floor(np.log2(np.abs(x.astype(np.float64))))
        assert np.all(np.abs(total / draws - x) <= 5 * spacing / (2 * np.sqrt(draws))), dtype


def test_stochastic_rounding_in_the_kernel_is_unbiased_and_reproducible():
    """bfloat16 momentum of one value, rounded stochastically at 20000 elements:
    the mean equals the value within 5 standard errors; the same seed gives the
    same bits, another seed others."""
    x = np.full(20000, 1.0 + 2.0 ** -9 + 2.0 ** -11, np.float32)   # between two bfloat16 values
    stored = sgd_first_momentum(x, "bfloat16", stochastic_rounding=True, seed=7)
    assert set(np.unique(stored.astype(np.float32))) <= {1.0, 1.0 + 2.0 ** -7}
    assert abs(stored.astype(np.float64).mean() - x[0]) <= 5 * 2.0 ** -7 / (2 * np.sqrt(x.size))
    assert_bitwise(sgd_first_momentum(x, "bfloat16", stochastic_rounding=True, seed=7), stored, "same seed")
    assert not np.array_equal(bits(sgd_first_momentum(x, "bfloat16", stochastic_rounding=True, seed=8)),
                              bits(stored))


# -- trajectories against the twin --------------------------------------------------

ADAM_SLOTS = {"exp_avg": (0, True), "exp_avg_sq": (1, False)}
SGD_SLOTS = {"momentum_buffer": (0, True)}

CONFIGS = {
    # name: (param dtype, grad dtype, optimizer options)
    "f32_state_bf16": (np.float32, np.float32, dict(state_dtype="bfloat16")),
    "f32_state_bf16_sr": (np.float32, np.float32, dict(state_dtype="bfloat16", stochastic_rounding=True)),
    "f32_state_8bit": (np.float32, np.float32, dict(state_dtype="8bit")),
    "f32_grad_bf16": (np.float32, BF16, dict()),
    "f32_grad_f16_state_8bit": (np.float32, F16, dict(state_dtype="8bit")),
    "bf16_master": (BF16, BF16, dict()),
    "bf16_master_8bit": (BF16, BF16, dict(state_dtype="8bit")),
    "bf16_master_state_bf16_sr": (BF16, BF16, dict(state_dtype="bfloat16", stochastic_rounding=True)),
    "bf16_direct": (BF16, BF16, dict(master_weights=False)),
    "bf16_direct_sr": (BF16, BF16, dict(master_weights=False, stochastic_rounding=True, seed=11)),
    "f16_master": (F16, F16, dict()),
    "f16_direct_sr_state_bf16": (F16, F16, dict(master_weights=False, stochastic_rounding=True,
                                                 state_dtype="bfloat16")),
    "f16_direct_8bit": (F16, F16, dict(master_weights=False, state_dtype="8bit")),
}

ALGORITHMS = {
    "adamw": (fusedopt.AdamW, slow.adam_, ADAM_SLOTS,
              dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1),
              dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, decoupled=True)),
    "adam_l2": (fusedopt.Adam, slow.adam_, ADAM_SLOTS,
                dict(lr=1e-2, weight_decay=0.01), dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8,
                                                        weight_decay=0.01)),
    "sgd_nesterov": (fusedopt.SGD, slow.sgd_, SGD_SLOTS,
                     dict(lr=0.05, momentum=0.9, nesterov=True),
                     dict(lr=0.05, momentum=0.9, nesterov=True)),
}


def twin_state(p, kernel_state, slots):
    """The twin's copy of a parameter's state as the optimizer allocated it."""
    out = {}
    for name, (number, _) in slots.items():
        if name + "_absmax" in kernel_state:
            out[name] = (number, (kernel_state[name].copy(), kernel_state[name + "_absmax"].copy()))
        else:
            out[name] = (number, kernel_state[name].copy())
    return out


@pytest.mark.parametrize("threads,simd", run_everywhere())
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_trajectory_equals_the_twin_bitwise(config, algorithm, threads, simd):
    use(threads, simd)
    param_dtype, grad_dtype, options = CONFIGS[config]
    cls, twin, slots, class_hyper, twin_hyper = ALGORITHMS[algorithm]
    rng = np.random.default_rng(4)
    sizes = (9000, 300)            # 8-bit for the first (with a partial block), float32 for the small one
    params = [rng.standard_normal(n).astype(param_dtype) for n in sizes]
    twin_params = [p.copy() for p in params]
    opt = cls(params, **class_hyper, **options)
    twin_states, masters = {}, {}
    for step in range(4):
        grads = [(rng.standard_normal(n) * 0.3).astype(grad_dtype) for n in sizes]
        key_step = opt.step_count
        opt.step(grads)
        for i, (p, g) in enumerate(zip(twin_params, grads)):
            if i not in twin_states:    # the state as allocated: zeros (and the master copy)
                twin_states[i] = {name: (number, (np.zeros_like(s[0]), np.zeros_like(s[1]))
                                         if isinstance(s, tuple) else np.zeros_like(s))
                                  for name, (number, s) in twin_state(p, opt.state[i], slots).items()}
                masters[i] = p.astype(np.float32) if "master" in opt.state[i] else None
            hyper = dict(twin_hyper)
            if twin is slow.adam_:
                hyper["step"] = step + 1
            else:
                hyper["first_step"] = step == 0
            storage.step(twin, p, g, twin_states[i], signed={n: s for n, (_, s) in slots.items()},
                         master=masters[i], stochastic_rounding=options.get("stochastic_rounding", False),
                         key=storage.rounding_key(options.get("seed", 0), key_step, i), **hyper)
        for i, p in enumerate(params):
            assert_bitwise(p, twin_params[i], f"step {step} params[{i}]")
            for name, (_, stored) in twin_states[i].items():
                if isinstance(stored, tuple):
                    assert_bitwise(opt.state[i][name], stored[0], f"step {step} {name}[{i}] codes")
                    assert_bitwise(opt.state[i][name + "_absmax"], stored[1], f"step {step} {name}[{i}] absmax")
                else:
                    assert_bitwise(opt.state[i][name], stored, f"step {step} {name}[{i}]")
            if masters[i] is not None:
                assert_bitwise(opt.state[i]["master"], masters[i], f"step {step} master[{i}]")


# -- state dtypes, memory, state_dict ------------------------------------------------

def test_state_dtypes_and_bytes_per_element():
    """Adam state bytes per float32 parameter element, measured from the arrays:
    8 (float32) -> 4 (bfloat16) -> <= 2.05 (8-bit: codes plus one float32 per 256)."""
    n = 1 << 20
    measured = {}
    for state_dtype in (None, "bfloat16", "8bit"):
        p = np.zeros(n, np.float32)
        opt = fusedopt.Adam([p], state_dtype=state_dtype)
        opt.step([np.ones(n, np.float32)])
        measured[state_dtype] = opt.state_nbytes(per_element=True)
        dtypes = {name: a.dtype for name, a in opt.state[0].items() if isinstance(a, np.ndarray)}
        if state_dtype == "8bit":
            assert dtypes == {"exp_avg": np.uint8, "exp_avg_sq": np.uint8,
                              "exp_avg_absmax": np.float32, "exp_avg_sq_absmax": np.float32}
    assert measured[None] == 8.0 and measured["bfloat16"] == 4.0 and measured["8bit"] <= 2.05


def test_small_tensors_keep_float32_state_under_min_8bit_size():
    big, small = np.zeros(4096, np.float32), np.zeros(4095, np.float32)
    opt = fusedopt.AdamW([big, small], state_dtype="8bit")
    opt.step([np.ones(4096, np.float32), np.ones(4095, np.float32)])
    assert opt.state[0]["exp_avg"].dtype == np.uint8 and opt.state[1]["exp_avg"].dtype == np.float32
    opt = fusedopt.AdamW([small.copy()], state_dtype="8bit", min_8bit_size=0)
    opt.step([np.ones(4095, np.float32)])
    assert opt.state[0]["exp_avg"].dtype == np.uint8 and opt.state[0]["exp_avg_absmax"].shape == (16,)


@pytest.mark.parametrize("options", [dict(state_dtype="8bit"), dict(state_dtype="bfloat16"),
                                     dict(master_weights=True), dict(master_weights=False,
                                                                     stochastic_rounding=True)])
def test_state_dict_holds_codes_and_masters_as_they_are_and_resumes_bitwise(options, tmp_path):
    param_dtype = BF16 if "master_weights" in options else np.float32
    rng = np.random.default_rng(5)
    grads = [(rng.standard_normal(6000) * 0.1).astype(param_dtype) for _ in range(6)]
    p = rng.standard_normal(6000).astype(param_dtype)
    straight = fusedopt.AdamW([p.copy()], **options)
    for g in grads:
        straight.step([g])
    q = p.copy()
    first = fusedopt.AdamW([q], **options)
    for g in grads[:3]:
        first.step([g])
    sd = first.state_dict()
    for name, value in first.state[0].items():   # not dequantized, not widened: the buffers themselves
        if isinstance(value, np.ndarray):
            assert_bitwise(sd["state"][0][name], value, name)
    fusedopt.save(first, tmp_path / "ckpt")
    resumed = fusedopt.AdamW([q], **options)
    fusedopt.load(resumed, tmp_path / "ckpt")
    for g in grads[3:]:
        resumed.step([g])
    assert_bitwise(q, straight.param_groups[0]["params"][0], "resumed parameter")
    for name, value in straight.state[0].items():
        if isinstance(value, np.ndarray):
            assert_bitwise(resumed.state[0][name], value, f"resumed {name}")


def test_loading_checks_the_state_dtype():
    p = np.zeros(5000, np.float32)
    opt = fusedopt.Adam([p], state_dtype="8bit")
    opt.step([np.ones(5000, np.float32)])
    other = fusedopt.Adam([np.zeros(5000, np.float32)])
    with pytest.raises(ValueError, match="state_dtype"):
        other.load_state_dict(opt.state_dict())
    sd = opt.state_dict()
    sd["state"][0]["exp_avg_absmax"] = sd["state"][0]["exp_avg_absmax"][:-1]
    with pytest.raises(ValueError, match="exp_avg_absmax"):
        fusedopt.Adam([np.zeros(5000, np.float32)], state_dtype="8bit").load_state_dict(sd)


# -- gradient safety with 16-bit gradients ------------------------------------------

def test_gradient_safety_works_for_16_bit_gradients():
    """skip_nonfinite sees a bfloat16 Inf; clipping and loss scaling use the
    gradients' float32 values (the same steps as float32 gradients of equal value)."""
    g16 = (np.random.default_rng(6).standard_normal(3000) * 4).astype(BF16)
    g32 = g16.astype(np.float32)
    results = []
    for g in (g16, g32):
        p = np.ones(3000, np.float32)
        opt = fusedopt.Adam([p], lr=0.1, max_grad_norm=1.0, grad_scale=8.0, skip_nonfinite=True)
        assert opt.step([g])
        norm = opt.last_grad_norm
        bad = g.copy()
        bad[17] = np.inf
        assert not opt.step([bad]) and opt.skipped_steps == 1 and np.isnan(opt.last_grad_norm)
        results.append((p.copy(), norm))
    assert_bitwise(results[0][0], results[1][0], "bf16 vs f32 gradients")
    assert results[0][1] == results[1][1]


# -- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("params,options,error,match", [
    ([np.zeros(8)], dict(state_dtype="8bit"), ValueError, "state_dtype"),
    ([np.zeros(8)], dict(state_dtype="bfloat16"), ValueError, "state_dtype"),
    ([np.zeros(8, np.float32)], dict(state_dtype="int8"), ValueError, "state_dtype"),
    ([np.zeros(8, np.float32)], dict(state_dtype="float16"), ValueError, "state_dtype"),
    ([np.zeros(8, np.float32)], dict(master_weights=True), ValueError, "master_weights"),
    ([np.zeros(8, np.float32)], dict(stochastic_rounding=True), ValueError, "stochastic_rounding"),
    ([np.zeros(8, BF16)], dict(stochastic_rounding=True), ValueError, "stochastic_rounding"),
    ([np.zeros(8, BF16)], dict(master_weights="yes"), TypeError, "master_weights"),
    ([np.zeros(8, np.float32)], dict(seed=-1), ValueError, "seed"),
    ([np.zeros(8, np.float32)], dict(min_8bit_size=-5), ValueError, "min_8bit_size"),
])
def test_unsupported_combinations_raise_at_construction(params, options, error, match):
    with pytest.raises(error, match=match):
        fusedopt.AdamW(params, **options)


def test_lamb_has_no_low_precision_state():
    with pytest.raises(TypeError):
        fusedopt.LAMB([np.zeros(8, np.float32)], state_dtype="8bit")


@pytest.mark.parametrize("param_dtype,grad_dtype", [(BF16, np.float32), (F16, np.float32), (BF16, F16),
                                                    (F16, BF16), (np.float32, np.float64)])
def test_a_gradient_wider_than_its_parameter_is_rejected(param_dtype, grad_dtype):
    p = np.ones(10, param_dtype)
    opt = fusedopt.Adam([p])
    with pytest.raises(TypeError, match=r"grads\[0\].*narrows"):
        opt.step([np.ones(10, grad_dtype)])
    assert_bitwise(p, np.ones(10, param_dtype), "untouched")
    assert opt.state == {} or all(not np.any(v) for v in opt.state[0].values() if isinstance(v, np.ndarray)
                                  and v.dtype != np.float32)


def test_gradient_dtype_may_change_between_steps():
    """float32 parameters take float32, bfloat16 and float16 gradients, step by step."""
    p = np.ones(5000, np.float32)
    q = p.copy()
    a, b = fusedopt.Adam([p], lr=0.1), fusedopt.Adam([q], lr=0.1)
    rng = np.random.default_rng(8)
    for dtype in (np.float32, BF16, F16, BF16, np.float32):
        g = rng.standard_normal(5000).astype(dtype)
        a.step([g])
        b.step([g.astype(np.float32)])
    assert_bitwise(p, q, "mixed gradient dtypes")


@pytest.mark.parametrize("simd", SIMD_PATHS)
def test_8bit_codes_of_extreme_values_equal_the_twin_on_every_path(simd):
    """Blocks holding NaN, Inf, subnormals, signed zeros, huge and tiny values, all
    zeros, and a partial last block: the kernel's codes and absmax (signed map:
    SGD's first momentum is g itself; unsigned map: Adam's second moment) equal
    the twin's, on every SIMD path (AVX-512 encodes and decodes with permutes)."""
    fusedopt._core.set_simd_path(simd)
    rng = np.random.default_rng(9)
    blocks = [rng.standard_normal(256) * 10.0 ** rng.uniform(-30, 30, 256),
              np.zeros(256), rng.standard_normal(256) * 1e-40,
              np.r_[np.nan, -np.inf, np.inf, -0.0, 0.0, 1e-45, -3e38, rng.standard_normal(249)],
              np.r_[np.nan, rng.standard_normal(255) * 1e-3], rng.standard_normal(100)]
    g = np.concatenate(blocks).astype(np.float32)
    with np.errstate(all="ignore"):
        p = np.zeros(g.size, np.float32)
        opt = fusedopt.SGD([p], lr=0.0, momentum=0.9, state_dtype="8bit", min_8bit_size=0)
        opt.step([g])
        codes, absmax = quantization.quantize(g, True)
        assert_bitwise(opt.state[0]["momentum_buffer"], codes, "signed codes")
        assert_bitwise(opt.state[0]["momentum_buffer_absmax"], absmax, "signed absmax")
        finite = np.where(np.isfinite(g), g, np.float32(1.0))
        p = np.zeros(g.size, np.float32)
        opt = fusedopt.Adam([p], lr=1e-3, state_dtype="8bit", min_8bit_size=0)
        opt.step([finite])
        twin_p = np.zeros(g.size, np.float32)
        state = {"exp_avg": (0, (np.zeros(g.size, np.uint8), np.zeros(absmax.size, np.float32))),
                 "exp_avg_sq": (1, (np.zeros(g.size, np.uint8), np.zeros(absmax.size, np.float32)))}
        storage.step(slow.adam_, twin_p, finite, state, signed={"exp_avg": True, "exp_avg_sq": False},
                     step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    for name, (_, (twin_codes, twin_absmax)) in state.items():
        assert_bitwise(opt.state[0][name], twin_codes, f"{name} codes")
        assert_bitwise(opt.state[0][name + "_absmax"], twin_absmax, f"{name} absmax")
    assert_bitwise(p, twin_p, "params")


def dense_values_below_one():
    """Float32 values from 2^-25 up to 1 (every binade a code depends on, many
    mantissas each), the map's float32 midpoints and their neighbours, and the
    decade boundaries and theirs: both signs and zeros, in blocks of 255 plus a 1.0, so a
    block's absmax is 1 and the coded value x / absmax is x itself."""
    x = np.arange(0x33000000, 0x3F800000, 61, dtype=np.uint32).view(np.float32)
    edges = []
    for signed in (True, False):
        values = _qmap.dynamic_map(signed)
        edges += [(values[:-1] + values[1:]) * np.float32(0.5), _qmap.constants(signed)["bound"]]
    edges = np.concatenate(edges).astype(np.float32)
    near = edges.view(np.uint32)[:, None] + np.arange(-3, 4, dtype=np.int32).astype(np.uint32)
    x = np.concatenate([x, near.ravel().view(np.float32)])
    x = x[(x > 0) & (x < 1)]
    x = np.concatenate([x, -x, np.zeros(3, np.float32)])
    x = np.concatenate([x, np.zeros(-x.size % 255, np.float32)]).reshape(-1, 255)
    return np.concatenate([x, np.ones((x.shape[0], 1), np.float32)], axis=1).ravel()


@pytest.mark.parametrize("simd", SIMD_PATHS)
def test_8bit_codes_of_dense_values_equal_the_twin_on_every_path(simd):
    """Millions of values below 1, densely: every path's encoder (AVX-512 finds
    the decade from the binade) gives the twin's codes, signed (SGD's first
    momentum is g) and unsigned (Adam's second moment)."""
    use(2, simd)
    g = dense_values_below_one()
    opt = fusedopt.SGD([np.zeros(g.size, np.float32)], lr=0.0, momentum=0.9, state_dtype="8bit")
    opt.step([g])
    codes, absmax = quantization.quantize(g, True)
    assert np.all(absmax == 1.0)
    assert_bitwise(opt.state[0]["momentum_buffer"], codes, "signed codes")
    assert len(np.unique(codes)) == 256
    opt = fusedopt.Adam([np.zeros(g.size, np.float32)], lr=1e-3, state_dtype="8bit")
    opt.step([g])
    codes, absmax = quantization.quantize(np.float32(0.001) * (g * g), False)
    assert_bitwise(opt.state[0]["exp_avg_sq"], codes, "unsigned codes")
    assert_bitwise(opt.state[0]["exp_avg_sq_absmax"], absmax, "unsigned absmax")
    assert len(np.unique(codes)) == 256


@pytest.mark.parametrize("simd", SIMD_PATHS)
def test_8bit_every_code_reads_back_as_the_twin_on_every_path(simd):
    """State holding every code of both maps (in several orders, with absmax
    scales from 0 to the largest float, and non-finite or negative ones) steps as the twin steps: each path's
    decoder (AVX-512 computes the value from the code) reads the map's values."""
    use(2, simd)
    blocks = 24
    rng = np.random.default_rng(12)
    m_codes = np.concatenate([rng.permutation(256) for _ in range(blocks)]).astype(np.uint8)
    v_codes = np.concatenate([rng.permutation(256) for _ in range(blocks)]).astype(np.uint8)
    # absmax a kernel never writes but a loaded state dict may hold (non-finite,
    # negative): the zero code reads as 0 * absmax on every path too
    scales = np.float32([0.0, 1.0, 3e38, 1e-38, np.nan, np.inf, -1.0, -0.0]
                        + list(10.0 ** rng.uniform(-20, 5, blocks - 8)))
    p = rng.standard_normal(256 * blocks).astype(np.float32)
    g = rng.standard_normal(256 * blocks).astype(np.float32)
    opt = fusedopt.Adam([p], lr=1e-3, state_dtype="8bit")
    opt.step([g])
    sd = opt.state_dict()
    sd["state"][0].update(exp_avg=m_codes.copy(), exp_avg_sq=v_codes.copy(),
                          exp_avg_absmax=scales.copy(), exp_avg_sq_absmax=scales[::-1].copy())
    opt.load_state_dict(sd)
    twin_p = p.copy()
    with np.errstate(all="ignore"):
        opt.step([g])
        state = {"exp_avg": (0, (m_codes, scales.copy())), "exp_avg_sq": (1, (v_codes, scales[::-1].copy()))}
        storage.step(slow.adam_, twin_p, g, state, signed={"exp_avg": True, "exp_avg_sq": False},
                     step=2, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    assert_bitwise(p, twin_p, "params")
    for name, (_, (codes, absmax)) in state.items():
        assert_bitwise(opt.state[0][name], codes, f"{name} codes")
        assert_bitwise(opt.state[0][name + "_absmax"], absmax, f"{name} absmax")


# -- found by a hostile review ----------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1), (), (0, 3), (1,)])
def test_8bit_state_of_scalar_and_empty_parameters_round_trips(shape, tmp_path):
    """The absmax blocks keep their own 1-D shape, even when the parameter has
    one element (or none): state_dict, save/load, deepcopy, and a reshape in place."""
    import copy
    p = np.ones(shape, np.float32)
    opt = fusedopt.AdamW([p], state_dtype="8bit", min_8bit_size=0)
    opt.step([np.ones(shape, np.float32)])
    fusedopt.AdamW([p.copy()], state_dtype="8bit", min_8bit_size=0).load_state_dict(opt.state_dict())
    fusedopt.save(opt, tmp_path / "ckpt")
    fusedopt.load(fusedopt.AdamW([p.copy()], state_dtype="8bit", min_8bit_size=0), tmp_path / "ckpt")
    copy.deepcopy(opt).step([np.ones(shape, np.float32)])
    if p.size == 1:
        p.shape = (1, 1, 1)
        opt.add_param_group({"params": [np.ones(3, np.float32)]})   # a plan rebuild
        opt.step([np.ones((1, 1, 1), np.float32), np.ones(3, np.float32)])
        assert opt.state[0]["exp_avg_absmax"].shape == (1,)


def test_one_overflowing_gradient_does_not_poison_its_8bit_block():
    """g = 1e20 makes g*g overflow to Inf in float32: the block's absmax saturates
    at the largest float32 instead of becoming Inf (whose reciprocal 0 would read
    the whole block back as NaN); the other 255 parameters stay finite, as with
    float32 state."""
    rng = np.random.default_rng(10)
    for state_dtype in ("8bit", None):
        p = rng.standard_normal(600).astype(np.float32)
        opt = fusedopt.AdamW([p], lr=1e-3, state_dtype=state_dtype, min_8bit_size=0)
        g = rng.standard_normal(600).astype(np.float32)
        g[3] = 1e20
        opt.step([g])
        for _ in range(3):
            opt.step([rng.standard_normal(600).astype(np.float32)])
        assert np.isfinite(p).all(), state_dtype


def test_low_precision_gradients_from_a_generator_or_sequence():
    class Grads:
        def __init__(self, arrays):
            self.arrays = arrays

        def __len__(self):
            return len(self.arrays)

        def __getitem__(self, i):
            return self.arrays[i]

    p, q, r = (np.zeros(600, np.float32) for _ in range(3))
    g = np.linspace(-1, 1, 600).astype(BF16)
    fusedopt.AdamW([p], lr=1e-3).step(x for x in [g])
    fusedopt.AdamW([q], lr=1e-3).step(Grads([g]))
    fusedopt.AdamW([r], lr=1e-3).step([g])
    assert_bitwise(p, r, "generator")
    assert_bitwise(q, r, "sequence")


def test_storage_errors_name_the_argument():
    with pytest.raises(ValueError, match="state_dtype"):
        fusedopt.AdamW([np.zeros(8, np.float32)], state_dtype="8-bit")
    opt = fusedopt.AdamW([np.zeros(8, np.float32)], state_dtype="8bit")
    with pytest.raises(ValueError, match="state_dtype='8bit'"):
        opt.add_param_group({"params": [np.zeros(8)]})
    p = np.zeros(5000, np.float32)
    opt = fusedopt.Adam([p], state_dtype="8bit", amsgrad=True)
    opt.step([np.ones(5000, np.float32)])
    sd = opt.state_dict()
    del sd["state"][0]["max_exp_avg_sq_absmax"]
    with pytest.raises(ValueError, match="missing.*'max_exp_avg_sq_absmax'"):
        fusedopt.Adam([np.zeros(5000, np.float32)], state_dtype="8bit", amsgrad=True).load_state_dict(sd)
    sd = opt.state_dict()
    sd["storage"]["state_dtype"] = np.array([1, 2])
    with pytest.raises(ValueError, match="state_dtype"):
        fusedopt.Adam([np.zeros(5000, np.float32)], state_dtype="8bit", amsgrad=True).load_state_dict(sd)


def test_loading_checks_the_rounding_seed():
    """Resuming is bitwise only with the same stochastic rounding stream."""
    p = np.zeros(100, BF16)
    opt = fusedopt.AdamW([p], master_weights=False, stochastic_rounding=True, seed=1)
    opt.step([np.ones(100, BF16)])
    other = fusedopt.AdamW([np.zeros(100, BF16)], master_weights=False, stochastic_rounding=True, seed=2)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(opt.state_dict())

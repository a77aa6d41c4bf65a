/*
 * runtime/instance.h: the storage macros an algorithm's range function is
 * written with, for one kernels.def row.  The generated fusedopt_instances.h
 * defines FO_ALGORITHM, FO_PARAM_STORAGE, FO_GRAD_STORAGE, FO_STATE_STORAGE
 * (kernels.def names) and includes this, then the algorithm header with
 * FO_INSTANTIATING set, then runtime/instance_end.h.  The including ISA file
 * defines FO_ISA.
 *
 *   FO_C                      compute type (the param storage's)
 *   FO_P, FO_G, FO_S          element types of the parameter / gradient / state in memory
 *   FO_SQRT, FO_ABS           square root and absolute value in FO_C
 *   FO_INSTANCE(x)            x suffixed with the row and the ISA
 *
 * Parameters: FO_PARAM_GET(p) declares p (and p_master) for tensor i from begin;
 * FO_PARAM_ARG(p) / FO_PARAM_PASS(p) pass them to a loop.  FO_LOAD_P(p, k) and
 * FO_STORE_P(p, k, x) read and write element k through the master copy when the
 * loop's `master` flag is set (the 16-bit value is then its rounding), else the
 * parameter itself (16-bit stores round stochastically when `sr` is set).
 * Gradients: FO_LOAD_G(g, k).
 *
 * State slots, whatever their storage: FO_SLOT_GET(h, slot), FO_SLOT_ARG(h),
 * FO_SLOT_PASS(h) as for parameters; the loop runs over chunks of
 * FO_STATE_CHUNK(n) elements (one chunk unless the state is 8-bit), opening each
 * slot it uses with FO_SLOT_OPEN(h, slot, map, used, c0) before the chunk (8-bit:
 * decode the block into a float32 staging block; the loop names its chunk start
 * `c0` and length `len`) and
 * closing it with FO_SLOT_CLOSE(h, map, used, c0, len) after (8-bit: quantize the
 * staged block); map is `signed` or `unsigned` (how the slot's values range).
 * Inside, FO_LOAD_S(h, k) / FO_STORE_S(h, k, x) read the old value and write the
 * new one of element k (each at most once per element, load before store).
 *
 * Stochastic rounding: a loop with 16-bit stores takes `key` (fo_rounding_key)
 * and the flag `sr`, and draws FO_ELEMENT_RANDOM(r, first + k) before storing.
 * FO_ROUNDING_VARIANTS(call) expands call(master, sr) for the flag values this
 * row can use, picked at run time from the range function's p_master and h.
 */
#define FO_CAT2_(a, b) a##b
#define FO_CAT2(a, b) FO_CAT2_(a, b)
#define FO_CAT3_(a, b, c) a##b##c
#define FO_CAT3(a, b, c) FO_CAT3_(a, b, c)
#define FO_PS(what) FO_CAT3(FO_STORAGE_, FO_PARAM_STORAGE, what)
#define FO_GS(what) FO_CAT3(FO_STORAGE_, FO_GRAD_STORAGE, what)
#define FO_SS(what) FO_CAT3(FO_STORAGE_, FO_STATE_STORAGE, what)

#define FO_C FO_PS(_COMPUTE)
#define FO_P FO_PS(_TYPE)
#define FO_G FO_GS(_TYPE)
#define FO_S FO_SS(_TYPE)
#define FO_SQRT FO_PS(_SQRT)
#define FO_ABS FO_PS(_ABS)
#define FO_INSTANCE(x)                                                                     \
    FO_CAT2(FO_CAT3(FO_CAT3(FO_CAT3(x, _, FO_ALGORITHM), _, FO_PARAM_STORAGE), _, FO_GRAD_STORAGE), \
            FO_CAT3(_, FO_STATE_STORAGE, FO_CAT2(_, FO_ISA)))

/* -- parameters and gradients ---------------------------------------------- */
#define FO_PARAM_GET(p)                                                                    \
    FO_P *FO_RESTRICT p = (FO_P *)t->param[i] + begin;                                     \
    float *FO_RESTRICT p##_master = t->master != NULL && t->master[i] != NULL ? t->master[i] + begin : NULL
#define FO_PARAM_ARG(p) FO_P *FO_RESTRICT p, float *FO_RESTRICT p##_master
#define FO_PARAM_PASS(p) p, p##_master
#define FO_LOAD_P(p, k) FO_CAT2(FO_LOAD_P_, FO_PS(_KIND))(p, k)
#define FO_STORE_P(p, k, x) FO_CAT2(FO_STORE_P_, FO_PS(_KIND))(p, k, x)
#define FO_LOAD_P_WIDE(p, k) ((FO_C)(p)[k])
#define FO_STORE_P_WIDE(p, k, x) ((p)[k] = (x))
#define FO_LOAD_P_NARROW(p, k) (master ? p##_master[k] : FO_PS(_LOAD)(p, k))
#define FO_STORE_P_NARROW(p, k, x)                                                         \
    do {                                                                                   \
        const float fo_value_ = (x);                                                       \
        if (master) {                                                                      \
            p##_master[k] = fo_value_;                                                     \
            FO_PS(_STORE)(p, k, fo_value_);                                                \
        } else if (sr) {                                                                   \
            FO_PS(_STORE_SR)(p, k, fo_value_, r);                                          \
        } else {                                                                           \
            FO_PS(_STORE)(p, k, fo_value_);                                                \
        }                                                                                  \
    } while (0)
#define FO_LOAD_G(g, k) ((FO_C)FO_GS(_LOAD)(g, k))

/* -- state slots ----------------------------------------------------------- */
#define FO_SLOT_GET(h, idx) FO_CAT2(FO_SLOT_GET_, FO_SS(_KIND))(h, idx)
#define FO_SLOT_ARG(h) FO_CAT2(FO_SLOT_ARG_, FO_SS(_KIND))(h)
#define FO_SLOT_PASS(h) FO_CAT2(FO_SLOT_PASS_, FO_SS(_KIND))(h)
#define FO_SLOT_OPEN(h, slot, map, used, c0) FO_CAT2(FO_SLOT_OPEN_, FO_SS(_KIND))(h, slot, map, used, c0)
#define FO_SLOT_CLOSE(h, map, used, c0, len) FO_CAT2(FO_SLOT_CLOSE_, FO_SS(_KIND))(h, map, used, c0, len)
#define FO_LOAD_S(h, k) FO_CAT2(FO_LOAD_S_, FO_SS(_KIND))(h, k)
#define FO_STORE_S(h, k, x) FO_CAT2(FO_STORE_S_, FO_SS(_KIND))(h, k, x)
#define FO_STATE_CHUNK(n) FO_CAT2(FO_STATE_CHUNK_, FO_SS(_KIND))(n)

/* float32, float64, bfloat16: one value per element */
#define FO_SLOT_GET_PLAIN(h, idx) \
    FO_S *FO_RESTRICT h = t->slot[idx][i] != NULL ? (FO_S *)t->slot[idx][i] + begin : NULL
#define FO_SLOT_ARG_PLAIN(h) FO_S *FO_RESTRICT h
#define FO_SLOT_PASS_PLAIN(h) h
#define FO_SLOT_OPEN_PLAIN(h, slot, map, used, c0) const int h##_slot = (slot)
#define FO_SLOT_CLOSE_PLAIN(h, map, used, c0, len) (void)h##_slot
#define FO_LOAD_S_PLAIN(h, k) ((FO_C)FO_SS(_LOAD)(h, k))
#define FO_STATE_CHUNK_PLAIN(n) (n)
#define FO_SLOT_GET_WIDE FO_SLOT_GET_PLAIN
#define FO_SLOT_ARG_WIDE FO_SLOT_ARG_PLAIN
#define FO_SLOT_PASS_WIDE FO_SLOT_PASS_PLAIN
#define FO_SLOT_OPEN_WIDE FO_SLOT_OPEN_PLAIN
#define FO_SLOT_CLOSE_WIDE FO_SLOT_CLOSE_PLAIN
#define FO_LOAD_S_WIDE FO_LOAD_S_PLAIN
#define FO_STATE_CHUNK_WIDE FO_STATE_CHUNK_PLAIN
#define FO_STORE_S_WIDE(h, k, x) FO_SS(_STORE)(h, k, x)
#define FO_SLOT_GET_NARROW FO_SLOT_GET_PLAIN
#define FO_SLOT_ARG_NARROW FO_SLOT_ARG_PLAIN
#define FO_SLOT_PASS_NARROW FO_SLOT_PASS_PLAIN
#define FO_SLOT_OPEN_NARROW FO_SLOT_OPEN_PLAIN
#define FO_SLOT_CLOSE_NARROW FO_SLOT_CLOSE_PLAIN
#define FO_LOAD_S_NARROW FO_LOAD_S_PLAIN
#define FO_STATE_CHUNK_NARROW FO_STATE_CHUNK_PLAIN
#define FO_STORE_S_NARROW(h, k, x)                                                         \
    do {                                                                                   \
        if (sr) FO_SS(_STORE_SR)(h, k, x, fo_slot_random(r, h##_slot));                    \
        else FO_SS(_STORE)(h, k, x);                                                       \
    } while (0)

/* 8-bit: codes, one absmax per block; the chunk is one block, staged in float32 */
#define FO_SLOT_GET_Q8(h, idx)                                                            \
    uint8_t *FO_RESTRICT h = t->slot[idx][i] != NULL ? (uint8_t *)t->slot[idx][i] + begin : NULL; \
    float *FO_RESTRICT h##_scale = t->scale[idx][i] != NULL ? t->scale[idx][i] + begin / FO_Q8_BLOCK : NULL
#define FO_SLOT_ARG_Q8(h) uint8_t *FO_RESTRICT h, float *FO_RESTRICT h##_scale
#define FO_SLOT_PASS_Q8(h) h, h##_scale
#define FO_SLOT_OPEN_Q8(h, slot, map, used, c0)                                            \
    float h##_stage[FO_Q8_BLOCK];                                                          \
    if (used)                                                                              \
        fo_q8_load_##map(h + (c0), len, h##_scale[(c0) / FO_Q8_BLOCK], h##_stage)
#define FO_SLOT_CLOSE_Q8(h, map, used, c0, len)                                            \
    do {                                                                                   \
        if (used)                                                                          \
            fo_q8_store_##map(h##_stage, len, h + (c0), h##_scale + (c0) / FO_Q8_BLOCK);   \
    } while (0)
#define FO_LOAD_S_Q8(h, k) (h##_stage[(k) - c0])
#define FO_STORE_S_Q8(h, k, x) (h##_stage[(k) - c0] = (x))
#define FO_STATE_CHUNK_Q8(n) FO_Q8_BLOCK

/* -- stochastic rounding ------------------------------------------------------ */
#define FO_ELEMENT_RANDOM(r, k)                                                            \
    const uint32_t r = sr ? fo_element_random(key, k) : 0u;                                \
    (void)r

/* Hash of (seed, step, tensor position, first element): the key of a tensor's
 * random bits (first: a row-sparse step's row, fusedopt.h; 0 otherwise). */
static inline uint32_t FO_INSTANCE(fo_rounding_key)(double seed, double step, int64_t tensor, int64_t first)
{
    const uint64_t s = (uint64_t)seed, n = (uint64_t)step, i = (uint64_t)tensor;
    uint32_t key = fo_hash32((uint32_t)i ^ 0x632be5abu);
    if (first != 0) {
        key = fo_hash32(key ^ (uint32_t)first ^ 0x9e3779b9u);
        key = fo_hash32(key ^ (uint32_t)((uint64_t)first >> 32));
    }
    key = fo_hash32(key ^ (uint32_t)(i >> 32));
    key = fo_hash32(key ^ (uint32_t)n);
    key = fo_hash32(key ^ (uint32_t)(n >> 32));
    key = fo_hash32(key ^ (uint32_t)s);
    return fo_hash32(key ^ (uint32_t)(s >> 32));
}

#if FO_PS(_NARROW)
/* master weights: the parameter is stored rounded to nearest; without: sr decides */
#define FO_ROUNDING_VARIANTS(call)                                                          \
    do {                                                                                   \
        if (p_master != NULL && sr_on && FO_SS(_NARROW)) call(1, 1);                       \
        else if (p_master != NULL) call(1, 0);                                             \
        else if (sr_on) call(0, 1);                                                        \
        else call(0, 0);                                                                   \
    } while (0)
#elif FO_SS(_NARROW)
#define FO_ROUNDING_VARIANTS(call)                                                          \
    do {                                                                                   \
        if (sr_on) call(0, 1);                                                             \
        else call(0, 0);                                                                   \
    } while (0)
#else
#define FO_ROUNDING_VARIANTS(call) call(0, 0)
#endif
/* what FO_ROUNDING_VARIANTS reads, in a range function after FO_PARAM_GET(p) */
#define FO_ROUNDING_SETUP(h)                                                               \
    const int sr_on = (h)->stochastic_rounding != 0.0;                                     \
    const uint32_t key = sr_on ? FO_INSTANCE(fo_rounding_key)((h)->rounding_seed,          \
                                                              (h)->rounding_step, t->index[i], \
                                                              t->first != NULL ? t->first[i] : 0) : 0u

#define FO_INSTANTIATING 1

/*
 * runtime/algorithm.h: what every algorithms/<name>.h builds on.
 *
 * An algorithm header has two sections.
 *
 * Types (once): four X-macro lists and two functions,
 *   FO_INPUTS_<name>(X)    hyperparameters read from the param group, as doubles
 *   FO_COUNTERS_<name>(X)  per-tensor counters (step, ...): read before the step,
 *                          advanced by prepare, written back after it
 *   FO_DERIVED_<name>(X)   per-step constants computed by prepare
 *   FO_SLOTS_<name>(X)     state slots, in slot order
 *   FO_N_REDUCED_<name>    per-tensor reduction values (0: element-wise only)
 *   static unsigned fo_<name>_slots_needed(const fo_<name>_hyper *h): bit k set
 *                          when these options read and write slot k
 *   static void fo_<name>_prepare(fo_<name>_hyper *h): once per step and block
 * then FO_ALGORITHM_TYPES(<name>) before the functions (the hyperparameter
 * struct) and FO_ALGORITHM_WRAPPERS(<name>) after them (every slot the parameter's
 * shape), or FO_ALGORITHM_WRAPPERS_SHAPED(<name>, "rows cols ...") with the shape
 * rule of each slot (fusedopt.h, fo_kernel_slot_shapes).
 *
 * Instance (once per kernels.def row and ISA, under FO_INSTANTIATING): the range
 * function FO_INSTANCE(fo_range), which updates elements [begin, end) of tensor i,
 * written with the storage macros of runtime/instance.h (FO_C, FO_LOAD_P, ...),
 * so that one loop serves every storage: wide, 16-bit (with master weights and
 * stochastic rounding) and 8-bit blocks.  A factored algorithm also defines
 * FO_INSTANCE(fo_factor), the phases the driver runs over units of its factored
 * tensors (runtime/internal.h, fo_factor_fn).
 */
#ifndef FUSEDOPT_ALGORITHM_H
#define FUSEDOPT_ALGORITHM_H

#include <math.h>
#include "internal.h"

#if defined(__GNUC__) || defined(__clang__)
#define FO_MAYBE_UNUSED __attribute__((unused))
#else
#define FO_MAYBE_UNUSED
#endif

/* torch's CPU lerp, a + w*(b - a) for |w| < 0.5, else b - (b - a)*(1 - w); w_small
 * and one_minus_w are loop constants (one_minus_w = 1 - w rounded in the compute type). */
#define FO_LERP(a, b, w, one_minus_w, w_small) ((w_small) ? (a) + (w) * ((b) - (a)) : (b) - ((b) - (a)) * (one_minus_w))
/* sign(x): -1, 0 or 1, and NaN for NaN */
#define FO_SIGN(x) ((x) > 0 ? 1 : ((x) < 0 ? -1 : (x)))
/* max(a, b) that propagates a NaN of either, as torch.maximum and np.maximum do */
#define FO_MAX_NAN(a, b) (((a) != (a) || (a) > (b)) ? (a) : (b))

/* The sum of FO_STAT_LANES lanes, pairwise in a fixed order */
static inline double fo_lane_sum(const double *lanes)
{
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

#define FO_HYPER_FIELD(name) double name;
#define FO_FIELD_NAME(name) #name " "
#define FO_COUNT_ONE(name) +1

/* The hyperparameter block: the FO_COMMON_FIELDS fields, inputs, counters,
 * derived values, all doubles (so the binding fills it as a double array). */
#define FO_ALGORITHM_TYPES(name)                                                     \
    typedef struct {                                                                 \
        double grad_multiplier, stochastic_rounding, rounding_seed, rounding_step;   \
        FO_INPUTS_##name(FO_HYPER_FIELD)                                             \
        FO_COUNTERS_##name(FO_HYPER_FIELD)                                           \
        FO_DERIVED_##name(FO_HYPER_FIELD)                                            \
    } fo_##name##_hyper

/* Uniform entry points for runtime/kernels.c's metadata table. */
#define FO_ALGORITHM_WRAPPERS(name) FO_ALGORITHM_WRAPPERS_SHAPED(name, "")
#define FO_ALGORITHM_WRAPPERS_SHAPED(name, shapes)                                   \
    FO_MAYBE_UNUSED static void fo_prepare_##name(double *h)                         \
    {                                                                                \
        fo_##name##_prepare((fo_##name##_hyper *)h);                                 \
    }                                                                                \
    FO_MAYBE_UNUSED static unsigned fo_slots_needed_##name(const double *h)          \
    {                                                                                \
        return fo_##name##_slots_needed((const fo_##name##_hyper *)h);               \
    }                                                                                \
    static const char fo_inputs_##name[] = FO_INPUTS_##name(FO_FIELD_NAME);          \
    static const char fo_counters_##name[] = "" FO_COUNTERS_##name(FO_FIELD_NAME);   \
    static const char fo_slots_##name[] = FO_SLOTS_##name(FO_FIELD_NAME);            \
    static const char fo_slot_shapes_##name[] = shapes;                              \
    enum { fo_n_fields_##name = 0 FO_INPUTS_##name(FO_COUNT_ONE) FO_COUNTERS_##name(FO_COUNT_ONE), \
           fo_n_slots_##name = 0 FO_SLOTS_##name(FO_COUNT_ONE) }

#endif

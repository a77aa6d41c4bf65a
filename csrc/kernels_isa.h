/*
 * kernels_isa.h: instantiates the loops of kernels_loops.h for float32 and
 * float64 and exports them as the table fo_kernels_<FO_ISA>.  The including file
 * defines FO_ISA and sets the compiler's target before including this.
 */
#include <math.h>
#include <stddef.h>
#include "kernels_internal.h"

#define FO_PASTE3(a, b, c) a##_##b##_##c
#define FO_EXPAND3(a, b, c) FO_PASTE3(a, b, c)

#define FO_T float
#define FO_SQRT sqrtf
#define FO_NAME(x) FO_EXPAND3(x, f32, FO_ISA)
#include "kernels_loops.h"
#undef FO_T
#undef FO_SQRT
#undef FO_NAME

#define FO_T double
#define FO_SQRT sqrt
#define FO_NAME(x) FO_EXPAND3(x, f64, FO_ISA)
#include "kernels_loops.h"
#undef FO_T
#undef FO_SQRT
#undef FO_NAME

#define FO_TABLE_NAME(isa) FO_PASTE_TABLE(isa)
#define FO_PASTE_TABLE(isa) fo_kernels_##isa
#define FO_STRINGIFY(x) FO_STRINGIFY_(x)
#define FO_STRINGIFY_(x) #x

const fo_isa_kernels FO_TABLE_NAME(FO_ISA) = {
    FO_STRINGIFY(FO_ISA),
    FO_EXPAND3(adam_range, f32, FO_ISA),
    FO_EXPAND3(adam_range, f64, FO_ISA),
    FO_EXPAND3(sgd_range, f32, FO_ISA),
    FO_EXPAND3(sgd_range, f64, FO_ISA),
    FO_EXPAND3(grad_stats_range, f32, FO_ISA),
    FO_EXPAND3(grad_stats_range, f64, FO_ISA),
};

/* isa/avx2.c: the kernels for CPUs with AVX2 and FMA (Haswell, Zen and later); picked at run time. */
#include "../runtime/internal.h"
#if defined(FO_X86_DISPATCH)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define FO_ISA avx2
#define FO_ISA_AVX2 1
#include "isa.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif

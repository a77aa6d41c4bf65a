/* isa/avx512.c: the kernels for CPUs with AVX-512F/VL/BW/DQ (Skylake-X, Zen 4 and later; BW for
 * the 16-bit conversions); picked at run time. */
#include "../runtime/internal.h"
#if defined(FO_X86_DISPATCH)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#endif
#define FO_ISA avx512
#define FO_ISA_AVX512 1
#include "isa.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif

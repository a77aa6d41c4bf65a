/* The loops for x86-64 CPUs with AVX2 (chosen at run time by dispatch.c). */
#include "kernels_internal.h"
#if defined(FO_X86_DISPATCH)
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define FO_ISA avx2
#include "kernels_isa.h"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif

/*
 * runtime/dispatch.c: picks the ISA table (isa/<name>.c) the kernels run from, once,
 * by what the CPU supports; FUSEDOPT_SIMD (read by the binding) may force a lower one.
 */
#include <string.h>
#include "internal.h"

/* ------------------------------------------------------------------------- */
/* SIMD dispatch                                                              */
/* ------------------------------------------------------------------------- */

static int cpu_has(const char *isa)
{
#if defined(FO_X86_DISPATCH)
    __builtin_cpu_init();
    if (strcmp(isa, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (strcmp(isa, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
               && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    return strcmp(isa, "baseline") == 0;
}

/* Best first. */
static const fo_isa_kernels *const all_tables[] = {
#if defined(FO_X86_DISPATCH)
    &fo_kernels_avx512,
    &fo_kernels_avx2,
#endif
    &fo_kernels_baseline,
};
#define FO_N_TABLES (sizeof(all_tables) / sizeof(all_tables[0]))

static const fo_isa_kernels *active = NULL;

const fo_isa_kernels *fo_active_kernels(void)
{
    size_t k;
    if (active == NULL) {
        for (k = 0; k < FO_N_TABLES; k++) {
            if (cpu_has(all_tables[k]->name)) {
                active = all_tables[k];
                break;
            }
        }
    }
    return active;
}

const char *fo_simd_path(void) { return fo_active_kernels()->name; }

const char *fo_simd_supported(void)
{
    static char names[64];
    size_t k;
    names[0] = '\0';
    for (k = 0; k < FO_N_TABLES; k++) {
        if (cpu_has(all_tables[k]->name)) {
            if (names[0] != '\0') strcat(names, " ");
            strcat(names, all_tables[k]->name);
        }
    }
    return names;
}

int fo_set_simd_path(const char *name)
{
    size_t k;
    for (k = 0; k < FO_N_TABLES; k++) {
        if (strcmp(all_tables[k]->name, name) == 0) {
            if (!cpu_has(name)) return -2;
            active = all_tables[k];
            return 0;
        }
    }
    return -1;
}

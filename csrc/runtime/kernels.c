/*
 * runtime/kernels.c: the metadata of every kernels.def row, and the entry points
 * that read it.
 */
#include <math.h>
#include <string.h>
#include "internal.h"
#include "fusedopt_algorithms.h"   /* every algorithms/<name>.h, written by setup.py */

#define FO_MAX2(a, b) ((a) > (b) ? (a) : (b))
#define KERNEL(alg, ps, gs, ss)                                                         \
    [FO_KERNEL_##alg##_##ps##_##gs##_##ss] = {                                          \
        #alg "_" #ps "_" #gs "_" #ss, #alg, FO_STORAGE_##ps##_NAME, FO_STORAGE_##gs##_NAME, \
        FO_STORAGE_##ss##_NAME,                                                          \
        fo_inputs_##alg, fo_counters_##alg, fo_slots_##alg, fo_slot_shapes_##alg,        \
        fo_n_fields_##alg, fo_n_slots_##alg, FO_N_REDUCED_##alg,                         \
        (int64_t)(sizeof(fo_##alg##_hyper) / sizeof(double)),                            \
        FO_MAX2(FO_STORAGE_##ps##_BLOCK, FO_STORAGE_##ss##_BLOCK),                        \
        fo_prepare_##alg, fo_slots_needed_##alg},
const fo_kernel_meta fo_kernel_table[FO_N_KERNELS] = {
#include "kernels.def"
};
#undef KERNEL

static const fo_kernel_meta *meta(int kernel)
{
    return kernel >= 0 && kernel < FO_N_KERNELS ? &fo_kernel_table[kernel] : NULL;
}

const char *fo_kernel_name(int k) { return meta(k) ? meta(k)->name : ""; }
const char *fo_kernel_algorithm(int k) { return meta(k) ? meta(k)->algorithm : ""; }
const char *fo_kernel_param_storage(int k) { return meta(k) ? meta(k)->param_storage : ""; }
const char *fo_kernel_grad_storage(int k) { return meta(k) ? meta(k)->grad_storage : ""; }
const char *fo_kernel_state_storage(int k) { return meta(k) ? meta(k)->state_storage : ""; }
const char *fo_kernel_inputs(int k) { return meta(k) ? meta(k)->inputs : ""; }
const char *fo_kernel_counters(int k) { return meta(k) ? meta(k)->counters : ""; }
const char *fo_kernel_slots(int k) { return meta(k) ? meta(k)->slots : ""; }
const char *fo_kernel_slot_shapes(int k) { return meta(k) ? meta(k)->slot_shapes : ""; }
int fo_kernel_n_fields(int k) { return meta(k) ? meta(k)->n_fields : 0; }
int64_t fo_kernel_hyper_doubles(int k) { return meta(k) ? meta(k)->hyper_doubles : 0; }
int64_t fo_kernel_block(int k) { return meta(k) ? meta(k)->block : 1; }
int fo_kernel_n_reduced(int k) { return meta(k) ? meta(k)->n_reduced : 0; }

unsigned fo_kernel_slots_needed(int k, const double *hyper)
{
    return meta(k) ? meta(k)->slots_needed(hyper) : 0u;
}

int fo_kernel_prepare(int k, double *hyper)
{
    const fo_kernel_meta *m = meta(k);
    double probe = 0.0;
    int64_t j;
    if (!m) return 0;
    m->prepare(hyper);
    for (j = FO_COMMON_FIELDS; j < m->hyper_doubles; j++) probe += hyper[j] * 0.0;   /* NaN iff one is not finite */
    return probe == 0.0;
}

int fo_storage_id(const char *name)
{
#define FO_STORAGE_MATCH(s) if (strcmp(name, FO_STORAGE_##s##_NAME) == 0) return FO_STORAGE_ID_##s;
    FO_STATS_STORAGES(FO_STORAGE_MATCH)
#undef FO_STORAGE_MATCH
    return -1;
}

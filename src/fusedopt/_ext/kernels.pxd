# The C API of csrc/fusedopt.h, declared once for the binding.
from libc.stdint cimport int32_t, int64_t

cdef extern from "fusedopt.h" nogil:
    enum: FO_MAX_SLOTS
    enum: FO_MAX_THREADS
    enum: FO_N_KERNELS
    enum: FO_COMMON_FIELDS
    enum: FO_QUANTIZATION_BLOCK
    ctypedef struct fo_tensor_list:
        int64_t n_tensors
        void **param
        const void **grad
        void **slot[FO_MAX_SLOTS]
        float **scale[FO_MAX_SLOTS]
        float **master
        const int64_t *index
        const int64_t *size
        const int64_t *offset
        const int32_t *hyper
        double *reduced
        const int64_t *rows
        const int64_t *cols
        const int64_t *first

    const char *fo_kernel_name(int kernel)
    const char *fo_kernel_algorithm(int kernel)
    const char *fo_kernel_param_storage(int kernel)
    const char *fo_kernel_grad_storage(int kernel)
    const char *fo_kernel_state_storage(int kernel)
    const char *fo_kernel_inputs(int kernel)
    const char *fo_kernel_counters(int kernel)
    const char *fo_kernel_slots(int kernel)
    const char *fo_kernel_slot_shapes(int kernel)
    int fo_kernel_n_fields(int kernel)
    int64_t fo_kernel_hyper_doubles(int kernel)
    int64_t fo_kernel_block(int kernel)
    int fo_kernel_n_reduced(int kernel)
    unsigned fo_kernel_slots_needed(int kernel, const double *hyper)
    int fo_kernel_prepare(int kernel, double *hyper)
    int fo_step(int kernel, const fo_tensor_list *tensors, double *hyper, int64_t n_hyper,
                int n_threads)
    int fo_step_prepared(int kernel, const fo_tensor_list *tensors, double *hyper, int64_t n_hyper,
                         int n_threads)

    int64_t fo_merge_rows(int storage, const void *indices, int index_bytes, int64_t n, const void *values,
                          int64_t width, int64_t n_table_rows, int copy_all, int64_t *out_rows, int64_t *grad_at,
                          void *out_values, int64_t *bad_row, int n_threads)
    ctypedef struct fo_row_grads:
        const int64_t *const *row
        const int64_t *const *grad_at
        const void *const *values
        const int64_t *n_rows
        const int64_t *width
    int fo_step_rows(int kernel, const fo_tensor_list *tensors, const fo_row_grads *rows, double *hyper,
                     int64_t n_hyper, int n_threads)

    ctypedef enum fo_operand:
        FO_OPERAND_GRAD
        FO_OPERAND_PARAM
    ctypedef struct fo_grad_stats:
        double sum_sq
        int non_finite
    int fo_storage_id(const char *name)
    int fo_stats(int storage, const fo_tensor_list *tensors, fo_operand operand, int n_threads,
                 fo_grad_stats *out, double *per_tensor_sum_sq)

    int64_t fo_parallel_min_elements()
    void fo_set_parallel_min_elements(int64_t n)
    void fo_set_num_threads(int n)
    int fo_get_num_threads()
    int fo_openmp_enabled()
    int fo_forked_child()
    long fo_fork_generation()
    void fo_runtime_init()
    const char *fo_simd_path()
    const char *fo_simd_supported()
    int fo_set_simd_path(const char *name)

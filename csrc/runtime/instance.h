/*
 * runtime/instance.h: the storage macros an algorithm's range function is
 * written with, for one kernels.def row.  The generated fusedopt_instances.h
 * defines FO_ALGORITHM, FO_PARAM_STORAGE, FO_STATE_STORAGE (kernels.def names)
 * and includes this, then the algorithm header with FO_INSTANTIATING set, then
 * runtime/instance_end.h.  The including ISA file defines FO_ISA.
 *
 *   FO_C                      compute type (the param storage's)
 *   FO_P, FO_S                element types of the parameter / state in memory
 *   FO_LOAD_P(ptr, k), FO_STORE_P(ptr, k, x)   parameter element <-> FO_C
 *   FO_LOAD_G(ptr, k)                          gradient element -> FO_C
 *   FO_LOAD_S(ptr, k), FO_STORE_S(ptr, k, x)   state element <-> FO_C
 *   FO_SQRT                   square root in FO_C
 *   FO_INSTANCE(x)            x suffixed with the row and the ISA
 */
#define FO_CAT2_(a, b) a##b
#define FO_CAT2(a, b) FO_CAT2_(a, b)
#define FO_CAT3_(a, b, c) a##b##c
#define FO_CAT3(a, b, c) FO_CAT3_(a, b, c)

#define FO_C FO_CAT3(FO_STORAGE_, FO_PARAM_STORAGE, _COMPUTE)
#define FO_P FO_CAT3(FO_STORAGE_, FO_PARAM_STORAGE, _TYPE)
#define FO_S FO_CAT3(FO_STORAGE_, FO_STATE_STORAGE, _TYPE)
#define FO_LOAD_P(ptr, k) ((FO_C)FO_CAT3(FO_STORAGE_, FO_PARAM_STORAGE, _LOAD)(ptr, k))
#define FO_STORE_P(ptr, k, x) FO_CAT3(FO_STORAGE_, FO_PARAM_STORAGE, _STORE)(ptr, k, x)
#define FO_LOAD_G(ptr, k) ((FO_C)FO_CAT3(FO_STORAGE_, FO_PARAM_STORAGE, _LOAD)(ptr, k))
#define FO_LOAD_S(ptr, k) ((FO_C)FO_CAT3(FO_STORAGE_, FO_STATE_STORAGE, _LOAD)(ptr, k))
#define FO_STORE_S(ptr, k, x) FO_CAT3(FO_STORAGE_, FO_STATE_STORAGE, _STORE)(ptr, k, x)
#define FO_SQRT FO_CAT3(FO_STORAGE_, FO_PARAM_STORAGE, _SQRT)
#define FO_INSTANCE(x)                                                                     \
    FO_CAT2(FO_CAT2(FO_CAT3(FO_CAT3(x, _, FO_ALGORITHM), _, FO_PARAM_STORAGE), _),        \
            FO_CAT3(FO_STATE_STORAGE, _, FO_ISA))
#define FO_INSTANTIATING 1

/* runtime/instance_end.h: undoes runtime/instance.h after one kernels.def row. */
#ifndef FO_FACTOR_DEFINED
/* the ISA table's entry for an algorithm without factored slots (never called) */
static void FO_INSTANCE(fo_factor)(fo_factor_phase phase, const fo_tensor_list *t, const fo_factor_unit *unit,
                                   const void *hyper, const fo_factor_work *work, double *col_out,
                                   double *unit_out)
{
    (void)phase, (void)t, (void)unit, (void)hyper, (void)work, (void)col_out, (void)unit_out;
}
#endif
#undef FO_FACTOR_DEFINED
#undef FO_PS
#undef FO_GS
#undef FO_SS
#undef FO_C
#undef FO_P
#undef FO_G
#undef FO_S
#undef FO_SQRT
#undef FO_INSTANCE
#undef FO_ROUNDING_VARIANTS
#undef FO_INSTANTIATING

/* runtime/instance_end.h: undoes runtime/instance.h after one kernels.def row. */
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

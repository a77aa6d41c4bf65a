/* runtime/instance_end.h: undoes runtime/instance.h after one kernels.def row. */
#undef FO_C
#undef FO_P
#undef FO_S
#undef FO_LOAD_P
#undef FO_STORE_P
#undef FO_LOAD_G
#undef FO_LOAD_S
#undef FO_STORE_S
#undef FO_SQRT
#undef FO_INSTANCE
#undef FO_INSTANTIATING

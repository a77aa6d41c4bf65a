/* isa/baseline.c: the kernels for any CPU of the architecture (SSE2 on x86-64). */
#define FO_ISA baseline
#include "isa.h"

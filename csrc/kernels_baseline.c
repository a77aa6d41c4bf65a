/* The loops for the architecture's baseline (SSE2 on x86-64, NEON on aarch64). */
#define FO_ISA baseline
#include "kernels_isa.h"

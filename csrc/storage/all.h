/* storage/all.h: every storage type.  A storage header defines, for its short
 * name S (as used in kernels.def):
 *   FO_STORAGE_S_TYPE      the element type in memory
 *   FO_STORAGE_S_COMPUTE   the type arithmetic runs in (float for 16-bit and 8-bit storage)
 *   FO_STORAGE_S_NAME      the name the binding knows it by (a NumPy dtype, or "8bit")
 *   FO_STORAGE_S_BLOCK     elements per block (spans never split a block)
 *   FO_STORAGE_S_KIND      WIDE (float32/float64: stored as computed), NARROW
 *                          (16-bit: rounded on store) or Q8 (codes + absmax per block)
 *   FO_STORAGE_S_NARROW    1 for 16-bit storage (stochastic rounding applies), else 0
 *   FO_STORAGE_S_SQRT, FO_STORAGE_S_ABS   square root, absolute value in the compute type
 *   FO_STORAGE_S_LOAD(ptr, k), FO_STORAGE_S_STORE(ptr, k, x)
 *                          element k to / from the compute type (not Q8)
 *   FO_STORAGE_S_STORE_SR(ptr, k, x, r)   NARROW only: stochastic rounding with
 *                          the 32 random bits r */
#ifndef FUSEDOPT_STORAGE_ALL_H
#define FUSEDOPT_STORAGE_ALL_H
#include "f32.h"
#include "f64.h"
#include "bf16.h"
#include "f16.h"
#include "q8.h"
#endif

/* storage/all.h: every storage type.  A storage header defines, for its short
 * name S (as used in kernels.def):
 *   FO_STORAGE_S_TYPE      the element type in memory
 *   FO_STORAGE_S_COMPUTE   the type arithmetic runs in (float for 16-bit storage)
 *   FO_STORAGE_S_NAME      the NumPy dtype name
 *   FO_STORAGE_S_BLOCK     elements per block (spans never split a block)
 *   FO_STORAGE_S_SQRT      square root in the compute type
 *   FO_STORAGE_S_LOAD(ptr, k), FO_STORAGE_S_STORE(ptr, k, x)
 *                          element k to / from the compute type */
#ifndef FUSEDOPT_STORAGE_ALL_H
#define FUSEDOPT_STORAGE_ALL_H
#include "f32.h"
#include "f64.h"
#endif

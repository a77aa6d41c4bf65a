/* STREAM-style bandwidth kernels for the fusedopt benchmark (bench/run.py).
 *
 * Compiled at run time with `cc -O3 -fopenmp -shared -fPIC` and called through
 * ctypes.  Every kernel takes its thread count, like the optimizers, and uses a
 * static schedule so each thread touches the pages it initialised (first touch).
 *
 *   copy:   c[i] = a[i]               2 transfers per element
 *   triad:  a[i] = b[i] + s * c[i]    3 transfers
 *   update: a[i] += s * b[i]          3 transfers, in-place read-modify-write:
 *                                     the access pattern of an optimizer step
 */
#include <stdint.h>

void stream_init(double *a, double *b, double *c, int64_t n, int threads)
{
    int64_t i;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (i = 0; i < n; i++) {
        a[i] = 1.0;
        b[i] = 2.0;
        c[i] = 0.5;
    }
}

void stream_copy(double *restrict c, const double *restrict a, int64_t n, int threads)
{
    int64_t i;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (i = 0; i < n; i++) c[i] = a[i];
}

void stream_triad(double *restrict a, const double *restrict b, const double *restrict c, double s,
                  int64_t n, int threads)
{
    int64_t i;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (i = 0; i < n; i++) a[i] = b[i] + s * c[i];
}

void stream_update(double *restrict a, const double *restrict b, double s, int64_t n, int threads)
{
    int64_t i;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (i = 0; i < n; i++) a[i] += s * b[i];
}

/*
 * runtime/threads.c: how many threads a kernel call may use.
 *
 * The count follows omp_get_max_threads() (OMP_NUM_THREADS, threadpoolctl)
 * unless set_num_threads chose one, and is capped at FO_MAX_THREADS: asking the
 * OpenMP runtime for a team of 1e5 threads fails inside it, with no way to report
 * an error.  A process forked from one whose OpenMP team has started cannot use
 * that runtime (libgomp's team waits forever for threads the child does not
 * have), so the kernels run on the calling thread in any forked child: whether
 * some library of the parent started a team of the same runtime cannot be known
 * from here (libgomp is shared), so every fork counts.
 */
#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define FO_HAVE_ATFORK 1
#endif

static int requested_threads = 0;     /* <= 0: follow omp_get_max_threads() */
static volatile int team_started = 0; /* a parallel region has run in this process */
static volatile int forked_child = 0; /* forked after that: stay on one thread */
static volatile long fork_generation = 0; /* forks this process descends from */

void fo_set_num_threads(int n) { requested_threads = n > FO_MAX_THREADS ? FO_MAX_THREADS : n; }

int fo_get_num_threads(void)
{
#ifdef _OPENMP
    int n = requested_threads > 0 ? requested_threads : omp_get_max_threads();
    if (forked_child) return 1;
    if (n < 1) n = 1;
    return n > FO_MAX_THREADS ? FO_MAX_THREADS : n;
#else
    return 1;
#endif
}

/* The team size for a call that asked for `requested` threads; records that a
 * team is about to start. */
int fo_effective_threads(int requested)
{
    int n = requested;
    if (forked_child || n < 1) return 1;
    if (n > FO_MAX_THREADS) n = FO_MAX_THREADS;
    if (n > 1) team_started = 1;
    return n;
}

int fo_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int fo_forked_child(void) { return forked_child; }
long fo_fork_generation(void) { return fork_generation; }

#ifdef FO_HAVE_ATFORK
static void in_child_after_fork(void)
{
    fork_generation++;
    forked_child = 1;
}
#endif

void fo_runtime_init(void)
{
#ifdef FO_HAVE_ATFORK
    static int registered = 0;
    if (!registered) {
        registered = 1;
        pthread_atfork(NULL, NULL, in_child_after_fork);
    }
#endif
}

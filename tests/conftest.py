import numpy as np
import pytest

import fusedopt

DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def _restore_threads():
    """Tests that change the thread count or the SIMD path must not leak it."""
    threads = fusedopt._core.get_num_threads()
    cutoff = fusedopt._core.parallel_min_elements()
    simd = fusedopt._core.simd_path()
    yield
    fusedopt.set_num_threads(None)
    fusedopt._core.set_parallel_min_elements(cutoff)
    fusedopt._core.set_simd_path(simd)
    assert fusedopt._core.get_num_threads() == threads


def trajectory_tolerance(dtype, n_steps, scale):
    """Allowed |kernel - reference| after n_steps on values of magnitude `scale`.

    The reference is fusedopt.slow run on float64 copies (tests/reference.py).
    float64: the kernel and the reference do the same operations in the same
    order, so they agree to the bit in practice; 1e-12 relative leaves room
    for a few ulps per step (a compiler's libm or a changed order).
    float32: the kernel rounds every operation to float32 (eps 1.2e-7) while
    the reference runs in float64 on the same float32 inputs.  Each step rounds
    the parameter once (half an ulp of |p|) and adds an update whose relative
    error is a few ulps of a quantity of size lr << |p|; errors in the moments
    are damped by the betas, not amplified.  So the error grows at most
    linearly in the steps: 2 ulps of the scale per step (the worst case seen
    in the suite uses a fifth of that).
    """
    if dtype == np.float64:
        return 1e-12 * scale
    return n_steps * 2 * np.finfo(np.float32).eps * scale

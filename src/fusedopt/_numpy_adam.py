"""A good pure-NumPy Adam (in-place ufuncs, no temporaries per step beyond two
scratch buffers), the baseline that fusedopt's speed is compared with."""
import numpy as np


class NumPyAdam:
    """Adam over a list of arrays with NumPy ufuncs and ``out=``: ~10 passes over memory.

    Same update rule as :class:`fusedopt.Adam` (bias correction, L2 weight decay).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.params = list(params)
        self.lr, (self.beta1, self.beta2), self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.exp_avg = [np.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [np.zeros_like(p) for p in self.params]
        self.scratch = [np.empty_like(p) for p in self.params]
        self.scratch2 = [np.empty_like(p) for p in self.params]
        self.step_count = 0

    def step(self, grads, lr=None):
        self.step_count += 1
        t = self.step_count
        lr = self.lr if lr is None else lr
        step_size = lr / (1.0 - self.beta1 ** t)
        bias_correction2_sqrt = np.sqrt(1.0 - self.beta2 ** t)
        for p, g, m, v, s, s2 in zip(self.params, grads, self.exp_avg, self.exp_avg_sq,
                                     self.scratch, self.scratch2):
            if self.weight_decay:
                np.multiply(p, self.weight_decay, out=s2)
                np.add(s2, g, out=s2)
                g = s2
            m *= self.beta1                               # m = b1*m + (1-b1)*g
            np.multiply(g, 1.0 - self.beta1, out=s)
            m += s
            v *= self.beta2                               # v = b2*v + (1-b2)*g*g
            np.multiply(g, g, out=s)
            s *= 1.0 - self.beta2
            v += s
            np.sqrt(v, out=s)                             # denom = sqrt(v)/sqrt(bc2) + eps
            s /= bias_correction2_sqrt
            s += self.eps
            np.divide(m, s, out=s)                        # p -= step_size * m / denom
            s *= step_size
            p -= s

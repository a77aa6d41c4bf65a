"""Row-sparse steps in NumPy: the twins of fo_merge_rows and fo_step_rows (csrc/runtime/rows.c)
with csrc/algorithms/sparse_adam.h, and of the row-sparse forms of Adagrad and SGD.

Each step takes the merged rows (:func:`merge_rows`) and updates only those rows
of the parameter and its state, computing in the arrays' dtype in the kernel's
order of operations, as :mod:`fusedopt.slow`'s dense twins do.
"""
import numpy as np

__all__ = ["merge_rows", "sparse_adam_", "sparse_adagrad_", "sparse_sgd_"]


#: FNV-1a over a row's elements (csrc/runtime/rows.c: row_hash)
ROW_HASH_SEED = np.uint64(0xcbf29ce484222325)
ROW_HASH_PRIME = np.uint64(0x100000001b3)


def row_hash(bits):
    """The hash of each row of `bits` (rows x width, unsigned integers of the
    elements' width): FNV-1a over the elements, as fo_merge_rows orders duplicates."""
    h = np.full(bits.shape[0], ROW_HASH_SEED, np.uint64)
    wide = bits.astype(np.uint64)
    for k in range(bits.shape[1]):
        h = (h ^ wide[:, k]) * ROW_HASH_PRIME      # uint64 arithmetic wraps, as in C
    return h


def merge_rows(indices, values):
    """The distinct row numbers, ascending, and each one's row: the sum of its
    duplicates as fo_merge_rows adds them, in the order of the bits of their
    element 0 (read as an unsigned integer of its width), then of their hashes
    (row_hash), then of all their bits, element 0 first (_compensated_sum).

    Returns (rows, merged): int64 of shape (n,), values.dtype of shape (n,) + row shape.
    """
    indices = np.asarray(indices).astype(np.int64)
    values = np.asarray(values)
    n = indices.shape[0]
    flat = values.reshape(n, int(np.prod(values.shape[1:], dtype=np.int64)))
    bits = flat.view(np.dtype(f"u{values.dtype.itemsize}"))
    # lexsort sorts by its last key first: the row number, element 0, the hash, then all the bits
    first = bits[:, 0] if bits.shape[1] else np.zeros(n, bits.dtype)
    keys = tuple(bits[:, k] for k in reversed(range(bits.shape[1]))) + (row_hash(bits), first, indices)
    order = np.lexsort(keys)
    rows, starts = np.unique(indices[order], return_index=True)
    merged = np.empty((len(rows), flat.shape[1]), values.dtype)
    for u, begin in enumerate(starts):
        end = starts[u + 1] if u + 1 < len(starts) else n
        group = order[begin:end]
        if len(group) == 1:
            merged[u] = flat[group[0]]
            continue
        total = _compensated_sum(flat[group].astype(np.float64))
        merged[u] = total if values.dtype == np.float64 else total.astype(np.float32).astype(values.dtype)
    return rows, merged.reshape((len(rows),) + values.shape[1:])


def _compensated_sum(rows):
    """The sum of float64 rows, element-wise in row order, as csrc/runtime/rows.c's
    row_sum: Neumaier's compensated sum of the finite values, infinities counted: NaN
    if a value is NaN or both infinities meet, +-Inf if one meets, the plain sum if
    finite values overflow, else sum + compensation (the plain sum where that is 0)."""
    width = rows.shape[1]
    total, compensation = np.zeros(width), np.zeros(width)
    pos_inf, neg_inf = np.zeros(width, bool), np.zeros(width, bool)
    with np.errstate(invalid="ignore", over="ignore"):
        for j, x in enumerate(rows):
            infinite = np.isinf(x)
            pos_inf |= infinite & (x > 0)
            neg_inf |= infinite & (x < 0)
            t = x if j == 0 else total + x
            if j > 0:
                step = np.where(np.abs(total) >= np.abs(x), (total - t) + x, (x - t) + total)
                compensation = np.where(infinite, compensation, compensation + step)
            total = np.where(infinite, total, t)
        result = np.where(~np.isfinite(total) | (compensation == 0), total, total + compensation)
    result = np.where(neg_inf, -np.inf, result)
    result = np.where(pos_inf, np.inf, result)
    result = np.where(pos_inf & neg_inf, np.nan, result)
    return np.where(np.isnan(total), total, result)


def _rows_of(array, width):
    """A view of `array` (a table, or its state) as rows x width."""
    return array.reshape(array.shape[0], width)


def sparse_adam_(param, rows, merged, exp_avg, exp_avg_sq, *, step, lr, betas=(0.9, 0.999), eps=1e-8,
                 maximize=False, grad_scale=1.0):
    """One SparseAdam step in place (``torch.optim.SparseAdam``) on the merged rows.
    `step` is the array's step count after this step (it advances with or without rows)."""
    beta1, beta2 = betas
    t = param.dtype.type
    width = int(np.prod(param.shape[1:], dtype=np.int64))
    multiplier = -1.0 / grad_scale if maximize else 1.0 / grad_scale
    step_size = lr * np.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
    p, m, v = _rows_of(param, width), _rows_of(exp_avg, width), _rows_of(exp_avg_sq, width)
    g = merged.reshape(len(rows), width) * t(multiplier)
    m_old, v_old = m[rows], v[rows]
    m_new = m_old + (g - m_old) * t(1.0 - beta1)
    v_new = v_old + (g * g - v_old) * t(1.0 - beta2)
    m[rows] = m_new
    v[rows] = v_new
    p[rows] = p[rows] + t(-step_size) * (m_new / (np.sqrt(v_new) + t(eps)))


def sparse_adagrad_(param, rows, merged, state_sum, *, step, lr, lr_decay=0.0, eps=1e-10, maximize=False,
                    grad_scale=1.0):
    """One Adagrad step in place on the merged rows, as torch's sparse path rounds it:
    ``sum += g*g; p += -clr * (g / (sqrt(sum) + eps))``."""
    t = param.dtype.type
    width = int(np.prod(param.shape[1:], dtype=np.int64))
    clr = lr / (1.0 + (step - 1) * lr_decay)
    multiplier = -1.0 / grad_scale if maximize else 1.0 / grad_scale
    p, s = _rows_of(param, width), _rows_of(state_sum, width)
    g = merged.reshape(len(rows), width) * t(multiplier)
    total = s[rows] + g * g
    s[rows] = total
    p[rows] = p[rows] + t(-clr) * (g / (np.sqrt(total) + t(eps)))


def sparse_sgd_(param, rows, merged, *, lr, maximize=False, grad_scale=1.0):
    """One SGD step (no momentum, no weight decay) in place on the merged rows: ``p -= lr*g``."""
    t = param.dtype.type
    width = int(np.prod(param.shape[1:], dtype=np.int64))
    multiplier = -1.0 / grad_scale if maximize else 1.0 / grad_scale
    p = _rows_of(param, width)
    g = merged.reshape(len(rows), width) * t(multiplier)
    p[rows] = p[rows] - t(lr) * g

"""Data-parallel and ZeRO stage-1 optimizers over MPI (mpi4py).

Every rank runs the same model on its own batch; the optimizers here make the
ranks agree:

- :class:`DistributedOptimizer` (data parallel): each step sums the ranks'
  gradients with one in-place ``Allreduce`` per dtype over a flat buffer, then
  runs the wrapped optimizer's fused step with the sum divided by the number of
  ranks inside the kernel (``grad_scale``): every rank holds every parameter and
  all of the optimizer state, and ends each step with the same parameters.
- :class:`ZeroRedundancyOptimizer` (ZeRO-1): the parameters are partitioned
  evenly by elements over the ranks (an array may span two ranks); each rank
  keeps optimizer state for its shard only.  A step is a ``Reduce_scatter`` of
  the gradients (each rank receives the sum of its shard), the fused step of
  the shard, and an ``Allgather`` of the parameters in place.

Buffers go to MPI zero-copy through mpi4py's upper-case methods; nothing is
pickled.  Errors that a rank can detect alone (a gradient of the wrong shape,
hyperparameters that differ between ranks) are agreed on with one small
``Allgather`` before any collective that could wait forever: every rank raises.

``import fusedopt`` does not import mpi4py; this module does (``pip install
"fusedopt[mpi]"`` installs mpi4py and the MPICH wheel, which has ``mpiexec``).
"""
import math
import numbers
import zlib

try:
    from mpi4py import MPI
except ImportError as exc:   # pragma: no cover - exercised where mpi4py is absent
    raise ImportError('fusedopt.distributed needs mpi4py and an MPI library: pip install "fusedopt[mpi]" '
                      "(or: pip install mpi4py mpich)") from exc

import ml_dtypes
import numpy as np

from . import _core
from ._memory import aligned_zeros
from .optim._base import GradientSafety, Optimizer, _grad_scale

__all__ = ["DistributedOptimizer", "ZeroRedundancyOptimizer", "partition"]

#: 8-bit state is quantized in blocks of this many elements: shard boundaries inside
#: an array fall on multiples of it, so a shard's blocks are the whole array's
ALIGN = _core.QUANTIZATION_BLOCK
_SIXTEEN_BIT = (np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16))


def _world(comm):
    return MPI.COMM_WORLD if comm is None else comm


def _fingerprint(value):
    """A 63-bit number that differs between ranks when `value`'s repr does."""
    text = repr(value).encode()
    return (zlib.crc32(text) << 31) ^ zlib.adler32(text)


def _agree(comm, error, fingerprint=0, what="the step", after="no rank went on"):
    """One Allgather of (failed, fingerprint) per rank: raise on every rank if any
    rank failed (its own error where it has one) or the fingerprints differ."""
    mine = np.array([1 if error is not None else 0, fingerprint], dtype=np.int64)
    everyone = np.empty((comm.Get_size(), 2), dtype=np.int64)
    comm.Allgather(mine, everyone)
    failed = [int(r) for r in np.flatnonzero(everyone[:, 0])]
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"{what} failed on rank{'s' if len(failed) > 1 else ''} "
                           f"{', '.join(map(str, failed))} (see its error); {after}")
    if np.any(everyone[:, 1] != everyone[0, 1]):
        raise ValueError(f"{what}: the ranks disagree on the parameters' shapes and dtypes, the "
                         f"gradients' dtypes, the hyperparameters, the options (grad_scale, max_grad_norm, "
                         f"skip_nonfinite, storage) or the step counts (every rank must build the same "
                         f"optimizer and schedule, and step it alike)")


def _group_fingerprint(optimizer):
    """What every rank's optimizer must agree on: each group's hyperparameters
    (schedules evaluated at this step) and the layout of its arrays."""
    lrs = optimizer.current_lrs()
    groups = []
    for group, lr in zip(optimizer.param_groups, lrs):
        values = sorted((k, repr(v)) for k, v in group.items() if k not in ("params", "lr"))
        groups.append((lr, values))
    options = (optimizer.max_grad_norm, optimizer.skip_nonfinite, optimizer.grad_scale,
               sorted(optimizer._storage.items()), getattr(optimizer, "train_mode", None))
    return _fingerprint((groups, optimizer.step_count, options))


def _reduce_dtype(dtype):
    """The dtype gradients of `dtype` are summed in (MPI has no 16-bit floats)."""
    return np.dtype(np.float32) if dtype in _SIXTEEN_BIT else np.dtype(dtype)


def _bits(array):
    """The array's bytes as something MPI can copy: 16-bit floats as uint16."""
    return array.view(np.uint16) if array.dtype in _SIXTEEN_BIT else array


def _ranks_scale(grad_scale, comm):
    """A step's grad_scale, checked as the optimizers check it, and so that the scale the
    kernels get (times the number of ranks, which sum rather than average) stays finite."""
    grad_scale = _grad_scale(grad_scale)
    if not math.isfinite(grad_scale * comm.Get_size()):
        raise ValueError(f"grad_scale={grad_scale!r} times {comm.Get_size()} ranks overflows")
    return grad_scale


def _check_grads(grads, shapes_dtypes, what="grads"):
    """ValueError/TypeError unless `grads` are one ndarray per parameter, of its shape,
    of its dtype (or a narrower allowed one), C-contiguous."""
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"{what} must be a list of arrays, got {type(grads).__name__}")
    if len(grads) != len(shapes_dtypes):
        raise ValueError(f"{what} has {len(grads)} arrays, the optimizer has {len(shapes_dtypes)} parameters")
    for i, (g, (shape, dtype)) in enumerate(zip(grads, shapes_dtypes)):
        if not isinstance(g, np.ndarray) or isinstance(g, np.ma.MaskedArray):
            raise TypeError(f"{what}[{i}] must be an ndarray (dense, not masked), got {type(g).__name__}")
        if g.shape != shape:
            raise ValueError(f"{what}[{i}] has shape {g.shape}, its parameter {shape}")
        if g.dtype != dtype and not _core.grad_dtype_allowed(dtype, g.dtype):
            raise TypeError(f"{what}[{i}] is {g.dtype}, its parameter {dtype}")
        if not g.flags.c_contiguous:
            raise ValueError(f"{what}[{i}] is not C-contiguous")


class DistributedOptimizer:
    """Data parallel: average each rank's gradients, then step the wrapped optimizer.

    Parameters
    ----------
    optimizer : fusedopt.Optimizer
        Built over this rank's copy of the parameters (the same shapes, dtypes and
        hyperparameters on every rank).
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    broadcast : bool, default True
        Copy rank 0's parameters to every rank at construction, so that all start
        alike (as torch's DistributedDataParallel does).

    Notes
    -----
    ``step(grads)`` sums the gradients over the ranks with one in-place
    ``Allreduce`` per dtype over a flat buffer (16-bit gradients summed in
    float32, then rounded once), and steps the optimizer with
    ``grad_scale`` multiplied by the number of ranks, so the kernels divide the
    sum: the mean, in the same pass.  The optimizer's clipping and non-finite
    skip then see the averaged gradients, so every rank decides alike.
    """

    def __init__(self, optimizer, comm=None, broadcast=True):
        self.comm = _world(comm)
        self.optimizer = optimizer
        self._buffers = {}
        error, layout = None, []
        try:
            if not isinstance(optimizer, Optimizer):
                raise TypeError(f"optimizer must be a fusedopt optimizer, got {type(optimizer).__name__}")
            layout = self._current_layout()
        except Exception as exc:   # every rank raises, none waits in a collective
            error = exc
        _agree(self.comm, error, _fingerprint(layout), "DistributedOptimizer()")
        if broadcast:
            self.broadcast_parameters()

    def _current_layout(self):
        return [(p.shape, p.dtype) for p in self.optimizer._all_params()]

    def broadcast_parameters(self, root=0):
        """Copy `root`'s parameters to every rank (one Bcast per parameter dtype)."""
        params = self.optimizer._all_params()
        for dtype in sorted({p.dtype for p in params}, key=str):
            group = [p for p in params if p.dtype == dtype]
            flat = np.concatenate([p.reshape(-1) for p in group]) if group else np.empty(0, dtype)
            self.comm.Bcast(_bits(flat), root=root)
            start = 0
            for p in group:
                p.reshape(-1)[...] = flat[start:start + p.size]
                start += p.size

    def _flat(self, dtype, size):
        buffer = self._buffers.get(dtype)
        if buffer is None or buffer.size != size:
            buffer = self._buffers[dtype] = aligned_zeros(size, dtype)
        return buffer

    def step(self, grads, *, grad_scale=None):
        """Average `grads` (one array per parameter, this rank's) over the ranks and
        step.  Returns what the optimizer's step returns (False: skipped, on every rank)."""
        error = None
        try:
            grads = list(grads) if not isinstance(grads, (list, tuple)) else grads
            layout = self._current_layout()
            _check_grads(grads, layout)
            scale = _ranks_scale(self.optimizer.grad_scale if grad_scale is None else grad_scale, self.comm)
            fingerprint = _fingerprint((layout, [g.dtype.str for g in grads], float(scale),
                                        _group_fingerprint(self.optimizer)))
        except Exception as exc:
            error, fingerprint = exc, 0
        _agree(self.comm, error, fingerprint, "DistributedOptimizer.step")
        if self.comm.Get_size() == 1:   # nothing to average
            return self.optimizer.step(grads, grad_scale=float(scale))
        # one flat buffer per dtype the gradients are summed in
        by_dtype = {}
        for i, (g, (_, dtype)) in enumerate(zip(grads, layout)):
            by_dtype.setdefault(_reduce_dtype(g.dtype), []).append(i)
        averaged = [None] * len(grads)
        for dtype, indices in by_dtype.items():
            flat = self._flat(dtype, sum(grads[i].size for i in indices))
            start = 0
            for i in indices:
                np.copyto(flat[start:start + grads[i].size], grads[i].reshape(-1), casting="unsafe")
                start += grads[i].size
            self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            start = 0
            for i in indices:
                view = flat[start:start + grads[i].size].reshape(grads[i].shape)
                start += grads[i].size
                # 16-bit gradients: the float32 sum rounded once to their dtype
                averaged[i] = view if grads[i].dtype == dtype else view.astype(grads[i].dtype)
        return self.optimizer.step(averaged, grad_scale=float(scale) * self.comm.Get_size())

    # what the wrapped optimizer has, for schedulers and checkpoints
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict):
        self.optimizer.load_state_dict(state_dict)

    def __getattr__(self, name):
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    #: options a step reads from the wrapped optimizer: setting one on the wrapper sets it there
    _FORWARDED = frozenset({"skip_nonfinite", "max_grad_norm", "grad_scale"})

    def __setattr__(self, name, value):
        # dp.max_grad_norm = 1.0 sets the optimizer's (through its checks); anything else
        # (dp.step = wrapper, a subclass's attributes) stays on the wrapper
        if name in self._FORWARDED:
            setattr(self.optimizer, name, value)
        else:
            object.__setattr__(self, name, value)


def partition(sizes, n_ranks, splittable=True, min_piece=1, align=ALIGN):
    """Boundaries ``b[0] = 0 <= b[1] <= ... <= b[n_ranks] = sum(sizes)`` splitting
    the concatenation of arrays of `sizes` elements into `n_ranks` shards, each as
    close to ``sum(sizes) / n_ranks`` elements as the rules allow: a boundary falls
    between two arrays, or inside a splittable array at a multiple of `align`
    elements from its start that leaves at least `min_piece` elements on both sides.
    """
    sizes = [int(s) for s in sizes]
    starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
    total = starts[-1]
    bounds = [0]
    for r in range(1, n_ranks):
        target = total * r / n_ranks
        t = max(0, min(len(sizes) - 1, int(np.searchsorted(starts, target, side="right")) - 1)) if sizes else 0
        candidates = [starts[t], starts[t + 1]] if sizes else [0]
        if sizes and splittable:
            lo = -(-min_piece // align) * align
            if bounds[-1] > starts[t]:   # the array's previous piece must keep min_piece too
                lo = max(lo, -(-(bounds[-1] - starts[t] + min_piece) // align) * align)
            hi = ((sizes[t] - min_piece) // align) * align
            if lo <= hi:
                inside = round((target - starts[t]) / align) * align
                candidates.append(starts[t] + min(max(inside, lo), hi))
        candidates = [c for c in candidates if c >= bounds[-1]] or [bounds[-1]]
        bounds.append(min(candidates, key=lambda c: (abs(c - target), c)))
    bounds.append(total)
    return bounds


class _Piece:
    """The part of parameter `index` (elements [start, stop) of it) a rank steps."""

    __slots__ = ("index", "group", "start", "stop", "offset")

    def __init__(self, index, group, start, stop, offset):
        self.index, self.group, self.start, self.stop = index, group, start, stop
        self.offset = offset   # of the piece's first element in the concatenation

    @property
    def size(self):
        return self.stop - self.start


class ZeroRedundancyOptimizer(GradientSafety):
    """ZeRO stage 1: optimizer state sharded over the ranks, parameters replicated.

    Parameters
    ----------
    params : list of ndarray, list of dict, or FlatParams
        This rank's copy of the parameters (the same on every rank), or param
        groups.  Best: one :class:`fusedopt.FlatParams` (its ``param`` buffer is
        gathered in place, with no copies; step it with ``[flat.grad]``).
    optimizer_class : type
        A fusedopt optimizer class (Adam, AdamW, SGD, ..., LAMB, Adafactor, Muon).
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    **defaults
        The optimizer's arguments (``lr``, ..., ``state_dtype``, ``max_grad_norm``,
        ``skip_nonfinite``, ``grad_scale``).

    Notes
    -----
    The parameters are partitioned group by group in one concatenation, evenly
    by elements (:func:`partition`): an array may span two ranks, split at a
    multiple of 256 elements from its start, so 8-bit state blocks are those of
    the whole array (with ``state_dtype="8bit"`` a piece keeps at least
    ``min_8bit_size`` elements, so each array's state is 8-bit exactly where a
    single process's would be).  Algorithms whose update reads a whole array
    (LAMB's norms, Adafactor's factors, Muon's orthogonalization) are
    partitioned by whole arrays instead.

    A step: ``Reduce_scatter`` of the gradients (sum), the fused step of the
    local shard with the sum divided by the number of ranks inside the kernel,
    ``Allgather`` of the parameters in place.  Clipping (``max_grad_norm``) and
    the non-finite skip (``skip_nonfinite``) take one more 16-byte ``Allreduce``
    (the shard's sum of squares in float64, a non-finite flag): every rank clips
    by the global norm and skips alike.  With two ranks the result equals, bit
    for bit, a single process stepping the summed gradients with ``grad_scale``
    2 (the sum of two numbers has one rounding); with clipping the norm is summed in another
    order (within a few ulps); with stochastic rounding (bfloat16 state) the random
    bits are keyed by the piece's element index, so they differ from one process's.

    Collective: the constructor, ``step``, ``load_state_dict`` (and
    ``fusedopt.load``), ``consolidate_state_dict``, ``train``/``eval`` and
    ``broadcast_parameters`` are called by every rank alike.
    """

    def __init__(self, params, optimizer_class, comm=None, broadcast=True, **defaults):
        from .flat import FlatParams

        self.comm = _world(comm)
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.optimizer_class = optimizer_class
        options = {name: defaults.pop(name, default) for name, default in
                   (("skip_nonfinite", False), ("max_grad_norm", None), ("grad_scale", 1.0))}
        self.skipped_steps = 0
        self.last_grad_norm = None
        self._flat = None
        error, fingerprint = None, 0
        try:
            if not (isinstance(optimizer_class, type) and issubclass(optimizer_class, Optimizer)):
                raise TypeError(f"optimizer_class must be a fusedopt optimizer class, got {optimizer_class!r}")
            for name, value in options.items():   # checked by GradientSafety's setters
                setattr(self, name, value)
            if not optimizer_class.spec.dense:
                raise ValueError(f"{optimizer_class.__name__} takes row-sparse gradients only; "
                                 f"ZeroRedundancyOptimizer steps dense ones")
            if isinstance(params, FlatParams):
                self._flat = params
                params = [params.param]
            groups = self._groups(params)
            self._params = [p for group in groups for p in group["params"]]
            dtypes = {p.dtype for p in self._params}
            if len(dtypes) > 1:
                raise ValueError(f"ZeroRedundancyOptimizer takes parameters of one dtype, got "
                                 f"{sorted(map(str, dtypes))} (one optimizer per dtype)")
            self.dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
            if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
                raise ValueError(f"ZeroRedundancyOptimizer takes float32 or float64 parameters, got "
                                 f"{self.dtype} (16-bit parameters: DistributedOptimizer)")
            for i, p in enumerate(self._params):
                _core.check_array(p, f"params[{i}]", True)
            if len({id(p) for p in self._params}) != len(self._params):
                raise ValueError("the same array appears twice in params")
            sizes = [p.size for p in self._params]
            min_piece = max(1, defaults.get("min_8bit_size", 4096)) if defaults.get("state_dtype") == "8bit" else 1
            self.bounds = partition(sizes, self.world_size, optimizer_class.elementwise, min_piece)
            self._pieces = self._pieces_of(self.rank, groups)
            local_groups = [dict({k: v for k, v in group.items() if k != "params"}, params=[])
                            for group in groups]
            for piece in self._pieces:
                local_groups[piece.group]["params"].append(self._view(piece))
            self.optimizer = optimizer_class(local_groups, **defaults)
            self._groups_layout = [(len(group["params"]), sorted(k for k in group if k != "params"))
                                   for group in groups]
            fingerprint = _fingerprint(([(p.shape, p.dtype.str) for p in self._params], self._groups_layout,
                                        optimizer_class.__name__, sorted(defaults.items(), key=str),
                                        self.max_grad_norm, self.skip_nonfinite, self.grad_scale))
        except Exception as exc:   # every rank raises, none waits in a collective
            error = exc
        _agree(self.comm, error, fingerprint, "ZeroRedundancyOptimizer()")
        self._starts = np.concatenate([[0], np.cumsum([p.size for p in self._params], dtype=np.int64)]).tolist()
        self._shard_size = self.bounds[self.rank + 1] - self.bounds[self.rank]
        self._counts = np.diff(self.bounds).astype(np.int64)
        self._grad_shard = aligned_zeros(self._shard_size, _reduce_dtype(self.dtype))
        self._send = None      # the packed gradients (unless they are a FlatParams buffer)
        self._staging = None   # the packed parameters for the Allgather (ditto)
        if broadcast and self.world_size > 1:
            self.broadcast_parameters()

    def broadcast_parameters(self, root=0):
        """Copy `root`'s parameters to every rank (collective)."""
        buffer = self._flat.param if self._flat is not None else np.concatenate(
            [p.reshape(-1) for p in self._params] or [np.empty(0, self.dtype)])
        self.comm.Bcast(buffer, root=root)
        if self._flat is None:
            for p, start in zip(self._params, self._starts):
                p.reshape(-1)[...] = buffer[start:start + p.size]

    def add_param_group(self, param_group):
        raise TypeError("a ZeroRedundancyOptimizer's partition is fixed at construction: build a new one "
                        "with every group (consolidate_state_dict() carries the state over)")

    @staticmethod
    def _groups(params):
        if isinstance(params, np.ndarray):
            raise TypeError("params must be a list of arrays, a list of param-group dicts or a FlatParams")
        params = list(params)
        if params and all(isinstance(p, dict) for p in params):
            return [dict(group, params=list(group["params"])) for group in params]
        if any(isinstance(p, dict) for p in params):
            raise TypeError("params must be all arrays or all param-group dicts, not a mix")
        return [{"params": params}]

    def _pieces_of(self, rank, groups):
        lo, hi = self.bounds[rank], self.bounds[rank + 1]
        pieces, offset, index = [], 0, 0
        last = rank == self.world_size - 1
        for g, group in enumerate(groups):
            for p in group["params"]:
                start, stop = max(lo - offset, 0), min(hi - offset, p.size)
                if start < stop or (p.size == 0 and (lo <= offset < hi or (last and offset == hi))):
                    pieces.append(_Piece(index, g, start, max(start, stop), offset + start))
                offset += p.size
                index += 1
        return pieces

    def _view(self, piece):
        """What the local optimizer steps for `piece`: a 1-D view of the array's
        elements, or (algorithms that read whole arrays) the array itself."""
        p = self._params[piece.index]
        if not self.optimizer_class.elementwise:
            return p
        return p.reshape(-1)[piece.start:piece.stop]

    # -- stepping -------------------------------------------------------------

    @property
    def param_groups(self):
        """This rank's groups: the hyperparameters (edit them alike on every rank) and its pieces."""
        return self.optimizer.param_groups

    @property
    def step_count(self):
        return self.optimizer.step_count

    def step(self, grads, *, grad_scale=None):
        """One step from this rank's gradients (one array per parameter, or ``[flat.grad]``
        with a FlatParams); every rank ends with the same parameters.  Returns False
        (on every rank) if the step was skipped for a non-finite gradient."""
        error, fingerprint = None, 0
        try:
            layout = [(p.shape, p.dtype) for p in self._params]
            _check_grads(grads, layout)
            if any(g.dtype != self.dtype for g in grads):
                raise TypeError(f"ZeroRedundancyOptimizer's gradients must be {self.dtype}, as the parameters")
            scale = _ranks_scale(self.grad_scale if grad_scale is None else grad_scale, self.comm)
            fingerprint = _fingerprint((_group_fingerprint(self.optimizer), float(scale), self.max_grad_norm,
                                        bool(self.skip_nonfinite)))
        except Exception as exc:
            error = exc
        _agree(self.comm, error, fingerprint, "ZeroRedundancyOptimizer.step")
        send = self._pack_grads(grads)
        if self.world_size == 1:   # the whole sum is this rank's gradient: no copy
            shard = send[:self._shard_size]
        else:
            shard = self._grad_shard
            self.comm.Reduce_scatter(send, shard, self._counts.tolist(), op=MPI.SUM)
        n = self.world_size
        step_scale = float(scale) * n
        if self.skip_nonfinite or self.max_grad_norm is not None:
            sums = np.array([_sum_of_squares(shard), 0.0])
            sums[1] = 0.0 if math.isfinite(sums[0]) else float(not np.isfinite(shard).all())
            if sums[1] == 0.0 and not math.isfinite(sums[0]):
                sums[0] = math.inf   # finite values whose squares overflow float64
            self.comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
            if sums[1] > 0:
                self.last_grad_norm = math.nan
                if self.skip_nonfinite:
                    self.skipped_steps += 1
                    return False
            else:
                # finite gradients whose squares overflow: every rank sees the same sum
                self.last_grad_norm = (math.sqrt(sums[0]) / step_scale if math.isfinite(sums[0])
                                       else self._scaled_norm(shard, step_scale))
                if self.max_grad_norm is not None:
                    clip = min(1.0, self.max_grad_norm / (self.last_grad_norm + 1e-6))
                    if not (clip > 0.0 and math.isfinite(step_scale / clip)):
                        # every rank has the same values: all raise, none waits in a collective
                        raise ValueError(f"the gradients' global norm ({self.last_grad_norm!r}) is too "
                                         f"large to clip to max_grad_norm={self.max_grad_norm!r}; "
                                         f"nothing was stepped")
                    step_scale /= clip
        error = None
        try:
            self.optimizer.step(self._shard_grads(shard), grad_scale=step_scale)
        except Exception as exc:   # the other ranks must not wait in the Allgather
            error = exc
        _agree(self.comm, error, 0, "ZeroRedundancyOptimizer.step (the local update)",
               after="the ranks that stepped their shard now differ from it: restore a checkpoint")
        if self.world_size > 1:   # one rank stepped every parameter in place
            self._gather_params()
        return True

    def _scaled_norm(self, shard, divisor):
        """The global L2 norm, divided by `divisor`, of finite gradients whose sum of
        squares overflows float64: scaled by the largest magnitude (collective)."""
        biggest = np.array([_max_abs(shard)])
        self.comm.Allreduce(MPI.IN_PLACE, biggest, op=MPI.MAX)
        scaled = np.array([_sum_of_squares(shard, scale=float(biggest[0]))])
        self.comm.Allreduce(MPI.IN_PLACE, scaled, op=MPI.SUM)
        return float(biggest[0]) / divisor * math.sqrt(scaled[0])

    def _pack_grads(self, grads):
        if self._flat is not None and len(grads) == 1 and grads[0] is self._flat.grad:
            return grads[0]   # a FlatParams gradient buffer: already one flat buffer
        if self._send is None:
            self._send = aligned_zeros(self._starts[-1], self.dtype)
        for g, start in zip(grads, self._starts):
            self._send[start:start + g.size] = g.reshape(-1)
        return self._send

    def _shard_grads(self, shard):
        """The shard's gradients, piece by piece (views of the received shard)."""
        lo = self.bounds[self.rank]
        out = []
        for piece in self._pieces:
            view = shard[piece.offset - lo:piece.offset - lo + piece.size]
            p = self._params[piece.index]
            out.append(view.reshape(p.shape) if not self.optimizer_class.elementwise else view)
        return out

    def _gather_params(self):
        counts = self._counts.tolist()
        displacements = self.bounds[:-1]
        if self._flat is not None:
            buffer = self._flat.param
        else:
            if self._staging is None:
                self._staging = aligned_zeros(self._starts[-1], self.dtype)
            buffer = self._staging
            for piece in self._pieces:
                p = self._params[piece.index]
                buffer[piece.offset:piece.offset + piece.size] = p.reshape(-1)[piece.start:piece.stop]
        self.comm.Allgatherv(MPI.IN_PLACE, [_bits(buffer), (counts, displacements)])
        if self._flat is None:
            for p, start in zip(self._params, self._starts):
                p.reshape(-1)[...] = buffer[start:start + p.size]

    # -- state --------------------------------------------------------------------

    def state_nbytes(self, per_element=False):
        """Bytes of optimizer state this rank holds (its shard)."""
        return self.optimizer.state_nbytes(per_element)

    def state_dict(self):
        """This rank's shard: its optimizer's state dict, with the rank, the world size
        and the partition recorded (``fusedopt.save(zero, path)`` writes it; a
        checkpoint per rank).  See :meth:`consolidate_state_dict` for one of the
        whole model."""
        sd = self.optimizer.state_dict()
        sd["distributed"] = {"rank": self.rank, "world_size": self.world_size, "bounds": list(self.bounds),
                             "skipped_steps": self.skipped_steps}
        return sd

    def load_state_dict(self, state_dict):
        """Load this rank's shard (from :meth:`state_dict`, same world size and
        partition) or a whole-model state dict (from :meth:`consolidate_state_dict`
        or a single-process optimizer of the same class), on any world size.
        Collective: every rank calls it, and every rank raises if one fails."""
        error = None
        try:
            if not isinstance(state_dict, dict):
                raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
            info = state_dict.get("distributed")
            if info is not None:
                expected = {"rank": self.rank, "world_size": self.world_size, "bounds": list(self.bounds)}
                for key, value in expected.items():
                    saved = info.get(key) if isinstance(info, dict) else None
                    if saved != value:
                        raise ValueError(f"the checkpoint is {key}={saved!r}, this optimizer {key}={value!r} "
                                         f"(load a consolidated state dict to change the world size)")
                local = {k: v for k, v in state_dict.items() if k != "distributed"}
                skipped = info.get("skipped_steps", 0)
            else:
                local, skipped = self._shard_of(state_dict), state_dict.get("skipped_steps", 0)
            backup = self.optimizer.state_dict()   # put back if another rank fails to load
            self.optimizer.load_state_dict(local)
        except Exception as exc:   # every rank raises, none waits in a collective
            error = exc if not isinstance(exc, KeyError) else ValueError(f"state_dict is missing {exc}")
        fingerprint = 0 if error is not None else _fingerprint((self.optimizer.step_count, skipped))
        try:
            _agree(self.comm, error, fingerprint, "ZeroRedundancyOptimizer.load_state_dict",
                   after="no rank loaded it")
        except (RuntimeError, ValueError):
            if error is None:
                self.optimizer.load_state_dict(backup)
            raise
        self.skipped_steps = int(skipped)

    def _load_checkpoint(self, path):
        """fusedopt.load(zero, path): this rank's file, read and loaded collectively
        (a missing or unreadable file on one rank raises on every rank)."""
        from . import checkpoint

        try:
            state_dict = checkpoint.read(self, path)
        except Exception as exc:
            _agree(self.comm, exc, 0, "fusedopt.load", after="no rank loaded its checkpoint")
        self.load_state_dict(state_dict)

    def _slot_range(self, name, piece):
        """Elements [a, b) of a flattened whole-array state buffer that belong to `piece`."""
        if name.endswith("_absmax"):
            return piece.start // ALIGN, -(-piece.stop // ALIGN)
        return piece.start, piece.stop

    def _shard_of(self, whole):
        """The local optimizer's state dict cut from a whole-model one."""
        for key in ("state", "param_groups"):
            if key not in whole:
                raise ValueError(f"state_dict is missing {key!r}")
        groups = whole["param_groups"]
        if not isinstance(groups, (list, tuple)) or len(groups) != len(self.optimizer.param_groups):
            raise ValueError("state_dict has another number of param groups")
        local = {k: v for k, v in whole.items() if k not in ("state", "param_groups")}
        local["param_groups"] = []
        index = 0
        for g, saved in enumerate(groups):
            n_local = sum(1 for piece in self._pieces if piece.group == g)
            local["param_groups"].append(dict({k: v for k, v in saved.items() if k != "params"},
                                              params=list(range(index, index + n_local))))
            index += n_local
        for g, saved in enumerate(groups):
            if not isinstance(saved, dict) or len(saved.get("params", ())) != self._groups_layout[g][0]:
                raise ValueError(f"state_dict param_groups[{g}] does not have this optimizer's "
                                 f"{self._groups_layout[g][0]} parameters")
        state = whole["state"]
        entries = {}
        for key, entry in state.items():
            index = int(key)
            if not 0 <= index < len(self._params) or not isinstance(entry, dict):
                raise ValueError(f"state_dict['state'] has an entry {key!r} for no parameter")
            entries[index] = entry
            p = self._params[index]
            for name, value in entry.items():
                if isinstance(value, np.ndarray) and self.optimizer_class.elementwise:
                    expected = -(-p.size // ALIGN) if name.endswith("_absmax") else p.size
                    if value.size != expected or (not name.endswith("_absmax") and value.shape != p.shape):
                        raise ValueError(f"state_dict['state'][{key!r}][{name!r}] has shape {value.shape}, "
                                         f"parameter {index} {p.shape}")
        local_state = {}
        for j, piece in enumerate(self._pieces):
            entry = entries.get(piece.index)
            if entry is None:
                continue
            cut = {}
            for name, value in entry.items():
                if isinstance(value, np.ndarray) and self.optimizer_class.elementwise:
                    a, b = self._slot_range(name, piece)
                    value = np.ascontiguousarray(value.reshape(-1)[a:b])
                cut[name] = value
            local_state[j] = cut
        local["state"] = local_state
        return local

    def consolidate_state_dict(self, root=0):
        """The whole model's state dict, on `root` (None on the other ranks): what a
        single-process ``optimizer_class`` over all the parameters loads.  Collective."""
        if isinstance(root, bool) or not isinstance(root, numbers.Integral) or not 0 <= root < self.world_size:
            raise ValueError(f"root must be a rank in [0, {self.world_size}), got {root!r}")
        sd = self.optimizer.state_dict()
        state = sd["state"]
        spec = self.optimizer.spec
        # buffers by "name|dtype" (an array under min_8bit_size keeps float32 state, the others 8-bit)
        def key(name, value):
            return f"{name}|{self._DTYPES.index(value.dtype)}"

        keys = self._agreed_names(sorted({key(name, v) for entry in state.values() for name, v in entry.items()
                                          if isinstance(v, np.ndarray)}))
        # per piece: its counters, then which buffers it has; then each buffer's pieces, flat
        rows = np.array([[float(state.get(j, {}).get(c, 0)) for c in spec.counters]
                         + [float(any(isinstance(v, np.ndarray) and key(n, v) == k
                                      for n, v in state.get(j, {}).items())) for k in keys]
                         for j in range(len(self._pieces))], dtype=np.float64)
        rows = self._gather_flat(rows.reshape(-1), root)[0]
        flats = {}
        for k in keys:
            name, dtype = k.split("|")[0], self._DTYPES[int(k.split("|")[1])]
            parts = [state[j][name].reshape(-1) for j in range(len(self._pieces))
                     if j in state and isinstance(state[j].get(name), np.ndarray) and key(name, state[j][name]) == k]
            flats[k] = self._gather_flat(np.concatenate(parts) if parts else np.empty(0, dtype), root)
        names = keys
        if self.rank != root:
            return None
        rows = rows.reshape(-1, len(spec.counters) + len(names))
        cursor = {(name, r): 0 for name in names for r in range(self.world_size)}
        chunks = {}
        whole_state = {}
        for (rank, _, piece), row in zip(self._all_pieces(), rows):
            p = self._params[piece.index]
            entry = whole_state.setdefault(piece.index, {})
            if not entry:   # the first piece's counters (every piece of an array has the same)
                entry.update({c: (float(v) if c in spec.real_counters else int(v))
                              for c, v in zip(spec.counters, row)})
            for k, present in zip(names, row[len(spec.counters):]):
                if not present:
                    continue
                name = k.split("|")[0]
                if self.optimizer_class.elementwise:
                    a, b = self._slot_range(name, piece)
                    size = b - a
                else:
                    size = math.prod(self._whole_buffer_shape(name, p))
                flat, offsets = flats[k]
                start = offsets[rank] + cursor[(k, rank)]
                cursor[(k, rank)] += size
                chunks.setdefault((piece.index, name), []).append(flat[start:start + size])
        for (index, name), parts in chunks.items():
            value = np.concatenate(parts)
            whole_state[index][name] = value.reshape(self._whole_buffer_shape(name, self._params[index]))
        result = {k: v for k, v in sd.items() if k not in ("state", "param_groups")}
        result["state"] = whole_state
        result["skipped_steps"] = self.skipped_steps
        result["param_groups"] = []
        start = 0
        for g, (n, _) in enumerate(self._groups_layout):
            result["param_groups"].append(dict({k: v for k, v in sd["param_groups"][g].items() if k != "params"},
                                               params=list(range(start, start + n))))
            start += n
        return result

    def _all_pieces(self):
        """(rank, local index, piece) of every rank's pieces, in rank order."""
        groups, index = [], 0
        for n, _ in self._groups_layout:
            groups.append({"params": self._params[index:index + n]})
            index += n
        return [(rank, j, piece) for rank in range(self.world_size)
                for j, piece in enumerate(self._pieces_of(rank, groups))]

    def _whole_buffer_shape(self, name, p):
        """The shape of state buffer `name` of the whole array p (in a single process)."""
        kernel, master = self.optimizer._layout(p)
        buffers = self.optimizer._buffers(p, kernel, master, range(len(self.optimizer.spec.slots)))
        return buffers[name][0]

    def _agreed_names(self, names):
        """The union over the ranks of the state buffer names (a rank may hold no piece)."""
        text = np.frombuffer("".join(name + "," for name in names).encode(), dtype=np.uint8)
        sizes = np.empty(self.world_size, dtype=np.int64)
        self.comm.Allgather(np.array([text.size], dtype=np.int64), sizes)
        everyone = np.empty(int(sizes.sum()), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
        self.comm.Allgatherv(text, [everyone, (sizes.tolist(), offsets)])
        return sorted({part for part in everyone.tobytes().decode().split(",") if part})

    _DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.uint8), np.dtype(ml_dtypes.bfloat16),
               np.dtype(np.float16))

    def _gather_flat(self, flat, root):
        """Gatherv of each rank's flat array to root: (everything, offsets) there, (None, offsets) elsewhere."""
        sizes = np.empty(self.world_size, dtype=np.int64)
        self.comm.Allgather(np.array([flat.size], dtype=np.int64), sizes)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist()
        out = np.empty(int(sizes.sum()), dtype=flat.dtype) if self.rank == root else None
        self.comm.Gatherv(_bits(flat), [_bits(out), (sizes.tolist(), offsets)] if out is not None else None,
                          root=root)
        return out, offsets

    def __getattr__(self, name):
        # the local optimizer's (attach_scheduler, current_lrs, ...): its groups hold the
        # hyperparameters, which every rank edits alike
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    # -- schedule-free ------------------------------------------------------------

    def train(self):
        """Schedule-free optimizers: switch every rank's pieces to the training point
        (collective: every rank calls it)."""
        self.optimizer.train()
        self._gather_params()

    def eval(self):
        """Schedule-free optimizers: switch to the averaged point, to evaluate or save
        (collective: every rank calls it)."""
        self.optimizer.eval()
        self._gather_params()


def _sum_of_squares(x, chunk=1 << 20, scale=1.0):
    """Sum of squares of a 1-D array divided by `scale`, in float64, in chunks (a bounded
    temporary).  Overflow gives inf, silently: a warning turned into an error on one
    rank (-W error) would leave the others waiting in the next collective."""
    total = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, x.size, chunk):
            c = x[start:start + chunk].astype(np.float64) / scale
            total += float(np.dot(c, c))
    return total


def _max_abs(x, chunk=1 << 20):
    """The largest magnitude in a 1-D array, as a float, in chunks (a bounded temporary)."""
    return max((float(np.max(np.abs(x[start:start + chunk]))) for start in range(0, x.size, chunk)),
               default=0.0)

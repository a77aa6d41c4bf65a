"""Crash-safe optimizer checkpoints in NumPy's .npz format, without pickle.

The file holds the state buffers as arrays and everything else (hyperparameters,
step counts, plateau state) as a JSON document stored as bytes, so loading an
untrusted file cannot execute code.  Saving writes a temporary file in the same
folder, fsyncs it and renames it over the target: a crash at any moment leaves
either the old checkpoint or the new one, never a torn file.
"""
import json
import math
import os
import tempfile
import zipfile
import zlib

import ml_dtypes
import numpy as np

__all__ = ["save", "load", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_META = "fusedopt_meta.json"


def _to_json(obj):
    """JSON-safe copy: tuples become lists, NumPy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        raise TypeError("arrays are stored as npz entries, not in the JSON metadata")
    return obj


#: dtypes npz cannot hold, saved as the bits of the same size
_BIT_VIEWS = {"bfloat16": (np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint16))}


def save(optimizer, path):
    """Write `optimizer`'s state to `path` (.npz) atomically.

    Parameters
    ----------
    optimizer : fusedopt.Optimizer
    path : str or os.PathLike
    """
    path = os.fspath(path)
    state_dict = optimizer.state_dict()
    arrays, state_meta, bit_views = {}, {}, {}
    for index, entry in state_dict["state"].items():
        # counters in the JSON document, buffers as npz entries
        state_meta[str(index)] = {name: value for name, value in entry.items()
                                  if not isinstance(value, np.ndarray)}
        for name, value in entry.items():
            if isinstance(value, np.ndarray):
                key = f"state/{index}/{name}"
                if value.dtype.name in _BIT_VIEWS:     # npz has no bfloat16: its bits, as uint16
                    bit_views[key] = value.dtype.name
                    value = value.view(_BIT_VIEWS[value.dtype.name][1])
                arrays[key] = value
    meta = {key: value for key, value in state_dict.items() if key != "state"}
    meta["state"] = state_meta
    meta["bit_views"] = bit_views
    meta["format_version"] = FORMAT_VERSION
    arrays[_META] = np.frombuffer(json.dumps(_to_json(meta)).encode(), dtype=np.uint8)

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fusedopt-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    """Make the rename itself durable (POSIX; a no-op where folders can't be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(optimizer, path):
    """Restore `optimizer` from a checkpoint written by :func:`save`.

    Checks the format version, the optimizer class, the hyperparameter names,
    and every buffer's shape and dtype against the optimizer's parameters;
    any mismatch raises ValueError before anything changes.
    """
    collective = getattr(optimizer, "_load_checkpoint", None)
    if collective is not None:   # fusedopt.distributed: every rank reads, all raise alike
        return collective(path)
    optimizer.load_state_dict(read(optimizer, path))


#: deflate expands at most about 1032-fold
_MAX_DEFLATE_RATIO = 1032


def _check_member_sizes(archive, path):
    """ValueError unless each .npy member holds the bytes its header declares, and the
    sizes the archive states are ones the file can hold: a corrupt header or size must
    not make np.load allocate an array the file does not hold."""
    file_size = os.path.getsize(path)
    for info in archive.infolist():
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
        if info.header_offset + info.compress_size > file_size or info.file_size > ratio * info.compress_size:
            raise ValueError(f"member {info.filename!r} states {info.file_size} bytes, "
                             f"{info.compress_size} compressed, which the file cannot hold")
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(member)
            needed = member.tell() + math.prod(shape) * dtype.itemsize
        if needed > info.file_size:
            raise ValueError(f"member {info.filename!r} declares shape {shape} of {dtype} "
                             f"({needed} bytes), but holds {info.file_size}")


def read(optimizer, path):
    """The state dict a checkpoint holds, checked against `optimizer`'s groups (not loaded)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:   # a plain .npy file would be read whole by np.load
            if not zipfile.is_zipfile(file):
                raise ValueError("it is not an .npz archive")
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array, not an .npz archive")
        with loaded as npz:
            _check_member_sizes(npz.zip, path)
            files = npz.files
            meta = json.loads(npz[_META].tobytes().decode()) if _META in files else None
            arrays = {name: npz[name] for name in files if name != _META}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, AttributeError, UnicodeDecodeError,
            RecursionError) as exc:
        # ValueError: numpy took it for a pickle, or bad JSON; zlib.error: a corrupt compressed
        # member; RecursionError: absurdly nested JSON
        raise ValueError(f"{path} is not a readable fusedopt checkpoint: {exc}") from None
    if meta is None:
        raise ValueError(f"{path} is not a fusedopt checkpoint (no {_META})")
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: its {_META} is not a table")
    version = meta.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} has checkpoint format {version!r}; this fusedopt reads "
                         f"{FORMAT_VERSION}")
    for g, (saved, group) in enumerate(zip(meta.get("param_groups", []), optimizer.param_groups)):
        if not isinstance(saved, dict):
            raise ValueError(f"{path}: param_groups[{g}] is not a table")
        if set(saved) != set(group):
            raise ValueError(f"{path}: param_groups[{g}] has hyperparameters {sorted(saved)}, "
                             f"the optimizer has {sorted(group)}")
        if "betas" in saved:
            if not isinstance(saved["betas"], list):
                raise ValueError(f"{path}: param_groups[{g}]['betas'] is {saved['betas']!r}, not a pair")
            saved["betas"] = tuple(saved["betas"])
    state = {}
    saved_state = meta.pop("state", None)
    if not isinstance(saved_state, dict):
        raise ValueError(f"{path}: the checkpoint has no state table")
    for index, entry in saved_state.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: state entry {index!r} is not a table of counters")
        state[str(index)] = dict(entry)
    bit_views = meta.pop("bit_views", {})
    if not isinstance(bit_views, dict):
        raise ValueError(f"{path}: its bit_views is not a table")
    for name, value in arrays.items():
        if name in bit_views:
            view = bit_views[name]
            dtype, bits = _BIT_VIEWS.get(view, (None, None)) if isinstance(view, str) else (None, None)
            if dtype is None or value.dtype != bits:
                raise ValueError(f"{path}: array {name!r} is {value.dtype}, not the bits of {view!r}")
            value = value.view(dtype)
        parts = name.split("/", 2)
        if len(parts) != 3 or parts[0] != "state":
            raise ValueError(f"{path}: unexpected array {name!r} in the checkpoint")
        state.setdefault(parts[1], {})[parts[2]] = value
    meta["state"] = state
    return meta

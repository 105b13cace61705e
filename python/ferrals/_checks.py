"""Argument checks: bad input becomes a Python exception that says what is wrong."""

import numbers

import numpy as np
import scipy.sparse


class IdOutOfRangeError(IndexError, ValueError):
    """A user or item id outside the model (an IndexError, as numpy raises, and a ValueError)."""


def csr_matrix(m, name):
    """The CSR matrix `m` in canonical form (sorted, no repeated pairs), float32.

    Copies only what must change: the values when they are not float32, the
    structure when it is not canonical. Non-CSR input is a TypeError, values
    that are not finite a ValueError naming the first bad entry.
    """
    if not scipy.sparse.issparse(m):
        raise TypeError(
            f"{name} must be a scipy.sparse CSR matrix (users x items), got {type(m).__name__}; "
            "build one with scipy.sparse.csr_matrix(...)"
        )
    if m.format != "csr":
        raise TypeError(f"{name} must be a CSR matrix, got {m.format.upper()}; convert it with .tocsr()")
    if m.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got shape {m.shape}")
    if not (np.issubdtype(m.dtype, np.number) or m.dtype == np.bool_) or np.issubdtype(m.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {m.dtype}")
    if not m.has_canonical_format:
        m = m.copy()
        m.sum_duplicates()
    data = m.data
    if data.dtype != np.float32:
        with np.errstate(over="ignore", invalid="ignore"):
            data = data.astype(np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        row = int(np.searchsorted(m.indptr, first, side="right") - 1)
        raise ValueError(
            f"{name}[{row}, {int(m.indices[first])}] = {float(m.data[first])!r} is not a finite float32 value"
        )
    indptr = np.ascontiguousarray(m.indptr, dtype=np.int64)
    if m.shape[1] > np.iinfo(np.int32).max:
        raise ValueError(f"{name} has {m.shape[1]} columns; at most {np.iinfo(np.int32).max} are supported")
    indices = np.ascontiguousarray(m.indices, dtype=np.int32)
    return m.shape, indptr, indices, np.ascontiguousarray(data)


def non_negative(data, name):
    if data.size and data.min() < 0:
        raise ValueError(
            f"{name} has negative values (min {data.min()}): implicit feedback takes counts or "
            "confidences >= 0"
        )


def ids(value, n, what):
    """`value` (an int or a 1-d array of ints) checked against `n` rows.

    Returns (array of int64, is_scalar).
    """
    scalar = np.isscalar(value) or (isinstance(value, np.ndarray) and value.ndim == 0)
    if scalar:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
            raise TypeError(f"{what} must be an int or an array of ints, got {type(value).__name__}")
        arr = np.asarray([int(value)], dtype=np.int64)
    else:
        arr = np.asarray(value)
        if arr.ndim != 1:
            raise ValueError(f"{what} must be an int or a 1-d array of ints, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"{what} must hold ints, got dtype {arr.dtype}")
        arr = arr.astype(np.int64, copy=False)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= n:
            bad = lo if lo < 0 else hi
            raise IdOutOfRangeError(f"{what} {bad} is out of range: the model has {n} (ids 0..{n - 1})")
    return arr, scalar


def positive_int(value, name, low=1, high=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        upper = f" and <= {high}" if high is not None else ""
        raise ValueError(f"{name} must be >= {low}{upper}, got {value}")
    return int(value)


def finite_float(value, name, low=0.0, high=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if not np.isfinite(v) or v < low or (high is not None and v > high):
        upper = f" and <= {high}" if high is not None else ""
        raise ValueError(f"{name} must be finite, >= {low}{upper}, got {value}")
    return v


def choice(value, name, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def factor_matrix(value, name, rows=None, k=None):
    """A 2-d float32 C-contiguous copy-free view of `value` where possible."""
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-dimensional, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name} must hold floats, got dtype {arr.dtype}")
    if (rows is not None and arr.shape[0] != rows) or (k is not None and arr.shape[1] != k):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({rows}, {k})")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has NaN or infinite values")
    return arr

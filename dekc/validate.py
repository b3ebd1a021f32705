"""One validation layer for public arguments: one function per kind of value.

Every function returns the value in the form the numerical code wants (a float, an int, a
float64 array) or raises :class:`~dekc.errors.InputError` naming the argument, the value it got
and the accepted range. The kernel runtime, the baselines, the scikit-learn adapter, the plots
and the command line all use these, so the same value gets the same answer everywhere.

Values that are JAX tracers (under ``jit`` or ``grad``) cannot be inspected; they pass through
with only their dtype checked (no complex numbers).

Numerical ranges enforced here:

* **Scales.** Input moments ``c(x, x)``, squared input norms ``|x̃|²`` and diagonal kernel values
  must be 0 or have magnitude in ``[SCALE_MIN, SCALE_MAX] = [1e-150, 1e150]``: every product of
  two of them is then a normal float64, so no entry underflows to zero or overflows. Outside
  it :class:`~dekc.errors.ScaleError` says which quantity left the range and how to rescale.
* **Positive semi-definiteness** of a user's input kernel ``c``: accepted when
  ``c + PSD_TOLERANCE · max_i c_ii · I`` has a Cholesky factor, i.e. when its smallest eigenvalue
  is above ``−1e-9 · max_i c_ii`` (rounding in a genuine kernel matrix of any practical size stays
  far inside this).
* **Memory.** Results are allocated only after an estimate of their size is compared with the
  memory the process may still use (available RAM, and the address-space or cgroup limit when one
  is set); see :func:`check_memory`.
"""

from __future__ import annotations

import math
import numbers
import os
import resource
from pathlib import Path

import numpy as np

from .errors import InputError, MemoryBudgetError, ScaleError

SCALE_MIN = 1e-150
SCALE_MAX = 1e150
PSD_TOLERANCE = 1e-9
#: the most iterations a T-step kernel may ask for (the fixed point is ``steps=None``)
MAX_STEPS = 1_000_000


def is_traced(*values) -> bool:
    """Whether any value is a JAX tracer (inside ``jit``/``grad``)."""
    from ._jax import jax

    return any(isinstance(v, jax.core.Tracer) for v in values)


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def real(value, name: str, *, positive: bool = False, nonnegative: bool = False, what: str = "") -> float:
    """A finite real scalar (``positive``: ``> 0``; ``nonnegative``: ``>= 0``) as a Python float.

    Accepts Python and numpy real numbers and 0-d real arrays (numpy or concrete JAX); refuses
    booleans, strings, ``None``, complex numbers (even with a zero imaginary part), arrays with
    more than one element, NaN and infinities.
    """
    kind = (
        "positive finite number" if positive else "non-negative finite number" if nonnegative else "finite real number"
    )
    where = f"{what}: " if what else ""

    def fail(extra=""):
        return InputError(f"{where}{name} must be a {kind}{extra}, got {_describe(value)}")

    if isinstance(value, (bool, np.bool_, str, bytes)) or value is None:
        raise fail()
    if isinstance(value, numbers.Number) and not isinstance(value, numbers.Real):
        raise fail(" (complex numbers are not accepted)")
    if not isinstance(value, numbers.Real):
        dtype = getattr(value, "dtype", None)
        shape = getattr(value, "shape", None)
        if dtype is None or shape is None:
            raise fail()
        if np.issubdtype(np.dtype(dtype), np.complexfloating):
            raise fail(" (complex numbers are not accepted)")
        if not (np.issubdtype(np.dtype(dtype), np.floating) or np.issubdtype(np.dtype(dtype), np.integer)):
            raise fail()
        if tuple(shape) != ():
            raise fail(f" (a scalar, not an array of shape {tuple(shape)})")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise fail() from None
    if not math.isfinite(number) or (positive and number <= 0) or (nonnegative and number < 0):
        raise fail()
    return number


def real_or_traced(value, name: str, *, positive: bool = False, nonnegative: bool = False, what: str = ""):
    """:func:`real`, except that a JAX tracer passes through (its dtype must be real)."""
    if is_traced(value):
        if np.issubdtype(np.dtype(value.dtype), np.complexfloating) or np.ndim(value) != 0:
            raise InputError(
                f"{what + ': ' if what else ''}{name} must be a real scalar, got a traced value of "
                f"shape {np.shape(value)} and dtype {value.dtype}"
            )
        return value
    return real(value, name, positive=positive, nonnegative=nonnegative, what=what)


def count(value, name: str, *, minimum: int = 0, maximum: int | None = None, what: str = "") -> int:
    """A whole number in ``[minimum, maximum]`` (``bool`` is not a number here)."""
    where = f"{what}: " if what else ""
    bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise InputError(f"{where}{name} must be a whole number {bounds}, got {_describe(value)}")
    number = int(value)
    if number < minimum or (maximum is not None and number > maximum):
        raise InputError(f"{where}{name} must be a whole number {bounds}, got {number}")
    return number


def choice(value, name: str, options: tuple[str, ...], *, what: str = "") -> str:
    """One of the strings ``options``."""
    if not isinstance(value, str) or value not in options:
        where = f"{what}: " if what else ""
        raise InputError(f"{where}{name} must be one of {', '.join(repr(o) for o in options)}, got {_describe(value)}")
    return value


def _as_real_array(value, name: str) -> np.ndarray:
    """A float64 numpy array from array-like input, refusing what would be silently wrong."""
    if value is None or isinstance(value, (str, bytes)):
        raise InputError(f"{name} must be an array of numbers, got {_describe(value)}")
    if hasattr(value, "tocsr") or hasattr(value, "todense"):
        raise InputError(
            f"{name} is a sparse matrix ({type(value).__name__}); pass a dense array, e.g. {name}.toarray()"
        )
    dtype = getattr(value, "dtype", None)
    if dtype is not None and np.issubdtype(np.dtype(dtype), np.complexfloating):
        raise InputError(
            f"{name} has complex values (dtype {dtype}); dekc kernels take real inputs: pass the real "
            "part explicitly if that is what you mean"
        )
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{name} is not a rectangular array of numbers ({str(exc).splitlines()[0][:120]})") from None
    if np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{name} has complex values; dekc kernels take real inputs")
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        if (
            array.dtype == object
            and array.size
            and all(
                isinstance(v, (numbers.Real, np.number)) and not isinstance(v, (bool, np.bool_, complex))
                for v in array.reshape(-1)
            )
        ):
            array = array.astype(np.float64)
        else:
            raise InputError(
                f"{name} must contain real numbers, got an array of dtype {array.dtype}"
                + (" (ragged rows or non-numeric entries)" if array.dtype == object else "")
            )
    if array.dtype == np.bool_:
        raise InputError(f"{name} is a boolean array; convert it to numbers explicitly (e.g. {name}.astype(float))")
    try:
        return array.astype(np.float64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(f"{name} cannot be converted to float64 ({exc})") from None


def matrix(X, name: str):
    """Inputs as a ``(n, p)`` float64 array (a vector is ``n`` inputs of dimension 1); JAX tracers
    are kept (as float64 JAX arrays)."""
    from ._jax import jnp

    if is_traced(X):
        if np.issubdtype(np.dtype(X.dtype), np.complexfloating):
            raise InputError(f"{name} has complex values; dekc kernels take real inputs")
        X = jnp.asarray(X, dtype=jnp.float64)
    else:
        X = _as_real_array(X, name)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty (n, p) array of inputs, got shape {tuple(X.shape)}")
    if isinstance(X, np.ndarray) and not np.all(np.isfinite(X)):
        row, col = np.argwhere(~np.isfinite(X))[0]
        raise InputError(
            f"{name} contains NaN or infinite values ({name}[{row}, {col}] = {X[row, col]}); remove or "
            "impute them first"
        )
    return X


def square_matrix(value, name: str, n: int | None = None) -> np.ndarray:
    """A finite real ``(n, n)`` array."""
    array = _as_real_array(value, name)
    if (
        array.ndim != 2
        or array.shape[0] != array.shape[1]
        or array.shape[0] == 0
        or (n is not None and array.shape[0] != n)
    ):
        want = f"({n}, {n})" if n is not None else "(n, n) (square, non-empty)"
        raise InputError(f"{name} must have shape {want}, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values")
    return array


def vector(value, name: str, n: int) -> np.ndarray:
    """A finite real ``(n,)`` array."""
    array = _as_real_array(value, name)
    if array.shape != (n,):
        raise InputError(f"{name} must have shape ({n},), got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name} contains NaN or infinite values")
    return array


#: rows per block of the O(n²) checks of an input kernel (memory O(block · n))
_CHECK_ROWS = 512


def input_moments(c, mu, check_psd: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A user's input kernel ``c`` ``(n, n)`` (symmetric, positive semi-definite) and mean ``mu``
    ``(n,)`` with ``mu_i² <= c_ii`` (Jensen: ``c = s² E[f f']``, ``mu = s E[f]``).

    ``check_psd`` False replaces the test of the whole matrix (a Cholesky factorisation, O(n³)
    time and a copy of ``c``) by that of every pair, ``c_ij² <= c_ii c_jj`` (what each entry's
    Gaussian expectation needs; O(n²) time, O(n) extra memory)."""
    c = square_matrix(c, "c")
    n = c.shape[0]
    mu = vector(mu, "mu", n)
    scale = float(np.max(np.abs(c)))
    _check_symmetric(c)
    d = np.diagonal(c)
    if np.any(d < 0):
        k = int(np.argmin(d))
        raise InputError(f"c is not positive semi-definite: c[{k}, {k}] = {d[k]!r} < 0")
    if check_psd:
        check_psd_matrix(c, "c")
    else:
        _check_pairs(c, d)
    if np.any(mu**2 > d * (1 + 1e-12) + 1e-300 * (scale > 0)):
        k = int(np.argmax(mu**2 - d))
        raise InputError(
            f"mu[{k}]^2 = {mu[k] ** 2!r} exceeds c[{k}, {k}] = {d[k]!r}: c = s^2 E[f f'] and "
            "mu = s E[f] need mu^2 <= c (Jensen)"
        )
    return c, mu


def _check_symmetric(c: np.ndarray) -> None:
    """Refuse ``c`` unless ``|c_ij − c_ji| <= 1e-12 |c_ji|`` everywhere (by blocks of rows against
    the same columns: no transposed copy of the matrix)."""
    n = c.shape[0]
    for r0 in range(0, n, _CHECK_ROWS):
        r1 = min(r0 + _CHECK_ROWS, n)
        rows, cols = c[r0:r1, r0:], c[r0:, r0:r1].T
        bad = np.abs(rows - cols) > 1e-300 + 1e-12 * np.abs(cols)
        if bad.any():
            i, j = np.unravel_index(int(np.argmax(bad)), bad.shape)
            i, j = int(i) + r0, int(j) + r0
            raise InputError(
                f"c must be symmetric (an input kernel): c[{i}, {j}] = {float(c[i, j])!r} but c[{j}, {i}] = {float(c[j, i])!r}"
            )


def _check_pairs(c: np.ndarray, d: np.ndarray) -> None:
    """Refuse ``c`` where a pair breaks ``c_ij² <= c_ii c_jj`` by more than the tolerance of the
    whole-matrix test (:data:`PSD_TOLERANCE` of the largest diagonal value)."""
    n, slack = c.shape[0], PSD_TOLERANCE * float(np.max(d))
    root = np.sqrt(d)
    for r0 in range(0, n, _CHECK_ROWS):
        r1 = min(r0 + _CHECK_ROWS, n)
        bad = np.abs(c[r0:r1]) > np.outer(root[r0:r1], root) + slack
        if bad.any():
            i, j = np.unravel_index(int(np.argmax(bad)), bad.shape)
            i, j = int(i) + r0, int(j)
            raise InputError(
                f"c is not positive semi-definite: c[{i}, {j}] = {float(c[i, j])!r} exceeds √(c[{i}, {i}] c[{j}, {j}]) "
                f"= {float(root[i] * root[j])!r} (Cauchy–Schwarz); an input kernel must be PSD (a Gram matrix of features)"
            )


def check_psd_matrix(c: np.ndarray, name: str) -> None:
    """Refuse a symmetric ``c`` whose smallest eigenvalue is below ``−PSD_TOLERANCE · max c_ii``."""
    top = float(np.max(np.diagonal(c)))
    if top == 0:
        if np.any(c != 0):
            raise InputError(
                f"{name} is not positive semi-definite: its diagonal is 0 but an off-diagonal entry is not"
            )
        return
    shifted = c / top + PSD_TOLERANCE * np.eye(c.shape[0])
    try:
        np.linalg.cholesky(shifted)
    except np.linalg.LinAlgError:
        smallest = float(np.linalg.eigvalsh(c / top)[0]) * top if c.shape[0] <= 4000 else None
        detail = (
            f"its smallest eigenvalue is {smallest:.3g}" if smallest is not None else "it has a negative eigenvalue"
        )
        raise InputError(
            f"{name} is not positive semi-definite: {detail}, below -{PSD_TOLERANCE:g} x max diagonal "
            f"({top:.3g}); an input kernel must be PSD (a Gram matrix of features)"
        ) from None


def check_scale(values, name: str, *, what: str, advice: str) -> None:
    """Every non-zero ``|value|`` in ``[SCALE_MIN, SCALE_MAX]``; otherwise :class:`ScaleError`."""
    v = np.abs(np.asarray(values, dtype=np.float64)).reshape(-1)
    if v.size == 0:
        return
    bad = (v != 0) & ((v < SCALE_MIN) | (v > SCALE_MAX) | ~np.isfinite(v))
    if bad.any():
        k = int(np.argmax(bad))
        side = "above" if not v[k] < SCALE_MAX else "below"
        raise ScaleError(
            f"{what}: {name} = {v[k]:.3g} (entry {k}) is {side} the range [{SCALE_MIN:g}, {SCALE_MAX:g}] "
            f"in which dekc's float64 arithmetic is validated; {advice}"
        )


# -- memory -------------------------------------------------------------------------------------------


def _meminfo_available() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return math.inf


def _own_usage(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def _cgroup_available() -> float:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return math.inf
        used = float(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return float(limit) - used
    except (OSError, ValueError):
        return math.inf


def available_memory() -> float:
    """Bytes this process may still allocate: the least of the available RAM, the address-space
    limit (``ulimit -v``) less what the process has mapped, and the cgroup limit less its usage."""
    limits = [_meminfo_available(), _cgroup_available()]
    for which, field in ((resource.RLIMIT_AS, "VmSize:"), (resource.RLIMIT_DATA, "VmData:")):
        try:
            soft, _ = resource.getrlimit(which)
        except (ValueError, OSError):
            continue
        if soft != resource.RLIM_INFINITY:
            limits.append(soft - _own_usage(field))
    return max(0.0, min(limits))


def _size(nbytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} bytes"


def check_memory(nbytes: float, what: str, advice: str) -> None:
    """Raise :class:`MemoryBudgetError` when ``nbytes`` (the estimated peak) exceeds what the
    process may still allocate."""
    free = available_memory()
    if nbytes > free:
        raise MemoryBudgetError(
            f"{what} needs about {_size(nbytes)} but only {_size(free)} of memory is available "
            f"to this process; {advice}"
        )

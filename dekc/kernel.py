"""The DEKer runtime: :class:`Kernel`, a compiled kernel that computes Gram matrices.

A Gram matrix is a set of independent scalar problems: the diagonal ``a = D(a)`` for each input,
then each off-diagonal entry ``p = G(p; a, b, c, μ, μ')`` with the input moments ``c``, ``μ`` of
:mod:`dekc.moments`. They are solved vectorised, in fixed-size chunks (memory O(n²) for the
result plus O(chunk)), by :mod:`dekc.solver`: the fixed point (``steps=None``) or ``T`` steps of
the recursion. Gradients with respect to ``lam``, ``feature_scale``, ``input_scale`` and ``bias``
pass through the fixed point by the implicit function theorem.

**Identical inputs** (equal ``x̃`` rows; equal moments in :meth:`Kernel.from_moments`) get the
diagonal value; ``diagonal="limit"`` solves the off-diagonal equation there instead, starting
just below full correlation, which gives ``lim_{x'→x} k(x, x')`` (the kernel has a nugget under a
Heaviside ``ρ``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from . import moments, programs, series, solver, validate
from ._jax import jax, jnp
from .errors import ConvergenceError, DekcWarning, InputError
from .links import Link
from .moments import Start
from .registry import Family
from .solver import MAX_ITER
from .validate import is_traced

_LIMIT_START = 1 - 1e-6  # starts (and diagonal="limit") stay this far inside full correlation
_CHUNK = 1 << 17
#: rows (and columns) of a tile of the eager fixed point (:meth:`Kernel._solve_in_passes`)
_TILE = 64
_TILE_RANGE = np.arange(_TILE)
_MIN_MOVING = 256  # the smallest solve of moving entries without a fitted start
# the diagonal is solved in one compiled loop per block for a kernel of at most this many
# quadrature nodes per entry (closed forms: 1); costlier updates keep the host loop whose finished
# entries leave the arrays (gaussian + sigmoid, 147456 nodes: 197 ms against 475 ms at n = 2000)
_WHOLE_DIAGONAL_NODES = 64
# a last call with at most this fraction of a call's tiles runs in a program of the next power of
# two of them (one more compiled shape) rather than padded to a whole call: at n = 1000 the
# Gram matrix took 17.8–22 ms against 21.2–26 ms with its last 8 tiles padded to 32
_TAIL_FRACTION = 4
_PAGE_DOUBLES = 512  # float64 values per 4 KiB page
#: degree of the Chebyshev series that predicts the fixed point from the start correlation
_FIT_DEGREE = 12
#: the prediction is used when it is this close to the sample's roots (relative to √(ab)) for
#: nine samples in ten
_FIT_TOL = 1e-5
#: an entry that started from the prediction keeps its root only this close to it (relative to
#: √(ab)); otherwise it is solved again from the input's start
_FIT_ACCEPT = 1e-3
#: whole-chunk passes from a predicted start (two Newton steps prove convergence from ~1e-4)
_FITTED_PASSES = 2
#: entries solved for the fit (and per solve of the entries left moving after fitted passes)
_FIT_SAMPLE = 4096
#: ... a quarter of them below this many entries, where the fit's fixed cost would weigh (measured at
#: n = 1000: the matrix in 16.2 ms, best of 30, against 18.6 ms with the full sample)
_FIT_SMALL = 1 << 20


def _fit_sample(total: int) -> int:
    """Entries solved for the fit of a Gram matrix of ``total`` entries (also per solve of those
    left moving after fitted passes, so that both are one compiled program)."""
    return _FIT_SAMPLE // 4 if total < _FIT_SMALL else _FIT_SAMPLE


#: a fitted start is tried for Gram matrices of at least this many entries (two chunks)
_FIT_MIN_ENTRIES = 1 << 18
#: terms of the first pass of a series with more (the rest start again from its roots)
_FIRST_TERMS = 32
#: entries per solve with quadrature where no series certifies
_QUADRATURE_CHUNK = 64


# -- named structures ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Side:
    """The inputs along one axis of the Gram matrix: ``c(x, x)`` and ``μ(x)`` per input."""

    cd: Any
    mu: Any


@dataclasses.dataclass(frozen=True)
class GramProblem:
    """Everything the solver needs about the entries of one Gram matrix.

    ``entries(i, j, *entries_args) -> (c(x_i, y_j), identical)``; ``start`` is where the
    iteration starts; ``shape`` is ``(n, m)``; ``symmetric``: ``Y = X`` (only ``i ≤ j`` is solved).
    """

    x: Side
    y: Side
    entries: Callable
    entries_args: tuple
    start: Start
    shape: tuple[int, int]
    symmetric: bool
    #: which input indexes each of ``entries_args`` (:func:`dekc.moments.entries_arguments`), or
    #: ``None`` where one is indexed by both (then the solve takes whole arrays, see :func:`_pack`)
    sides: Any = None
    #: the arrays packed by input for the eager tiles (:func:`_pack`; set by the solve)
    packs: Any = None
    #: further arrays of the tile programs, ``(x part, y part)``, each indexed by its side's
    #: input along the last axis (the Mehler series' tables, :meth:`dekc.series.GramSeries.tile_sides`)
    extra: Any = ((), ())


@dataclasses.dataclass(frozen=True)
class SolveOptions:
    """How to solve: ``steps`` None (the fixed point), ``T`` or a tuple of ``T`` s (a stack)."""

    lam: Any
    steps: int | tuple[int, ...] | None
    diagonal: str
    traced: bool
    progress: Any = None
    #: a traced fixed point may take its values from the eager solver (:meth:`Kernel._solve_on_host`)
    host: bool = True
    #: the fitted start of the passes: ``"auto"`` (fitted on a sample of this matrix when it is
    #: large enough, :meth:`Kernel._start_fit`), ``None`` (none) or a fit to use (a :class:`GramPlan`'s)
    fit: Any = "auto"
    #: the entries of the whole matrix a given ``fit`` belongs to (its moving entries are solved
    #: in blocks of the same size as the whole matrix's, so that a block's values are its values)
    fit_entries: int = 0

    @property
    def stops(self) -> tuple[int, ...] | None:
        if self.steps is None:
            return None
        return self.steps if isinstance(self.steps, tuple) else (self.steps,)


@dataclasses.dataclass(frozen=True)
class GramDiagnostics:
    """How the last Gram matrix of a kernel was computed.

    ``entries``: scalar problems solved; ``series_terms``: terms of the Mehler series that replaced
    the quadrature pairs (``None`` when no series was used: closed forms only, T-step kernels or
    under tracing); ``fallback_entries``: entries whose truncation bound exceeded
    :data:`dekc.series.TOLERANCE` with both the first and the long series, solved again by
    quadrature; ``long_series_entries``: entries the first series could not certify and the long
    one (:data:`dekc.series.LONG_TERMS` terms) did; ``fitted_start``: whether the entries started
    where a fit of a solved sample's roots predicts (an eager closed-form fixed point of at
    least 2¹⁸ entries whose roots are a function of the start correlation, such as ReLU
    kernels'), two Newton passes from their roots instead of four.
    """

    entries: int
    series_terms: int | None
    fallback_entries: int
    long_series_entries: int = 0
    fitted_start: bool = False


class ChunkProblems(NamedTuple):
    """The scalar problems of one chunk of entries: variances ``a``, ``b`` (rows of diagonal
    trajectories for T-step kernels), the input moment ``c`` the solve uses (``c_solve``; 0 for
    identical inputs unless the limit is asked for), ``μ``, ``μ'``, the start and whether the
    inputs are identical."""

    a: Any
    b: Any
    c_solve: Any
    mu_x: Any
    mu_y: Any
    start: Any
    same: Any


@dataclasses.dataclass(frozen=True, eq=False)
class GramPlan:
    """What every block of one Gram matrix shares, solved once (:meth:`Kernel.gram_plan`): the
    inputs, the validated parameters, the diagonal rows of X and of Y (the fixed point ``(1, n)``;
    for T-step kernels the start, ``c(x, x)`` and the values at each stop) and the fitted start
    (``None`` when the matrix would not use one). It holds O(n·d) numbers, never O(n·m), and
    pickles (a cluster ships it to its workers once). :meth:`Kernel.gram_block` computes a block."""

    X: np.ndarray
    #: ``None`` for the square matrix of X with itself
    Y: np.ndarray | None
    params: dict
    ax: np.ndarray
    ay: np.ndarray
    fit: np.ndarray | None
    #: the entries the whole matrix's solve counts (with its diagonal tiles whole)
    fit_entries: int = 0

    @property
    def symmetric(self) -> bool:
        return self.Y is None

    @property
    def shape(self) -> tuple[int, ...]:
        n = self.X.shape[0]
        m = n if self.Y is None else self.Y.shape[0]
        steps = self.params["steps"]
        return (len(steps), n, m) if isinstance(steps, tuple) else (n, m)


# -- the compiled kernel ---------------------------------------------------------------------------


class Kernel:
    """A compiled DEKer. Build it with :func:`dekc.compile_kernel`.

    Attributes: ``family`` (the :class:`dekc.Family`), ``family_name``, ``sigma``, ``rho``, ``R``
    (sympy in ``eta``), ``methods`` (``{"sigma,sigma": "closed-form", ...}``), ``error_bounds``,
    ``source`` (the generated module's text), ``path`` (its cache file), ``module`` (the loaded
    module).
    """

    def __init__(
        self,
        module: types.ModuleType,
        path: Path,
        source: str,
        family: Family,
        link_factory: Callable[[], Link],
        link: Link | None = None,
        rebuild: tuple | None = None,
    ):
        self._rebuild = rebuild
        self.module = module
        self.family = family
        self.path = path
        self.source = source
        self.methods = dict(module.METHODS)
        self.error_bounds = dict(module.ERROR_BOUNDS)
        self.family_name: str = module.METADATA["family"]
        self._link_factory = link_factory
        self._link = link
        self._pair_step = jax.jit(module.update_and_dp)
        self._series_pairs = tuple(getattr(module, "SERIES", ()))
        if self._series_pairs:
            self._series_step = functools.partial(series.series_step, jax.jit(module.update_and_dp_closed))
        self.diagnostics: GramDiagnostics | None = None
        self._diag_step = jax.jit(module.diagonal_update_and_da)
        # quadrature kernels evaluate NODES_PER_ENTRY points per entry: bound the chunk by 2^24 points
        self._chunk = max(1, min(_CHUNK, (1 << 24) // max(1, module.NODES_PER_ENTRY)))

    # -- link data (derived again lazily when the module came from the cache) --------------------
    @property
    def link(self):
        """The :class:`dekc.Link` the kernel was compiled from (derived again when loaded from the cache)."""
        if self._link is None:
            self._link = self._link_factory()
        return self._link

    sigma = property(lambda self: self.link.sigma, doc="The activation σ = (A∘R)' (sympy, in eta).")
    rho = property(lambda self: self.link.rho, doc="ρ = R' (sympy, in eta).")
    R = property(lambda self: self.link.R, doc="The link reparameterisation R (sympy, in eta).")

    def __reduce__(self):
        """A kernel pickles as its module's text, input hash and family (a few kB): unpickling
        checks the text's seal and loads it once per process (:func:`dekc.compiler.kernel_from_text`),
        so a cluster's workers need no cache of their own."""
        if self._rebuild is None:
            raise TypeError("this Kernel was not made by compile_kernel and cannot be pickled")
        return self._rebuild

    def __repr__(self) -> str:
        meta = self.module.METADATA
        return f"Kernel({self.family_name}, {meta['route']}={meta['spec']!r}, methods={self.methods})"

    def lambda_bound(self, c: float = 1.0, mu: float = 0.0) -> float | None:
        """``√(lim_{a→∞} λ²D(a)/a)`` for an input with ``c(x, x) = c`` and ``μ(x) = mu``: for smaller
        ``λ`` the diagonal iteration diverges from large starts. ``0.0`` when ``D`` grows slower
        than ``a``; ``None`` when it grows faster (then no ``λ`` bounds it from every start)."""
        m = self.module
        c = validate.real(c, "c", nonnegative=True, what="lambda_bound")
        mu = validate.real(mu, "mu", what="lambda_bound")
        validate.check_scale(
            [c, mu * mu if abs(mu) < 1e154 else np.inf],
            "c and mu²",
            what="lambda_bound",
            advice="rescale the input moments",
        )
        # far enough out that the lower-order terms (c, μ√a) are below 1e-3 of the leading one
        a = jnp.asarray([1e12, 1e16]) * max(1.0, c, mu * mu)
        growth = m.K_sigma_sigma_one_point(a) - 2 * mu * m.K_sigma_rho_one_point(a) + c * m.K_rho_rho_one_point(a)
        ratio = np.asarray(growth) / np.asarray(a)
        if not np.all(np.isfinite(ratio)) or ratio[1] > 2 * abs(ratio[0]) + 1e-12:
            return None
        if abs(ratio[1]) <= 1e-12:
            return 0.0
        return float(np.sqrt(abs(ratio[1]))) if abs(ratio[1] - ratio[0]) <= 1e-3 * abs(ratio[1]) else None

    # -- public entry points ----------------------------------------------------------------------
    def gram(
        self,
        X: ArrayLike,
        Y: ArrayLike | None = None,
        *,
        lam: float = 2.0,
        feature_scale: float = 1.0,
        input_scale: float = 1.0,
        bias: float = 0.0,
        features: str = "relu",
        steps: int | Sequence[int] | None = None,
        psi0: str | np.ndarray = "input",
        diagonal: Literal["exact", "limit"] = "exact",
        progress: bool | Callable[[int, int], Any] | None = None,
    ) -> np.ndarray | jax.Array:
        """The DEKer Gram matrix ``k(X_i, Y_j)`` (``Y = X`` when omitted).

        ``features`` is the data feature map ``f`` (shorthand, expression in ``eta``); the
        input moments use ``x̃ = (input_scale·x, bias)`` and feature scale ``s``.
        ``steps=None`` gives the fixed point, ``steps=T`` the ``T``-step kernel from ``psi0``
        (``"input"``: ``x̃·x̃'``, ``"constant"``: 1, or an ``(n, n)`` array when ``Y`` is omitted);
        a sequence ``steps=(T1, T2, ...)`` gives the stack ``(len(steps), n, m)`` of those
        T-step kernels from one iteration.
        ``diagonal="exact"`` gives identical inputs the diagonal value, ``"limit"`` the
        continuous part. ``progress``: True shows a progress bar (on stderr) over the entries when
        there is more than one block, a callable is called as ``progress(done, total)`` after each
        block; ignored under tracing. Returns a float64 numpy array ``(n, m)`` (a JAX array under
        tracing).
        """
        problem, options = self._gram_problem(
            X, Y, lam, feature_scale, input_scale, bias, features, steps, psi0, diagonal, progress
        )
        return self._solve(problem, options)

    def _gram_problem(
        self,
        X,
        Y,
        lam,
        feature_scale,
        input_scale,
        bias,
        features,
        steps,
        psi0,
        diagonal,
        progress,
        whole=True,
        rows_of=None,
    ) -> tuple[GramProblem, SolveOptions]:
        """The validated problem and options of :meth:`gram`; ``whole=False`` (a :class:`GramPlan`):
        the result is not held in memory, and the products of the inputs are taken entry by entry
        (memory O(n), not O(n·m)); ``rows_of``: the numbers of inputs of the whole matrix that X
        and Y are blocks of (:func:`dekc.moments.blocked_input_moments`)."""
        traced = is_traced(X, Y, lam, feature_scale, input_scale, bias, psi0)
        X = validate.matrix(X, "X")
        symmetric = Y is None
        Y = X if symmetric else validate.matrix(Y, "Y")
        if X.shape[1] != Y.shape[1]:
            raise InputError(f"X has {X.shape[1]} columns and Y has {Y.shape[1]}; they must match")
        steps = _check_options(steps, diagonal)
        lam = validate.real_or_traced(lam, "lam", positive=True)
        feature_scale = validate.real_or_traced(feature_scale, "feature_scale", positive=True)
        input_scale = validate.real_or_traced(input_scale, "input_scale", positive=True)
        bias = validate.real_or_traced(bias, "bias")
        if whole:
            _check_result_memory(steps, X.shape[0], Y.shape[0])
        if not traced:
            _check_parameter_scales(lam, feature_scale)
            for which, inputs in (("X", X),) if symmetric else (("X", X), ("Y", Y)):
                validate.check_scale(
                    moments.squared_norms(np.asarray(inputs), input_scale, bias),
                    "|x̃|² = input_scale²|x|² + bias²",
                    what=f"inputs {which}",
                    advice="rescale the inputs (X, input_scale, bias)",
                )
        feature = moments.feature_moments(features)
        if traced:
            compute = moments.input_moments
        else:
            compute = functools.partial(moments.blocked_input_moments, columns=not whole, rows_of=rows_of)
        xt, yt, nx, ny, products, s2, cdx, cdy, mux, muy = compute(
            feature, symmetric, X, X if symmetric else Y, input_scale, bias, feature_scale
        )
        if not traced:
            for which, cd in (("X", cdx), ("Y", cdy)):
                validate.check_scale(
                    cd, "c(x, x)", what=f"input moments of {which}", advice="rescale feature_scale or the inputs"
                )
        ids_x, ids_y = moments.row_ids(xt, yt, symmetric)
        entries_args, sides = moments.entries_arguments(ids_x, ids_y, nx, ny, products, cdx, s2)
        problem = GramProblem(
            x=Side(cdx, mux),
            y=Side(cdy, muy),
            entries=feature.entries,
            entries_args=entries_args,
            start=moments.start(psi0, nx, ny, products, symmetric, X.shape[0]),
            shape=(X.shape[0], Y.shape[0]),
            symmetric=symmetric,
            sides=sides,
        )
        return problem, SolveOptions(lam, steps, diagonal, traced, progress)

    def from_moments(
        self,
        c: ArrayLike,
        mu: ArrayLike,
        *,
        lam: float = 2.0,
        steps: int | Sequence[int] | None = None,
        psi0: str | np.ndarray = "constant",
        diagonal: Literal["exact", "limit"] = "exact",
        progress: bool | Callable[[int, int], Any] | None = None,
        check_psd: bool = True,
    ) -> np.ndarray | jax.Array:
        """The same kernel from input moments: ``c`` ``(n, n)`` PSD and ``mu`` ``(n,)``.

        Entries with ``c_ij = c_ii = c_jj`` and ``μ_i = μ_j`` are identical inputs (diagonal
        value). ``psi0`` is ``"constant"`` (every entry 1) or an ``(n, n)`` array: where the
        iteration starts. ``c`` is checked to be symmetric and
        positive semi-definite; the second test factorises ``c`` (O(n³) time: 0.07 s at
        n = 2000 on two cores, a thousand times that at ten times n). ``check_psd=False``, for
        moments known to be PSD, checks every pair's ``c_ij² <= c_ii c_jj`` instead (O(n²)).
        """
        if not isinstance(check_psd, bool):
            raise InputError(f"check_psd must be True or False, got {check_psd!r}")
        traced = is_traced(c, mu, lam, psi0)
        if not traced:
            c, mu = validate.input_moments(c, mu, check_psd=check_psd)
            validate.check_scale(
                np.diagonal(c),
                "c(x, x)",
                what="input moments",
                advice="rescale c by t and mu by √t (for a positively homogeneous kernel the result scales by t)",
            )
        c = jnp.asarray(c, dtype=jnp.float64)
        mu = jnp.asarray(mu, dtype=jnp.float64)
        steps = _check_options(steps, diagonal)
        lam = validate.real_or_traced(lam, "lam", positive=True)
        n = c.shape[0]
        _check_result_memory(steps, n, n)
        if not traced:
            _check_parameter_scales(lam, 1.0)
        cd = jnp.diagonal(c)
        if isinstance(psi0, str) and psi0 == "input":
            raise InputError("psi0='input' needs the inputs x̃; from_moments takes psi0='constant' or an (n, n) array")
        side = Side(cd, mu)
        start = moments.start(psi0, None, None, None, True, n)
        if steps is None:
            start = moments.moment_start(start, c, cd)
        problem = GramProblem(
            x=side,
            y=side,
            entries=moments.moment_entries,
            entries_args=(c, cd, mu),
            start=start,
            shape=(n, n),
            symmetric=True,
        )
        return self._solve(problem, SolveOptions(lam, steps, diagonal, traced, progress))

    # -- blocks of a Gram matrix (dekc.blocks) -----------------------------------------------------
    def gram_plan(
        self,
        X: ArrayLike,
        Y: ArrayLike | None = None,
        *,
        lam: float = 2.0,
        feature_scale: float = 1.0,
        input_scale: float = 1.0,
        bias: float = 0.0,
        features: str = "relu",
        steps: int | Sequence[int] | None = None,
        psi0: str = "input",
        diagonal: Literal["exact", "limit"] = "exact",
    ) -> GramPlan:
        """The :class:`GramPlan` of ``gram(X, Y, ...)`` (same arguments; ``psi0`` ``"input"`` or
        ``"constant"``): every input checked, the diagonal solved and the start fitted once, in
        O((n + m)·d) memory whatever the size of the matrix. Its blocks come from
        :meth:`gram_block`; :mod:`dekc.blocks` writes them to disk or computes them on a cluster.

        The diagonal is that of ``gram`` to the last bit. So is the fitted start when the inputs have
        at most 63 columns (with more, ``gram`` takes their products from one matrix product,
        which rounds differently)."""
        if is_traced(X, Y, lam, feature_scale, input_scale, bias):
            raise InputError("gram_plan takes concrete inputs and parameters (not JAX tracers): use gram under tracing")
        if not isinstance(psi0, str):
            raise InputError(
                f"a Gram matrix in blocks starts from psi0='input' or 'constant', got {type(psi0).__name__}: "
                "an (n, n) start array is the size of the matrix itself; use gram"
            )
        problem, options = self._gram_problem(
            X, Y, lam, feature_scale, input_scale, bias, features, steps, psi0, diagonal, None, whole=False
        )
        ax = np.asarray(self._diagonal(problem.start.a0_x, problem.x, options, "X"))
        ay = ax if problem.symmetric else np.asarray(self._diagonal(problem.start.a0_y, problem.y, options, "Y"))
        fit = None
        (n, m), symmetric = problem.shape, problem.symmetric
        entries = int(_tiles(n, m, symmetric)[2].sum())
        if options.stops is None and not self._series_pairs and solver.uses_passes(self._chunk):
            tiled, tx, ty = _for_tiles(problem, ax[-1], ay[-1])
            fit = self._start_fit(tiled, options, tx, ty, entries)
        params = dict(
            lam=float(options.lam),
            feature_scale=float(feature_scale),
            input_scale=float(input_scale),
            bias=float(bias),
            features=features,
            steps=options.steps,
            psi0=psi0,
            diagonal=diagonal,
        )
        inputs = np.asarray(X, dtype=np.float64)
        return GramPlan(inputs, None if Y is None else np.asarray(Y, dtype=np.float64), params, ax, ay, fit, entries)

    def gram_block(self, plan: GramPlan, rows: slice, cols: slice, pad: int | None = None) -> np.ndarray:
        """The block ``K[rows, cols]`` of the plan's Gram matrix (``K[:, rows, cols]`` for a stack of
        T-step kernels), from its diagonal and fitted start. A square plan's block with
        ``rows == cols`` is solved as a symmetric matrix (half the entries). ``pad``: a side shorter
        than ``pad`` inputs (and than the matrix) is padded (repeating its first input) so that
        every block, the last ones included, runs the same compiled programs. Values agree with
        ``gram`` to rounding (see :mod:`dekc.blocks` for the measured difference)."""
        if not isinstance(plan, GramPlan):
            raise InputError(f"gram_block takes the GramPlan of gram_plan, got {type(plan).__name__}")
        n, m = plan.shape[-2:]
        rows, cols = _block_slice(rows, n, "rows"), _block_slice(cols, m, "cols")
        pad = 0 if pad is None else validate.count(pad, "pad", minimum=1)
        square = plan.symmetric and rows == cols
        (X, ax), height = _padded_side(plan.X, plan.ax, rows, min(pad, n))
        (Y, ay), width = _padded_side(plan.X if plan.Y is None else plan.Y, plan.ay, cols, min(pad, m))
        p = plan.params
        problem, options = self._gram_problem(
            X,
            None if square else Y,
            p["lam"],
            p["feature_scale"],
            p["input_scale"],
            p["bias"],
            p["features"],
            p["steps"],
            p["psi0"],
            p["diagonal"],
            None,
            rows_of=(n, m),
        )
        options = dataclasses.replace(options, fit=plan.fit, fit_entries=plan.fit_entries)
        values = self._solve(problem, options, diagonals=(ax, ax if square else ay))
        return values[..., :height, :width]

    # -- the solve --------------------------------------------------------------------------------
    def _solve(self, problem: GramProblem, options: SolveOptions, out: np.ndarray | None = None, diagonals=None):
        """Diagonal first, then every entry ``(i, j)`` (``i ≤ j`` when symmetric) in chunks, into
        ``out`` when given (an eager fixed point's ``(n, m)`` array, written in place).
        ``diagonals``: the rows :meth:`_diagonal` gives for X and Y, already solved (a block of a
        :class:`GramPlan`)."""
        n, m = problem.shape
        stops, traced, symmetric = options.stops, options.traced, problem.symmetric
        if traced and stops is None and options.host and _host_solves():
            self.diagnostics = GramDiagnostics(n * (n + 1) // 2 if symmetric else n * m, None, 0, 0)
            return self._solve_on_host(problem, options)
        if diagonals is not None:
            ax, ay = diagonals
        else:
            ax = self._diagonal(problem.start.a0_x, problem.x, options, "X")
            ay = ax if symmetric else self._diagonal(problem.start.a0_y, problem.y, options, "Y")
        total = n * (n + 1) // 2 if symmetric else n * m
        if traced:
            out = self._solve_traced(problem, options, ax, ay, total)
            self.diagnostics = GramDiagnostics(total, None, 0, 0)
            return out if isinstance(options.steps, tuple) else out[0]
        gram_series = None
        if self._series_pairs and stops is None:
            gram_series = series.GramSeries(self.module, ax[-1], ay[-1], symmetric)
        block = self._chunk if gram_series is None else (1 << 22) // min(gram_series.terms, _FIRST_TERMS)
        chunk = min(block, solver.pow2_at_least(total))
        pending: list = []  # entries the series could not certify, per chunk
        layers = 1 if stops is None else len(stops)
        out = np.empty((layers, n, m)) if out is None else out.reshape(layers, n, m)
        # touch every page once, in order: first writes scattered over fresh pages (row segments of
        # each chunk) cost ten times more (measured: 5.2 s against 0.2 + 0.6 s at n = 16000)
        out.reshape(-1)[::_PAGE_DOUBLES] = 0.0
        limit = options.diagonal == "limit" and stops is None
        report = _progress(options.progress, total, chunk)
        mirrored = fitted = False
        try:
            chunks: range = range(0)
            if stops is not None:
                self._steps_in_tiles(out, problem, options, ax, ay, report)
                mirrored = True  # both triangles written
            elif solver.uses_passes(chunk):
                fitted = self._solve_in_passes(out[0], problem, options, ax[-1], ay[-1], report, gram_series, pending)
                mirrored = True
            else:
                chunks = range(0, total, chunk)
            for lo in chunks:
                i, j, k = _chunk_entries(lo, chunk, total, n, m, symmetric)
                chunk_problems = _prepare(
                    problem.entries,
                    problem.start.correlation,
                    limit,
                    i,
                    j,
                    ax[-1],
                    ay[-1],
                    problem.x.mu,
                    problem.y.mu,
                    problem.entries_args,
                    problem.start.correlation_args,
                )
                v, uncertain = self._fixed_chunk(chunk_problems, options, i, j, gram_series, k)
                if uncertain is not None:
                    pending.append(uncertain)
                _write(out[0], i[:k], j[:k], np.asarray(v[:k]))
                report(lo + k)
        finally:
            report(None)
        if symmetric and not mirrored:
            _mirror(out[0])
        long_entries = fallback = 0
        if pending:
            rows, cols, p, long_entries, fallback = self._refine(pending, ax[-1], ay[-1], symmetric, options)
            out[0, rows, cols] = p
            if symmetric:
                out[0, cols, rows] = p
        self.diagnostics = GramDiagnostics(
            total, None if gram_series is None else gram_series.terms, fallback, long_entries, fitted
        )
        if fallback and gram_series is not None:
            warnings.warn(
                f"{fallback} of {total} entries were certified neither by the {gram_series.terms}-term series nor "
                f"by the {series.LONG_TERMS}-term one (to {series.TOLERANCE:.0e}; variances up to "
                f"{float(jnp.max(ax[-1])):.3g}) and were solved by quadrature; see Kernel.diagnostics",
                DekcWarning,
                stacklevel=3,
            )
        return out if isinstance(options.steps, tuple) else out[0]

    def _solve_on_host(self, problem: GramProblem, options: SolveOptions):
        """A traced fixed point: the values from the eager solver, called back on the host; when
        something is differentiated, the traced solver (:meth:`_solve_traced`) and its implicit
        derivatives. On XLA:CPU the eager path's chunk programs run about twice as fast as the
        same work inside a traced loop, whose body XLA fuses differently. The eager solver
        writes into XLA's output buffer (a buffer callback; where JAX has none, a pure callback
        whose result XLA copies: measured 3–9 ms at n = 2000, against under 1 ms in place).

        Entries that fail are NaN, as in the traced solver: when the eager solve raises, the
        traced solver (:meth:`_solve_traced`, compiled then) gives the values instead."""
        leaves, treedef = jax.tree_util.tree_flatten((_problem_arrays(problem), options.lam))
        leaves = [jnp.asarray(x, jnp.float64) for x in leaves]
        shape = problem.shape

        def rebuilt(values):
            arrays, lam = jax.tree_util.tree_unflatten(treedef, list(values))
            return _with_arrays(problem, arrays), dataclasses.replace(options, lam=lam)

        def fill(target, values):
            """The eager solver's values written into ``target``; the traced solver's when it raises."""
            values = [np.asarray(x).copy() for x in values]  # (copies: the buffers are XLA's)
            concrete, eager = rebuilt(values)
            eager = dataclasses.replace(eager, lam=float(eager.lam), traced=False, progress=None)
            diagnostics = self.diagnostics
            try:
                self._solve(_identified(concrete), eager, out=target)
            except (ConvergenceError, InputError):
                target[...] = np.asarray(jax.jit(traced_solve)(*values))
            finally:
                self.diagnostics = diagnostics

        def solve_on_host(*values):
            target = np.empty(shape)
            fill(target, values)
            return target

        def solve_in_place(context, out, *values):
            fill(np.asarray(out), values)

        def traced_solve(*values):
            concrete, traced = rebuilt(values)
            return self._solve(concrete, dataclasses.replace(traced, host=False))

        @jax.custom_jvp
        def fixed_point(*values):
            result = jax.ShapeDtypeStruct(shape, jnp.float64)
            if _buffer_callback is not None:  # written in XLA's output buffer (no copy of the result)
                return _buffer_callback(solve_in_place, result, vmap_method="sequential")(*values)
            return jax.pure_callback(solve_on_host, result, *values, vmap_method="sequential")

        @fixed_point.defjvp
        def fixed_point_jvp(values, tangents):
            # differentiated: the traced solver with its implicit derivatives (measured faster, at
            # n = 1000 161-186 ms against 256 ms, than these values with the derivatives attached)
            return jax.jvp(traced_solve, tuple(values), tuple(tangents))

        return fixed_point(*leaves)

    def _solve_traced(self, problem: GramProblem, options: SolveOptions, ax, ay, total: int):
        """The entries under tracing: one ``lax.map`` over fixed-size chunks whose indices are
        computed on the device, so the traced program (and its compile time) does not grow with
        ``n``. Returns ``(layers, n, m)``."""
        (n, m), stops, symmetric = problem.shape, options.stops, problem.symmetric
        chunk = min(self._chunk, solver.pow2_at_least(total))
        limit = options.diagonal == "limit" and stops is None

        def chunk_values(start):
            flat = jnp.minimum(start + jnp.arange(chunk), total - 1)
            i, j = _flat_entries(flat, n, m, symmetric)
            chunk_problems = _prepare(
                problem.entries,
                problem.start.correlation,
                limit,
                i,
                j,
                ax if stops else ax[-1],
                ay if stops else ay[-1],
                problem.x.mu,
                problem.y.mu,
                problem.entries_args,
                problem.start.correlation_args,
            )
            if stops is None:
                v = self._fixed_chunk(chunk_problems, options, i, j)[0][None]
            else:
                v = self._steps_chunk(chunk_problems, options.lam, stops)
            # XLA:CPU runs the fusion that writes a loop's output on one core: keep the work out of it
            return jax.lax.optimization_barrier(v)

        starts = jnp.arange(0, total, chunk)
        out = jax.lax.map(chunk_values, starts)  # (chunks, layers, chunk)
        out = jnp.moveaxis(out, 1, 0).reshape(out.shape[1], -1)
        if not symmetric:
            return out[:, : n * m].reshape(-1, n, m)
        r, c = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
        low, high = jnp.minimum(r, c), jnp.maximum(r, c)
        return out[:, _row_offsets(low, n) + high - low]

    def _diagonal(self, a0, side: Side, options: SolveOptions, which: str):
        """Diagonal values: the fixed point ``(1, n)``, or for T-step kernels the rows ``(start,
        c(x, x), values after each stop in sorted order)``, ``(2 + #stops, n)``: the off-diagonal
        iteration recomputes the diagonal trajectory as it goes (memory O(n), whatever T)."""
        cd, mu, lam, traced = side.cd, side.mu, options.lam, options.traced
        if options.stops is not None:
            order = tuple(sorted(set(options.stops)))
            at_stops = solver.diagonal_steps(self._diag_step, order, a0, cd, mu, lam)
            if not traced:
                _raise_nonfinite(at_stops[-1], which, "diagonal", lam, order[-1], self.lambda_bound())
                self._check_diagonal_scale(at_stops, which, lam)
            return jnp.concatenate([jnp.broadcast_to(a0, cd.shape)[None], cd[None], at_stops])
        if not traced:  # numpy: no eager JAX operations (each is a compiled program)
            start = np.broadcast_to(np.maximum(np.asarray(a0, np.float64), 0.0), np.shape(cd))
            whole = self.module.NODES_PER_ENTRY <= _WHOLE_DIAGONAL_NODES
            a, status = _diagonal_blocks(self._diag_step, start, np.asarray(cd, np.float64), np.asarray(mu), lam, whole)
            self._report(status, a0=a0, which=which, lam=lam, cd=cd, mu=mu)
            self._check_diagonal_scale(a, which, lam)
            return np.asarray(a)[None, :]
        sg = jax.lax.stop_gradient
        start = jnp.maximum(sg(a0), 0.0)
        a, status = solver.newton(
            solver.diagonal_iteration,
            self._diag_step,
            start,
            jnp.zeros_like(start),
            jnp.full_like(start, jnp.inf),
            (sg(cd), sg(mu), sg(lam)),
            traced,
        )
        a = jnp.where(status == solver.CONVERGED, a, jnp.nan)
        return solver.implicit(self._diag_step, a, cd, mu, lam)[None, :]

    @staticmethod
    def _check_diagonal_scale(values, which, lam):
        validate.check_scale(
            values,
            "k(x, x)",
            what=f"the kernel's diagonal for {which} (lam = {float(lam):.6g})",
            advice="rescale the inputs or feature_scale, or choose lam further from the value "
            "that makes the kernel vanish or blow up",
        )

    def _fixed_chunk(self, problems: ChunkProblems, options: SolveOptions, i, j, gram_series=None, k=0):
        """The chunk's fixed points, and those of its first ``k`` entries (the real ones) the series
        could not certify (:meth:`_refine` solves them again; ``None`` when there are none)."""
        a, b, c_s, mux, muy, p0, same = problems
        lam, traced, exact = options.lam, options.traced, options.diagonal == "exact"
        sg = jax.lax.stop_gradient
        lo, hi = _bracket(a, b, same, exact)
        args = (sg(a), sg(b), sg(c_s), sg(mux), sg(muy), sg(lam))
        if gram_series is not None:
            # the first terms certify most entries; the rest start again from there with every term
            first = min(gram_series.terms, _FIRST_TERMS)
            D = gram_series.coefficients(i, j, c_s, mux, muy, first)
            p, status = solver.newton(solver.pair_iteration, self._series_step, p0, lo, hi, (*args, D), traced)
            self._report(status, a=a, b=b, c=c_s, mux=mux, muy=muy, lam=lam, i=i, j=j, same=same)
            # identical inputs under diagonal="exact" were solved at p = 0, where the bound is 0
            ok = np.array(gram_series.certified(i, j, p, a, b, first))[:k]
            p = np.array(p)
            if first < gram_series.terms:
                todo = np.flatnonzero(~ok)
                ok[todo] = self._series_pass(gram_series, todo, (i, j), p, (a, b, c_s, mux, muy), lam, (i, j))
            bad = np.flatnonzero(~ok)
            uncertain = None
            if bad.size:
                uncertain = tuple(np.asarray(x)[bad] for x in (i, j, p, a, b, c_s, mux, muy, same))
            return _finish(jnp.asarray(p), a, b, same, exact), uncertain
        p, status = solver.newton(solver.pair_iteration, self._pair_step, sg(p0), lo, hi, args, traced)
        if not traced:
            self._report(status, a=a, b=b, c=c_s, mux=mux, muy=muy, lam=lam, i=i, j=j, same=same)
        else:
            p = jnp.where(status == solver.CONVERGED, p, jnp.nan)
            p = solver.implicit(self._pair_step, p, a, b, c_s, mux, muy, lam)
        return _finish(p, a, b, same, exact), None

    def _solve_in_passes(
        self, out, problem: GramProblem, options: SolveOptions, ax, ay, report, gram_series=None, pending=None
    ) -> bool:
        """Every entry into ``out`` (both triangles when symmetric, from the upper one), by square
        tiles of :data:`_TILE` rows and columns, :meth:`_tiles_per_call` of them per compiled
        call (:meth:`_chunk_call`: their whole-chunk passes), each call dispatched before the
        previous one's values are written, so that the host's work overlaps the next call's. The
        entries still moving after the passes are collected and solved in whole chunks
        (:meth:`_solve_moving`). For a large matrix the passes start where a fit of a solved
        sample predicts (:meth:`_start_fit`); returns whether they did.

        A tile's inputs are its rows and its columns: its entries are their broadcasts, not
        gathered one by one (measured: the problems of 2¹⁷ entries take 1.2 ms against 2.1 ms). The
        tiles along the diagonal are computed whole (about ``n·tile/2`` extra entries).

        With a Mehler series (``gram_series``, :mod:`dekc.series`) the tiles' passes use its first
        :data:`_FIRST_TERMS` terms at most, and an entry counts as solved once it has converged
        and its truncation bound is certified; the others are solved again entry by entry
        (:meth:`_series_moving`: every term, then the long series or quadrature, ``pending``)."""
        (n, m), symmetric = problem.shape, problem.symmetric
        first = None if gram_series is None else min(gram_series.terms, _FIRST_TERMS)
        if gram_series is not None:
            problem = dataclasses.replace(problem, extra=gram_series.tile_sides(first))
        problem, ax, ay = _for_tiles(problem, ax, ay)
        rows, cols, counts = _tiles(n, m, symmetric)
        per_call = self._tiles_per_call(rows.size, None if first is None else (1 << 22) // first)
        total = int(counts.sum())
        if gram_series is not None:
            fit = None
        elif isinstance(options.fit, str):
            fit = self._start_fit(problem, options, ax, ay, total)
        else:
            fit = options.fit
        # with a fit, every solve of the moving entries has the fit sample's size (the same
        # compiled program: a fresh process traces each shape, about 0.2 s, even when XLA's cache
        # holds the program); about 0.1 % of the entries move on from a fitted start, a few per
        # cent from the input correlation: without a fit they are solved 4096 at a time, the
        # last block padded to a power of two (measured at n = 250: the matrix in 8.7–10 ms
        # with them padded to 2¹⁵, in 4.5–5.1 ms to 4096)
        moving_size = min(
            self._moving_chunk, _FIT_SAMPLE if fit is None else _fit_sample(max(total, options.fit_entries))
        )

        def solve_moving(rows, cols, size):
            if gram_series is None:
                # without a fit no program of the sample's size is loaded: a short last block is
                # padded to a power of two only (measured at n = 64: 72 entries in 0.6 ms on
                # average, against 1.1–2.2 ms padded to 4096)
                smallest = size if fit is not None else _MIN_MOVING
                return self._moving_entries(problem, options, ax, ay, rows, cols, size, smallest)
            return self._series_moving(problem, options, ax, ay, rows, cols, gram_series, pending)

        certifying: list = []  # a series' converged entries left uncertified, with their roots
        certify_size = 0 if gram_series is None else (1 << 22) // gram_series.terms

        def solve_certifying(rows, cols, roots, size):
            return self._series_certify(problem, options, ax, ay, rows, cols, roots, gram_series, pending, size)

        moving: list = []  # entries still moving after the passes, per call
        # once most of a call's entries are still moving after the passes (a far start), the
        # following calls are solved whole at once rather than twice
        whole = False

        def dispatch(i, j):
            call = self._chunk_call(problem, options, ax, ay, i, j, whole, None if whole else fit, gram_series, first)
            return whole, call

        def entries(start, stop, where):
            """The entries ``(rows, cols)`` of the tiles ``start:stop`` at the flat positions
            ``where`` of their values (those inside the matrix, in the upper triangle when
            symmetric), and which positions they are."""
            t, r = np.divmod(where, _TILE * _TILE)
            r, c = np.divmod(r, _TILE)
            r, c = rows[start + t] + r, cols[start + t] + c
            keep = (r < n) & (c < m) & ((r <= c) if symmetric else True)
            return r[keep], c[keep], keep

        for start, stop, i, j, (solved, values) in _pipelined(rows, cols, per_call, (n, m), dispatch):
            v = np.asarray(values[0] if solved else values)[: stop - start]
            if solved:
                v = self._solved(v.reshape(-1), problem, options, ax, ay, i, j).reshape(v.shape)
            certify = None
            if gram_series is not None and not solved:  # converged roots the first terms do not certify
                flagged = np.flatnonzero(v.imag)
                v = v.real
                r, c, keep = entries(start, stop, flagged)
                if r.size:
                    certify = (r, c, v.reshape(-1)[flagged[keep]])
            _write_tiles(out, v, rows[start:stop], cols[start:stop], symmetric)
            last = stop >= rows.size
            if gram_series is not None:  # every term, from those roots, a block at a time
                certifying.extend([] if certify is None else [certify])
                self._solve_moving(out, certifying, certify_size, last, symmetric, solve_certifying)
            if not solved:
                r, c, keep = entries(start, stop, np.flatnonzero(np.isnan(v)))  # still moving (or failed)
                # (a series' entries are never solved whole: they are solved again entry by entry)
                whole = whole or (gram_series is None and bool(2 * r.size > counts[start:stop].sum()))
                moving.append((r, c))
            self._solve_moving(out, moving, moving_size, last, symmetric, solve_moving)
            report(int(counts[:stop].sum()))
        return fit is not None

    def _steps_in_tiles(self, out, problem: GramProblem, options: SolveOptions, ax, ay, report) -> None:
        """The ``T``-step values of every entry into ``out`` ``(len(stops), n, m)``, by the tiles
        of the fixed point's passes (:meth:`_solve_in_passes`: the same inputs per call, each
        call dispatched before the previous one's values are written): one compiled program runs
        the steps of a call's tiles, the diagonal trajectories alongside. ``ax``, ``ay``: the
        rows of :meth:`_diagonal`. A value that is not finite raises :class:`ConvergenceError`
        naming its entry."""
        (n, m), symmetric, stops, lam = problem.shape, problem.symmetric, options.stops, options.lam
        assert stops is not None
        problem, ax, ay = _for_tiles(problem, ax, ay)
        rows, cols, counts = _tiles(n, m, symmetric)
        per_call = self._tiles_per_call(rows.size)
        statics = (problem.entries, problem.start.correlation, self._pair_step, self._diag_step, stops)

        def dispatch(i, j):
            return _tile_call(problem, _steps_program, statics, ax, ay, i, j, lam)

        for start, stop, i, j, values in _pipelined(rows, cols, per_call, (n, m), dispatch):
            v = np.asarray(values)[:, : stop - start]
            bad = ~np.isfinite(v)
            if bad.any():
                layer, t, r, c = np.unravel_index(int(np.argmax(bad)), bad.shape)
                raise ConvergenceError(
                    f"the {stops[layer]}-step kernel overflows at entry ({i[t, r, 0]}, {j[t, 0, c]}) with "
                    f"lam = {float(lam)}: use fewer steps, a larger lam or a smaller psi0"
                )
            for layer in range(len(stops)):
                _write_tiles(out[layer], v[layer], rows[start:stop], cols[start:stop], symmetric)
            report(int(counts[:stop].sum()))

    def _start_fit(self, problem: GramProblem, options: SolveOptions, ax, ay, total: int):
        """Where the roots lie, learnt from a sample: :func:`_fit_sample` entries drawn at random
        (a fixed seed) are solved from their start, and their scaled roots ``k/√(ab)`` are fitted
        by a Chebyshev series of degree :data:`_FIT_DEGREE` in ``w = √(1 − r) − √(1 + r)``
        (:func:`_fit_variable`) of their start correlation ``r = p0/√(ab)`` (or of the correlation
        ``Start.fit_correlation`` gives, such as the moments' for a constant start). Returns one array,
        the coefficients followed by ``low``, ``high`` (the sample's range of ``w``) and
        ``accept`` (:data:`_FIT_ACCEPT`), or ``None`` when the Gram matrix has fewer
        than :data:`_FIT_MIN_ENTRIES` entries (``total``) or the roots are not a function of the
        start correlation to :data:`_FIT_TOL` (for nine samples in ten).

        For a positively homogeneous kernel (ReLU features and a ReLU link) the scaled root is a
        function of the start correlation alone and the fit is accurate to ~1e-6 (measured at
        n = 2000: 1.0e-6 for nine samples in ten, 4.8e-5 at most); the start it predicts is then
        two Newton steps from the root instead of four."""
        if total < _FIT_MIN_ENTRIES:
            return None
        size = _fit_sample(total)
        (n, m), symmetric = problem.shape, problem.symmetric
        rng = np.random.default_rng(0)
        i, j = rng.integers(0, n, size), rng.integers(0, m, size)
        if symmetric:
            i, j = np.minimum(i, j), np.maximum(i, j)
        i, j = i.astype(np.int32), j.astype(np.int32)
        packed, p0 = (np.asarray(x) for x in self._chunk_call(problem, options, ax, ay, i, j, True))
        roots = self._solved(packed, problem, options, ax, ay, i, j)
        sab = np.sqrt(np.asarray(ax)[i] * np.asarray(ay)[j])
        ok = np.isfinite(p0) & (sab > 0) & np.isfinite(roots)  # (p0 is NaN for identical inputs)
        if np.count_nonzero(ok) < size // 2:
            return None
        w, y = _fit_variable(p0[ok] / sab[ok], np), roots[ok] / sab[ok]
        low, high = float(w.min()), float(w.max())
        if not high - low > 1e-3:
            return None
        u = (2.0 * w - (low + high)) / (high - low)
        coefficients = _chebyshev_fit(u, y, _FIT_DEGREE)
        error = np.quantile(np.abs(np.polynomial.chebyshev.chebval(u, coefficients) - y), 0.9)
        if not error <= _FIT_TOL:  # (NaN from an ill-conditioned fit fails too)
            return None
        # one host array (a device copy of each part would load a conversion program in a fresh process)
        return np.concatenate([coefficients, [low, high, _FIT_ACCEPT]])

    @property
    def _moving_chunk(self) -> int:
        """Entries per call of the moving entries' solve at most: a quarter chunk (its working
        memory, about 240 bytes an entry, is then at most 8 MiB)."""
        return max(solver.MIN_PASSES_SIZE, self._chunk // 4)

    def _tiles_per_call(self, tiles: int, chunk: int | None = None) -> int:
        """Tiles per compiled call: a chunk's worth (``chunk`` entries, default the kernel's),
        fewer (a power of two) for few tiles."""
        return min(max(1, (chunk or self._chunk) // _TILE**2), solver.pow2_at_least(tiles))

    def _chunk_call(
        self,
        problem: GramProblem,
        options: SolveOptions,
        ax,
        ay,
        i,
        j,
        solve: bool,
        fit=None,
        gram_series=None,
        terms=0,
    ):
        """:func:`_chunk_program` for the entries ``(i, j)`` (int32 host indices), dispatched
        (:func:`_tile_call`). With ``fit`` (passes only), the entries start where it predicts and
        take :data:`_FITTED_PASSES` passes. With ``gram_series`` (passes only), the update is the
        series step with its first ``terms`` terms (tables in ``problem.extra``)."""
        series_spec = None if gram_series is None else (gram_series.weights, terms, gram_series.tolerance)
        statics = (
            problem.entries,
            problem.start.correlation,
            self._pair_step if gram_series is None else self._series_step,
            solver.FAST_PASSES if fit is None else _FITTED_PASSES,
            options.diagonal == "limit",
            options.diagonal == "exact",
            solve,
            series_spec,
            problem.start.fit_correlation,
        )
        return _tile_call(problem, _chunk_program, statics, ax, ay, i, j, options.lam, fit)

    @staticmethod
    def _solve_moving(out, moving: list, chunk: int, last: bool, symmetric: bool, solve: Callable):
        """Solve the collected entries still moving (``moving``: ``(rows, cols, ...)`` per chunk,
        any further arrays per entry) into ``out`` in whole chunks as they come (memory
        O(chunk)), and all of the rest when ``last``, by ``solve(rows, cols, ..., chunk)``;
        ``moving`` keeps what is left."""
        if not moving or (not last and sum(item[0].size for item in moving) < chunk):
            return
        arrays = [np.concatenate(x) for x in zip(*moving)]
        size = arrays[0].size
        ready = size if last else size - size % chunk
        moving[:] = [tuple(x[ready:] for x in arrays)]
        if ready:
            arrays = [x[:ready] for x in arrays]
            Kernel._write_entries(out, arrays[0], arrays[1], solve(*arrays, chunk), symmetric)

    @staticmethod
    def _write_entries(out, rows, cols, values, symmetric: bool):
        out[rows, cols] = values
        if symmetric:
            out[cols, rows] = values

    def _series_certify(
        self, problem: GramProblem, options: SolveOptions, ax, ay, i, j, roots, gram_series, pending, size: int
    ):
        """The entries ``(i, j)`` whose first-terms ``roots`` the series' tiles could not certify,
        solved again from there with every term (:meth:`_series_pass`), ``size`` at a time (the
        last block padded to a power of two, at least 1024: few compiled shapes); those still
        uncertified are appended to ``pending`` (:meth:`_refine`). Their values."""
        exact = options.diagonal == "exact"
        values = np.empty(i.size)
        for part, idx in _padded_blocks(i.size, size, smallest=1024):
            problems = _problems_of(problem, options, ax, ay, i[idx].astype(np.int32), j[idx].astype(np.int32))
            a, b, c_s, mux, muy, _, same = (np.asarray(v)[: part.size] for v in problems)
            ti, tj = i[part], j[part]
            p = np.array(roots[part], dtype=np.float64)
            local = np.arange(part.size)
            ok = self._series_pass(gram_series, local, (ti, tj), p, (a, b, c_s, mux, muy), options.lam, (ti, tj))
            bad = np.flatnonzero(~ok)
            if bad.size:
                pending.append(tuple(x[bad] for x in (ti, tj, p, a, b, c_s, mux, muy, same)))
            values[part] = np.asarray(_finish(jnp.asarray(p), a, b, same, exact))
        return values

    def _series_moving(self, problem: GramProblem, options: SolveOptions, ax, ay, i, j, gram_series, pending: list):
        """The entries ``(i, j)`` a series' tiles left unsolved or uncertified, solved entry by
        entry as in a small Gram matrix (:meth:`_fixed_chunk`: the first terms, then every term),
        in chunks of the series' size; those still uncertified are appended to ``pending``
        (:meth:`_refine`)."""
        block = (1 << 22) // min(gram_series.terms, _FIRST_TERMS)
        size = min(block, max(16, solver.pow2_at_least(i.size)))
        values = np.empty(i.size)
        for part, idx in _padded_blocks(i.size, size):
            ii, jj = i[idx].astype(np.int32), j[idx].astype(np.int32)
            chunk_problems = _problems_of(problem, options, ax, ay, ii, jj)
            v, uncertain = self._fixed_chunk(chunk_problems, options, ii, jj, gram_series, part.size)
            if uncertain is not None:
                pending.append(uncertain)
            values[part] = np.asarray(v)[: part.size]
        return values

    def _moving_entries(
        self, problem: GramProblem, options: SolveOptions, ax, ay, i, j, size: int, smallest: int | None = None
    ):
        """The entries ``(i, j)`` still moving after the whole-chunk passes, solved again from
        their start (the same iterates, continued) in one compiled call per ``size`` of them
        (the last call padded to ``size``, or to a power of two, at least ``smallest``)."""
        values = np.empty(i.size)
        for part, idx in _padded_blocks(i.size, size, smallest):
            # int32 as everywhere else: other index types would be another compiled program
            ii, jj = i[idx].astype(np.int32), j[idx].astype(np.int32)
            packed = np.asarray(self._chunk_call(problem, options, ax, ay, ii, jj, True)[0])
            values[part] = self._solved(packed, problem, options, ax, ay, ii, jj)[: part.size]
        return values

    def _solved(self, packed, problem: GramProblem, options: SolveOptions, ax, ay, i, j):
        """The values of a whole solve (:func:`_chunk_program` with ``solve``: ``value + i·status``)
        of the entries ``(i, j)``; a failure raises :class:`ConvergenceError` naming its entry."""
        status = packed.imag.astype(np.int64)
        if status.any():
            i, j = (np.broadcast_to(x, np.broadcast_shapes(i.shape, j.shape)).reshape(-1) for x in (i, j))
            a, b, c_s, mux, muy, _, same = _problems_of(problem, options, ax, ay, i, j)
            self._report(status, a=a, b=b, c=c_s, mux=mux, muy=muy, lam=options.lam, i=i, j=j, same=same)
        return packed.real

    def _refine(self, pending: list, ax, ay, symmetric: bool, options: SolveOptions):
        """Entries the series could not certify, solved again from their series roots: with the
        long series (tables for their inputs only) and, where that cannot certify either, with
        the quadrature update. Returns ``(rows, cols, values, long_entries, quadrature_entries)``."""
        i, j, p, a, b, c_s, mux, muy, same = (np.concatenate(x) for x in zip(*pending))
        lam = options.lam
        if symmetric:
            inputs, where = np.unique(np.concatenate([i, j]), return_inverse=True)
            li, lj = where[: i.size], where[i.size :]
            long = series.GramSeries(self.module, ax[inputs], ax[inputs], True, long=True)
        else:
            rows_in, li = np.unique(i, return_inverse=True)
            cols_in, lj = np.unique(j, return_inverse=True)
            long = series.GramSeries(self.module, ax[rows_in], ay[cols_in], False, long=True)
        ok = self._series_pass(long, np.arange(i.size), (li, lj), p, (a, b, c_s, mux, muy), lam, (i, j))
        left = ~ok
        rest = np.flatnonzero(left)
        for lo in range(0, rest.size, _QUADRATURE_CHUNK):
            part = rest[lo : lo + _QUADRATURE_CHUNK]
            idx, sub = _padded(part, (p, a, b, c_s, mux, muy))
            q, _ = self._newton_pairs(self._pair_step, sub[0], sub[1:], (), idx, i, j, lam)
            p[part] = np.asarray(q)[: part.size]
        values = np.asarray(_finish(jnp.asarray(p), a, b, same, options.diagonal == "exact"))
        return i, j, values, i.size - rest.size, rest.size

    def _series_pass(self, gram_series, part: np.ndarray, tables: tuple, p: np.ndarray, problem: tuple, lam, where):
        """Solve the entries ``part`` again with every term of ``gram_series`` from their roots
        ``p`` (updated in place); whether each is certified. ``tables``: the entries' rows in its
        tables; ``problem``: ``(a, b, c_solve, μ, μ')``; ``where``: their ``(i, j)`` in the matrix."""
        ok = np.zeros(part.size, bool)
        size = (1 << 22) // gram_series.terms  # coefficients per call: 32 MiB
        for lo in range(0, part.size, size):
            chunk = slice(lo, min(lo + size, part.size))
            idx, sub = _padded(part[chunk], (*tables, p, *problem))
            ti, tj, start, a, b, c_s, mux, muy = sub
            D = gram_series.coefficients(ti, tj, c_s, mux, muy)
            q, _ = self._newton_pairs(
                self._series_step, start, (a, b, c_s, mux, muy), (D,), idx, where[0], where[1], lam
            )
            count = chunk.stop - chunk.start
            ok[chunk] = np.asarray(gram_series.certified(ti, tj, q, a, b))[:count]
            p[part[chunk]] = np.asarray(q)[:count]
        return ok

    def _newton_pairs(self, step, p0, problem, extra, idx, i, j, lam):
        """Newton from ``p0`` for the problems ``(a, b, c_solve, μ, μ')``, reporting a failure at
        its entry ``(i, j)[idx]``."""
        a, b, c_s, mux, muy = problem
        lo, hi = _bracket(a, b, None, False)
        q, status = solver.newton(solver.pair_iteration, step, p0, lo, hi, (a, b, c_s, mux, muy, lam, *extra), False)
        self._report(status, a=a, b=b, c=c_s, mux=mux, muy=muy, lam=lam, i=i[idx], j=j[idx])
        return q, status

    def _steps_chunk(self, problems: ChunkProblems, lam, stops):
        """The T-step values ``(len(stops), chunk)`` of one chunk under tracing."""
        p = problems
        return solver.pair_steps(
            self._pair_step, self._diag_step, stops, p.a, p.b, p.c_solve, p.mu_x, p.mu_y, p.start, p.same, lam
        )

    def _report(self, status, *, lam, i=None, j=None, **values):
        status = np.asarray(status)
        if not np.any(status):
            return
        k = int(np.argmax(status != 0))
        what = "diverges" if status[k] == 1 else f"does not converge in {MAX_ITER} iterations"
        which = values.pop("which", "X")
        same = values.pop("same", None)
        identical = same is not None and bool(np.asarray(same)[k])
        pick = {key: float(np.asarray(v)[k]) if np.ndim(v) else float(v) for key, v in values.items()}
        bound = self.lambda_bound(pick["cd"], pick["mu"]) if i is None else 0.0
        if i is not None:
            hint = (
                "the off-diagonal map has no attracting root reachable from the start (a larger lam makes it contract)"
            )
        elif bound is None:
            hint = (
                "D(a) grows faster than a (sigma or rho grows faster than linearly): no lam bounds the iteration "
                "from every start"
            )
        elif bound > 0:
            hint = f"the diagonal iteration needs lam > {bound:.6g} to stay bounded for every start"
        else:
            hint = "the map has no fixed point reachable from this start"
        if i is None:
            where = f"diagonal entry {k} of {which}"
            detail = f"start a0 = {pick['a0']:.6g}, c(x, x) = {pick['cd']:.6g}, mu = {pick['mu']:.6g}"
        else:
            where = f"entry ({int(i[k])}, {int(j[k])})" + (
                " (identical inputs: the continuous part asked for by diagonal='limit')" if identical else ""
            )
            detail = (
                f"a = {pick['a']:.6g}, b = {pick['b']:.6g}, c = {pick['c']:.6g}, mu(x) = {pick['mux']:.6g}, "
                f"mu(x') = {pick['muy']:.6g}"
            )
        raise ConvergenceError(
            f"the fixed-point iteration {what} at {where} ({detail}, lam = {float(lam):.6g}); "
            f"{hint}. Try a larger lam, a smaller start (psi0) or a finite number of steps."
        )


def _padded_blocks(count: int, size: int, smallest: int | None = None):
    """``(part, idx)`` for each block of ``size`` positions of ``range(count)``: ``idx`` is
    ``part`` padded with its first position to ``size`` (one compiled shape), or, given
    ``smallest``, a short last block to a power of two, at least ``smallest`` (few shapes)."""
    for lo in range(0, count, size):
        part = np.arange(lo, min(lo + size, count))
        padded = size if smallest is None else min(size, max(smallest, solver.pow2_at_least(part.size)))
        yield part, np.concatenate([part, np.full(padded - part.size, lo)])


def _problems_of(problem: GramProblem, options: SolveOptions, ax, ay, i, j) -> ChunkProblems:
    """The scalar problems (:func:`_prepare`) of the entries ``(i, j)`` of ``problem``."""
    x, y, start = problem.x, problem.y, problem.start
    sides = (ax, ay, x.mu, y.mu, problem.entries_args, start.correlation_args)
    return _prepare(problem.entries, start.correlation, options.diagonal == "limit", i, j, *sides)


def _diagonal_blocks(step, start, cd, mu, lam, whole: bool = True):
    """The diagonal fixed points from ``start`` (host arrays), :data:`dekc.moments.ROW_BLOCK`
    inputs per solve (the last block padded with its first input): the compiled iteration does
    not depend on ``n``. ``whole``: each block in one compiled loop (:func:`dekc.solver.newton_whole`,
    for a cheap update), else iterated from the host, finished entries leaving the arrays
    (:func:`dekc.solver.newton`). Returns ``(values, statuses)``."""
    n = start.shape[0]
    size = min(moments.ROW_BLOCK, max(16, solver.pow2_at_least(n)))
    a, status = np.empty(n), np.empty(n, dtype=np.int64)
    for part, idx in _padded_blocks(n, size):
        args = (cd[idx], mu[idx], lam)
        bracket = (start[idx], np.zeros(size), np.full(size, np.inf))
        if whole:
            values, flags = solver.newton_whole(solver.diagonal_iteration, step, *bracket, args)
        else:
            values, flags = solver.newton(solver.diagonal_iteration, step, *bracket, args, False)
        a[part], status[part] = np.asarray(values)[: part.size], np.asarray(flags)[: part.size]
    return a, status


_buffer_callback: Callable | None  # a callback that writes XLA's output buffer in place
try:
    from jax.experimental.buffer_callback import buffer_callback as _buffer_callback
except ImportError:  # pragma: no cover - older JAX: the result is copied out of a pure_callback
    _buffer_callback = None


def _host_solves() -> bool:
    """Whether a traced fixed point takes its values from the eager solver: on XLA:CPU, where
    the callback writes the host's result in place (on an accelerator the traced solver stays
    there)."""
    return jax.default_backend() == "cpu"


def _problem_arrays(problem: GramProblem) -> tuple:
    """The arrays of ``problem`` (what :func:`_with_arrays` puts back)."""
    x, y, start = problem.x, problem.y, problem.start
    return (x.cd, x.mu, y.cd, y.mu, problem.entries_args, start.a0_x, start.a0_y, start.correlation_args)


def _with_arrays(problem: GramProblem, arrays: tuple) -> GramProblem:
    cdx, mux, cdy, muy, entries_args, a0_x, a0_y, correlation_args = arrays
    start = dataclasses.replace(problem.start, a0_x=a0_x, a0_y=a0_y, correlation_args=correlation_args)
    return dataclasses.replace(problem, x=Side(cdx, mux), y=Side(cdy, muy), entries_args=entries_args, start=start)


def _flat_sides(sides) -> list:
    return [leaf for side in sides for leaf in (_flat_sides(side) if isinstance(side, tuple) else [side])]


def _localizable(problem: GramProblem) -> bool:
    """Whether every array of ``problem`` is indexed by one input only (along its last axis)."""
    sides = (problem.sides, problem.start.sides)
    return all(side is not None for side in sides) and all(side is not None for side in _flat_sides(sides))


class _Row(NamedTuple):
    """Where :func:`_pack` put one array: columns ``start…`` of the ``side`` pack (``"x"`` or
    ``"y"``), as ``shape`` (the leading axes) and ``dtype``; ``side`` ``""``: the ``start``-th
    unpacked argument. (A tuple: the compiled program's cache compares layouts at every call.)"""

    side: str
    start: int
    shape: tuple = ()
    dtype: str = ""


class _Packs(NamedTuple):
    """The arrays of a :func:`_localizable` problem packed by input: ``x`` ``(n, columns)`` and
    ``y`` ``(m, columns)`` float64, the ``layout`` (:class:`_Row` per array, static) and the
    arguments indexed by neither input (``scalars``)."""

    x: np.ndarray
    y: np.ndarray
    layout: tuple
    scalars: tuple


def _pack(problem: GramProblem, ax, ay) -> _Packs:
    """The arrays of ``problem`` and the variances ``ax``, ``ay`` (host arrays) side by side, one
    row per input (integer row ids are exact in float64; an array met twice is packed once): a
    chunk then takes its rows' and columns' data with one gather of whole rows and one transfer
    per input."""
    columns: dict = {"x": [], "y": []}
    placed: dict = {}  # an array (its memory and layout) and its side -> its _Row
    scalars: list = []

    def place(arg, side):
        if isinstance(arg, tuple):  # (one side for every array of a tuple, or one each)
            return tuple(place(a, s) for a, s in zip(arg, side if isinstance(side, tuple) else (side,) * len(arg)))
        if not side:
            scalars.append(arg)
            return _Row("", len(scalars) - 1)
        arr = np.asarray(arg)
        key = (arr.__array_interface__["data"][0], arr.shape, arr.strides, arr.dtype.str, side)
        if key not in placed:
            start = sum(block.shape[1] for block in columns[side])
            columns[side].append(arr.reshape(-1, arr.shape[-1]).T.astype(np.float64))
            placed[key] = _Row(side, start, arr.shape[:-1], arr.dtype.str)
        return placed[key]

    layout = (
        place((ax, problem.x.mu), ("x", "x")),
        place((ay, problem.y.mu), ("y", "y")),
        place(problem.entries_args, problem.sides),
        place(problem.start.correlation_args, problem.start.sides),
        place(problem.extra, ("x", "y")),
    )
    x, y = (np.ascontiguousarray(np.concatenate(columns[side], axis=1)) for side in ("x", "y"))
    return _Packs(x, y, layout, tuple(scalars))


def _unpack(layout, x, y, scalars):
    """The arrays :func:`_pack` placed by ``layout``, from the packs' rows ``x``, ``y``."""
    if not isinstance(layout, _Row):
        return tuple(_unpack(part, x, y, scalars) for part in layout)
    if not layout.side:
        return scalars[layout.start]
    size = int(np.prod(layout.shape, dtype=np.int64))
    block = (x if layout.side == "x" else y)[:, layout.start : layout.start + size]
    return block.T.reshape(*layout.shape, -1).astype(layout.dtype)


@functools.lru_cache(maxsize=8)
def _local_indices(shape_i: tuple, shape_j: tuple):
    """Indices ``0, 1, …`` in the shapes of the entries' rows and columns (on the device once)."""
    return (
        jax.device_put(np.arange(int(np.prod(shape_i)), dtype=np.int32).reshape(shape_i)),
        jax.device_put(np.arange(int(np.prod(shape_j)), dtype=np.int32).reshape(shape_j)),
    )


def _identified(problem: GramProblem) -> GramProblem:
    """``problem`` (numpy arrays) with the inputs' rows, which a traced Gram matrix compares
    entry by entry, replaced by integer row ids (:func:`dekc.moments.row_ids`)."""
    args, entries = problem.entries_args, problem.entries
    if not (isinstance(entries, functools.partial) and entries.func is moments.gram_entries) or np.ndim(args[0]) != 2:
        return problem
    ids = moments.row_ids(args[0], args[1], problem.symmetric)
    return dataclasses.replace(problem, entries_args=(*ids, *args[2:]))


def _progress(progress, total, chunk):
    """``report(done)`` after each block and ``report(None)`` at the end, for ``progress``
    None/False (nothing), True (a tqdm bar when there is more than one block) or a callable."""
    if callable(progress):
        return lambda done: None if done is None else progress(done, total)
    if progress is not None and not isinstance(progress, bool):
        raise InputError(f"progress must be True, False, None or a callable(done, total), got {progress!r}")
    if not progress or total <= chunk:
        return lambda done: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="entries", unit_scale=True, desc="dekc gram", leave=False)

    def report(done):
        if done is None:
            bar.close()
        else:
            bar.update(done - bar.n)

    return report


def _entries_of(start, stop, n, m, symmetric):
    """Row and column indices of the flat entries ``start:stop`` in row-major order of the
    upper triangle with its diagonal (``symmetric``) or of the whole ``n × m`` matrix."""
    if not symmetric:
        flat = np.arange(start, stop, dtype=np.int64)
        return flat // m, flat % m
    r = np.arange(n + 1, dtype=np.int64)
    offsets = r * n - r * (r - 1) // 2  # flat index of entry (r, r); offsets[n] = the total
    first, last = np.searchsorted(offsets, [start, stop - 1], side="right") - 1
    # the chunk is a run of whole rows, cut at both ends: repeat each row over its entries there
    counts = np.minimum(offsets[first + 1 : last + 2], stop) - np.maximum(offsets[first : last + 1], start)
    rows = np.repeat(np.arange(first, last + 1), counts)
    return rows, rows + np.arange(start, stop, dtype=np.int64) - np.repeat(offsets[first : last + 1], counts)


def _tiles(n, m, symmetric):
    """The square tiles of :data:`_TILE` rows and columns that cover the ``n × m`` matrix (its
    upper triangle when ``symmetric``), in row-major order: their first rows, first columns and
    the entries of each that are wanted."""
    blocks_n, blocks_m = -(-n // _TILE), -(-m // _TILE)
    rb, cb = np.divmod(np.arange(blocks_n * blocks_m), blocks_m)
    if symmetric:
        rb, cb = rb[cb >= rb], cb[cb >= rb]
    rows, cols = rb * _TILE, cb * _TILE
    height, width = np.minimum(_TILE, n - rows), np.minimum(_TILE, m - cols)
    counts = np.where(symmetric & (rb == cb), height * (height + 1) // 2, height * width)
    return rows, cols, counts


def _write_tiles(out, values, rows, cols, symmetric=False):
    """``out`` at the tiles of ``values`` ``(tiles, tile, tile)`` whose first rows and columns
    are ``rows``, ``cols`` (cut at the edges of ``out``): a run of whole tiles side by side in
    one row band is one copy into a strided view of ``out``. With ``symmetric`` (tiles of the
    upper triangle) each tile is also written transposed below the diagonal, and a tile on the
    diagonal takes its upper triangle's values on both sides."""
    n, m = out.shape
    band = np.flatnonzero(np.diff(rows) != 0) + 1  # runs of tiles in one row band (in column order)
    for t0, t1 in zip(np.r_[0, band].tolist(), np.r_[band, rows.size].tolist()):
        r0, c0, c1 = int(rows[t0]), int(cols[t0]), int(cols[t1 - 1]) + _TILE
        whole = t1 if c1 <= m else t1 - 1  # the last tile of the band may be cut at the edge
        if r0 + _TILE <= n and whole > t0 and c1 - c0 == (t1 - t0) * _TILE:
            width = (whole - t0) * _TILE
            view = out[r0 : r0 + _TILE, c0 : c0 + width].reshape(_TILE, whole - t0, _TILE)
            view.transpose(1, 0, 2)[...] = values[t0:whole]
            if symmetric:
                out[c0 : c0 + width, r0 : r0 + _TILE].reshape(whole - t0, _TILE, _TILE)[...] = values[
                    t0:whole
                ].transpose(0, 2, 1)
        else:
            whole = t0
        for t in range(whole, t1):
            r0, c0 = int(rows[t]), int(cols[t])
            tile = values[t, : n - r0, : m - c0]
            out[r0 : r0 + _TILE, c0 : c0 + _TILE] = tile
            if symmetric:
                out[c0 : c0 + _TILE, r0 : r0 + _TILE] = tile.T
    if symmetric:
        for t in np.flatnonzero(rows == cols).tolist():
            r0 = int(rows[t])
            upper = np.triu(values[t, : n - r0, : n - r0])
            out[r0 : r0 + _TILE, r0 : r0 + _TILE] = upper + np.triu(upper, 1).T


def _chunk_entries(start, chunk, total, n, m, symmetric):
    """``(i, j, k)``: the ``k`` entries from flat index ``start`` on (:func:`_entries_of`), as
    int32, padded to ``chunk`` with the first one (one compiled shape for every chunk)."""
    i, j = _entries_of(start, min(start + chunk, total), n, m, symmetric)
    k = i.size
    pad = np.full(chunk - k, i[0]), np.full(chunk - k, j[0])
    return np.concatenate([i, pad[0]]).astype(np.int32), np.concatenate([j, pad[1]]).astype(np.int32), k


def _row_offsets(r, n):
    """Flat index of entry ``(r, r)`` in the row-major upper triangle of an ``n × n`` matrix."""
    return r * n - r * (r - 1) // 2


def _flat_entries(flat, n, m, symmetric):
    """:func:`_entries_of` on the device: the row and column of each flat index."""
    if not symmetric:
        return flat // m, flat % m
    # the row solves r² − (2n + 1)r + 2·flat ≥ 0; the float estimate is off by at most one
    b = 2.0 * n + 1.0
    r = jnp.floor((b - jnp.sqrt(b * b - 8.0 * flat)) / 2).astype(flat.dtype)
    r = jnp.where(_row_offsets(r + 1, n) <= flat, r + 1, r)
    r = jnp.where(_row_offsets(r, n) > flat, r - 1, r)
    return r, r + flat - _row_offsets(r, n)


def _write(out, rows, cols, values):
    """``out[rows, cols] = values`` for indices in row-major order, by contiguous row segments
    (much faster than fancy indexing)."""
    cuts = np.flatnonzero(np.diff(rows)) + 1
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, rows.size]):
        r, c0, c1 = rows[start], cols[start], cols[stop - 1] + 1
        out[r, c0:c1] = values[start:stop]


_MIRROR_BLOCK = 256


def _mirror(out):
    """Copy the upper triangle of the square ``out`` onto the lower one, in place, by square
    blocks (a transposed copy of rows is cache-friendly; column by column it is not)."""
    n = out.shape[0]
    for r0 in range(0, n, _MIRROR_BLOCK):
        r1 = min(r0 + _MIRROR_BLOCK, n)
        block = out[r0:r1, r0:r1]
        below = np.tril_indices(r1 - r0, -1)
        block[below] = block.T[below]
        for c0 in range(r1, n, _MIRROR_BLOCK):
            c1 = min(c0 + _MIRROR_BLOCK, n)
            out[c0:c1, r0:r1] = out[r0:r1, c0:c1].T


# -- per-chunk compiled pieces ---------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _prepare(entries_fn, corr_fn, limit, i, j, ax, ay, mux, muy, entries_args, corr_args) -> ChunkProblems:
    """The scalar problems of one chunk.

    Identical inputs get a harmless problem (``c = μ = 0``, start 0) unless ``limit``, which
    starts them just below full correlation.
    """
    c, same = entries_fn(i, j, *entries_args)
    # full correlation is a fixed point of the map for collinear inputs (and repelling under a
    # Heaviside ρ): distinct inputs start just inside it so the iteration can leave it
    corr = jnp.clip(corr_fn(i, j, *corr_args), -_LIMIT_START, _LIMIT_START)
    a, b = ax[..., i], ay[..., j]
    mx, my = mux[i], muy[j]
    if limit:
        c_s = c
    else:
        c_s, mx, my, corr = (jnp.where(same, 0.0, v) for v in (c, mx, my, corr))
    a0, b0 = (a[0], b[0]) if ax.ndim == 2 else (a, b)  # T-step trajectories: start from the first row
    # only c_solve is returned: XLA:CPU evaluates a fusion's inputs once per output that needs them
    return ChunkProblems(a, b, c_s, mx, my, corr * jnp.sqrt(a0 * b0), same)


def _for_tiles(problem: GramProblem, ax, ay):
    """``(problem, ax, ay)`` ready for :func:`_tile_call`: a :func:`_localizable` problem packed
    by input (:func:`_pack`: each call takes its rows' and columns' data), another one with its
    arrays on the device once (host arrays would be transferred at every call)."""
    if _localizable(problem):
        ax, ay = np.asarray(ax), np.asarray(ay)
        problem = _with_arrays(problem, jax.tree_util.tree_map(np.asarray, _problem_arrays(problem)))
        return dataclasses.replace(problem, packs=_pack(problem, ax, ay)), ax, ay
    ax, ay = jnp.asarray(ax), jnp.asarray(ay)
    problem = dataclasses.replace(problem, extra=jax.tree_util.tree_map(jnp.asarray, problem.extra))
    return _with_arrays(problem, jax.tree_util.tree_map(jnp.asarray, _problem_arrays(problem))), ax, ay


def _pipelined(rows, cols, per_call: int, shape: tuple, dispatch: Callable):
    """The tiles whose first rows and columns are ``rows``, ``cols``, ``per_call`` to a call (the
    last one padded with its last tile): ``dispatch(i, j)`` is called for a call's int32 entry
    indices (``(tiles, tile, 1)`` and ``(tiles, 1, tile)``, cut at the edges of ``shape``), and
    ``(start, stop, i, j, dispatched)`` is yielded for its tiles ``start:stop`` once the next call
    is dispatched: the host's work on one call's values overlaps the next call's. A last call of
    at most ``1/``:data:`_TAIL_FRACTION` of ``per_call`` tiles is padded only to a power of two."""
    n, m = shape
    previous = None
    for lo in range(0, rows.size + per_call, per_call):
        current = None
        if lo < rows.size:
            size = per_call
            if rows.size - lo <= per_call // _TAIL_FRACTION:
                size = solver.pow2_at_least(rows.size - lo)
            pick = np.minimum(np.arange(lo, lo + size), rows.size - 1)
            i = np.minimum(rows[pick, None] + _TILE_RANGE, n - 1).astype(np.int32)[:, :, None]
            j = np.minimum(cols[pick, None] + _TILE_RANGE, m - 1).astype(np.int32)[:, None, :]
            current = (lo, min(lo + per_call, rows.size), i, j, dispatch(i, j))
        if previous is not None:
            yield previous
        previous = current


def _tile_call(problem: GramProblem, program: Callable, statics: tuple, ax, ay, i, j, *rest):
    """``program(*statics, i, j, ax, ay, μ, μ', entries_args, correlation_args, *rest)`` for the
    entries ``(i, j)`` (int32 host indices), dispatched (the device array, not waited for). A
    problem with ``packs`` (:func:`_pack`) passes only the rows and the columns of these entries,
    indexed locally: the program's shapes do not depend on ``n``."""
    packs = problem.packs
    if packs is not None:
        x, y = np.take(packs.x, i.reshape(-1), axis=0), np.take(packs.y, j.reshape(-1), axis=0)
        local = _local_indices(i.shape, j.shape)
        return programs.call(_packed_program, (packs.layout, program, statics), (*local, x, y, packs.scalars, *rest))
    x, y, start = problem.x, problem.y, problem.start
    arrays = (problem.entries_args, start.correlation_args, problem.extra)
    return program(*statics, i, j, ax, ay, x.mu, y.mu, *arrays, *rest)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _packed_program(layout, program, statics, i, j, x, y, scalars, *rest):
    """``program`` (:func:`_chunk_program`, :func:`_steps_program`) from the rows ``x``, ``y`` of
    a problem's packs (:func:`_pack`)."""
    (ax, mux), (ay, muy), entries_args, corr_args, extra = _unpack(layout, x, y, scalars)
    return program(*statics, i, j, ax, ay, mux, muy, entries_args, corr_args, extra, *rest)


@functools.partial(jax.jit, static_argnums=tuple(range(5)))
def _steps_program(
    entries_fn, corr_fn, step, diagonal_step, stops, i, j, ax, ay, mux, muy, entries_args, corr_args, extra, lam
):
    """The ``T``-step values ``(len(stops), *shape)`` of the entries ``(i, j)`` (broadcasting
    together to ``shape``) in one compiled program: their problems (:func:`_prepare`; ``ax``,
    ``ay`` the diagonal rows of :meth:`Kernel._diagonal`), then :func:`dekc.solver.pair_steps`."""
    problems = _prepare(entries_fn, corr_fn, False, i, j, ax, ay, mux, muy, entries_args, corr_args)
    return solver.pair_steps(step, diagonal_step, stops, *problems, lam, (mux[i], muy[j]))


@functools.partial(jax.jit, static_argnums=tuple(range(9)))
def _chunk_program(
    entries_fn, corr_fn, step, passes, limit, exact, solve, series_spec, predictor, i, j, ax, ay, mux, muy, *rest
):
    """The entries ``(i, j)`` in one compiled program: their problems (:func:`_prepare`), the
    bracket, then :func:`dekc.solver.fast_passes` (``solve`` False) or the whole solve,
    :func:`dekc.solver.solve_passes`, and :func:`_finish`. ``i`` and ``j`` are int32 host
    indices that broadcast together: flat ``(k,)`` both, or tiles, ``(tiles, rows, 1)`` and
    ``(tiles, 1, columns)``; the result has their broadcast shape. With ``solve``, it is
    ``value + i·status`` (complex128); after the passes alone, the values, NaN for the entries
    still moving. Nothing else: XLA:CPU would evaluate the passes again for every further output
    (the whole solve also returns the starts, NaN for identical inputs: computed before the passes;
    with a ``predictor``, the start's correlation function whose correlations predict the roots,
    ``Start.fit_correlation``, those correlations times ``√(ab)`` instead).
    (Computing flat ``(i, j)`` here from the chunk's first flat index made the program 2 ms
    slower per chunk of 2¹⁷ entries than taking them from the host, 0.4 ms.)"""
    entries_args, corr_args, extra, lam, fit = rest
    a, b, c_s, mx, my, p0, same = _prepare(entries_fn, corr_fn, limit, i, j, ax, ay, mux, muy, entries_args, corr_args)
    lo, hi = _bracket(a, b, same, exact)
    predicted = jnp.zeros((), bool)
    guide = None if predictor is None else jnp.clip(predictor(i, j, *corr_args), -1.0, 1.0)
    if fit is not None:  # start where the roots of a solved sample predict (:meth:`Kernel._start_fit`)
        p0, predicted = _fitted_start(fit, a, b, p0, same, guide)
    if solve:  # what the sample's roots are fitted against
        guide = p0 if guide is None else guide * jnp.sqrt(a * b)
    # computed once: otherwise XLA evaluates the gathers and input moments again in every pass
    a, b, c_s, mx, my, p0, same, lo, hi, predicted, guide = jax.lax.optimization_barrier(
        (a, b, c_s, mx, my, p0, same, lo, hi, predicted, guide)
    )
    args = (a, b, c_s, mx, my, lam)
    if solve:  # on flat arrays
        shape = p0.shape
        p0, lo, hi, a, b, c_s, mx, my, same, guide = (
            jnp.broadcast_to(x, shape).reshape(-1) for x in (p0, lo, hi, *args[:5], same, guide)
        )
        p, status = solver.solve_passes(step, passes, p0, lo, hi, a, b, c_s, mx, my, lam)
        packed = jax.lax.complex(_finish(p, a, b, same, exact), status.astype(p.dtype)).reshape(shape)
        return packed, jnp.where(same, jnp.nan, guide).reshape(shape)
    if series_spec is not None:  # the series' coefficients per entry (:func:`dekc.series.tile_coefficients`)
        weights, terms, tolerance = series_spec
        (xs, tails_x), (ys, tails_y) = extra
        args = (*args, series.tile_coefficients(weights, xs, ys, i, j, c_s, mx, my))
    z = solver.fast_passes(step, passes, p0, lo, hi, *args)[0]
    done = jnp.imag(z) > 0
    if series_spec is not None:  # the roots, and which of them the first terms do not certify
        uncertified = done & ~series.tile_certified(terms, tolerance, tails_x, tails_y, i, j, jnp.real(z), a, b)
        value = jnp.where(done, _finish(jnp.real(z), a, b, same, exact), jnp.nan)
        return jax.lax.complex(value, uncertified.astype(value.dtype))
    if fit is not None:  # a root away from the prediction is solved again from the input's start
        done = done & (~predicted | (jnp.abs(jnp.real(z) - p0) <= fit[-1] * jnp.sqrt(a * b)))
    return jnp.where(done, _finish(jnp.real(z), a, b, same, exact), jnp.nan)


def _chebyshev_fit(u, y, degree: int):
    """The coefficients of the least-squares Chebyshev series of ``degree`` through the points
    ``(u, y)`` (``u`` in ``[−1, 1]``), by the normal equations, without BLAS or LAPACK: their
    calls start OpenBLAS's threads, whose spinning after the call took one of two cores from the
    XLA programs that followed (measured: the Gram matrix at n = 2000 took 88 ms against 66 ms
    with OPENBLAS_NUM_THREADS=1). The Gram matrix of the basis comes from the sums of
    ``T_0 … T_2degree`` (``2·T_a·T_b = T_(a+b) + T_|a−b|``): 0.2 ms for 4096 points, against
    0.34 ms for the product of the design matrix with itself."""
    sums, rhs = [], []
    previous, current = np.ones_like(u), u
    for k in range(2 * degree + 1):
        if k >= 2:
            previous, current = current, 2.0 * u * current - previous
        t = previous if k == 0 else current
        sums.append(float(t.sum()))
        if k <= degree:
            rhs.append(float(np.einsum("i,i", t, y)))
    size = degree + 1
    A = [[0.5 * (sums[a + b] + sums[abs(a - b)]) for b in range(size)] for a in range(size)]
    scale = [math.sqrt(A[a][a]) if A[a][a] > 0.0 else 1.0 for a in range(size)]
    A = [[A[a][b] / (scale[a] * scale[b]) for b in range(size)] for a in range(size)]
    rhs = [rhs[a] / scale[a] for a in range(size)]
    # Cholesky factor of A, then two triangular solves, on Python floats (a few columns: each
    # numpy call would cost more than its arithmetic)
    L = [[0.0] * size for _ in range(size)]
    for k in range(size):
        Lk = L[k]
        pivot = A[k][k] - sum(v * v for v in Lk[:k])
        if not pivot > 0.0:  # not positive definite to rounding: no fit (the caller rejects NaN)
            return np.full(size, np.nan)
        Lk[k] = math.sqrt(pivot)
        for r in range(k + 1, size):
            Lr = L[r]
            Lr[k] = (A[r][k] - sum(p * q for p, q in zip(Lr[:k], Lk[:k]))) / Lk[k]
    z = [0.0] * size
    for k in range(size):
        z[k] = (rhs[k] - sum(L[k][t] * z[t] for t in range(k))) / L[k][k]
    c = [0.0] * size
    for k in range(size - 1, -1, -1):
        c[k] = (z[k] - sum(L[t][k] * c[t] for t in range(k + 1, size))) / L[k][k]
    return np.asarray(c) / np.asarray(scale)


def _fit_variable(r, xp=jnp):
    """``w = √(1 − r) − √(1 + r)`` of correlations ``r`` (clipped to ``[−1, 1]``): decreasing, and
    an analytic function of the angle ``arccos(r)``, so the scaled roots of a homogeneous kernel,
    which have square-root terms at full correlation as functions of ``r``, are smooth in it
    (measured at n = 2000, degree 12: nine samples in ten within 1.0e-6 of the fit, against
    2.6e-5 in ``r``; the angle itself does about as well, at 1.8 times the cost)."""
    r = xp.clip(r, -1.0, 1.0)
    return xp.sqrt(1.0 - r) - xp.sqrt(1.0 + r)


def _fitted_start(fit, a, b, p0, same, r=None):
    """The start ``√(ab)·f(w)`` (``w`` of :func:`_fit_variable`) for the entries whose correlation
    ``r`` (default: the start's, ``p0/√(ab)``) has its ``w`` in the fit's range (``fit``: the
    coefficients of a Chebyshev series on ``[low, high]``, then ``low``, ``high`` and
    ``accept``), ``p0`` for the others; and which entries took the prediction."""
    coefficients, low, high = fit[:-3], fit[-3], fit[-2]
    sab = jnp.sqrt(a * b)
    if r is None:
        r = jnp.where(sab > 0, p0 / jnp.where(sab > 0, sab, 1.0), 0.0)
    w = _fit_variable(r)
    predicted = (w >= low) & (w <= high) & ~same & (sab > 0)
    u = (2.0 * w - (low + high)) / (high - low)
    # Clenshaw's recurrence
    b1 = b2 = jnp.zeros_like(u)
    for k in range(coefficients.shape[0] - 1, 0, -1):
        b1, b2 = 2.0 * u * b1 - b2 + coefficients[k], b1
    value = jnp.clip(u * b1 - b2 + coefficients[0], -_LIMIT_START, _LIMIT_START)
    return jnp.where(predicted, value * sab, p0), predicted


def _padded(part: np.ndarray, arrays: tuple) -> tuple[np.ndarray, list]:
    """``part`` padded with its first index to a power of two (at least 16; few compiled shapes),
    and the arrays at those indices."""
    size = max(16, solver.pow2_at_least(part.size))
    idx = np.concatenate([part, np.full(size - part.size, part[0])])
    return idx, [jnp.asarray(x[idx]) for x in arrays]


@functools.partial(jax.jit, static_argnums=3)
def _bracket(a, b, same, exact):
    """The starting bracket ``[−√(ab), √(ab)]``: an off-diagonal entry lies there
    (Cauchy–Schwarz); ``[0, 0]`` for identical inputs under ``exact`` (they take the diagonal
    value)."""
    sab = jax.lax.stop_gradient(jnp.sqrt(a * b))
    if exact:
        return jnp.where(same, 0.0, -sab), jnp.where(same, 0.0, sab)
    return -sab, sab


@functools.partial(jax.jit, static_argnums=4)
def _finish(p, a, b, same, exact):
    p = jnp.where((a > 0) & (b > 0), p, 0.0)  # Ψ(x, x) = 0 means z(x) = 0
    return jnp.where(same, a, p) if exact else p


# -- checks ----------------------------------------------------------------------------------------


def _padded_side(inputs: np.ndarray, diagonal: np.ndarray, part: slice, pad: int):
    """``(inputs[part], diagonal[:, part])``, padded to ``pad`` inputs with copies of the first,
    and the number of real ones."""
    X, d = inputs[part], diagonal[:, part]
    count = X.shape[0]
    if count < pad:
        X = np.concatenate([X, np.repeat(X[:1], pad - count, axis=0)])
        d = np.concatenate([d, np.repeat(d[:, :1], pad - count, axis=1)], axis=1)
    return (X, d), count


def _block_slice(s, size: int, name: str) -> slice:
    """``s`` as a slice ``start:stop`` (step 1) inside ``range(size)``, not empty."""
    if not isinstance(s, slice) or s.step not in (None, 1):
        raise InputError(f"{name} must be a slice start:stop of step 1, got {s!r}")
    start, stop, _ = s.indices(size)
    if stop <= start:
        raise InputError(f"{name} = {s!r} selects no input of {size}")
    return slice(start, stop)


def _check_options(steps, diagonal):
    """Validate ``steps`` and ``diagonal``; returns ``steps`` as None, an int or a tuple of ints."""
    validate.choice(diagonal, "diagonal", ("exact", "limit"))
    if steps is None:
        return None
    what = (
        f"steps must be None (the fixed point), a whole number of iterations up to {validate.MAX_STEPS} or a "
        "non-empty sequence of them (a stack of T-step kernels)"
    )
    try:
        if isinstance(steps, (list, tuple, range, np.ndarray)):
            if np.ndim(steps) != 1 or len(steps) == 0:
                raise InputError("")
            return tuple(validate.count(t, "steps", maximum=validate.MAX_STEPS) for t in steps)
        return validate.count(steps, "steps", maximum=validate.MAX_STEPS)
    except InputError:
        raise InputError(f"{what}, got {steps!r}") from None


def _check_parameter_scales(lam, feature_scale) -> None:
    """``λ²`` and ``s²`` enter every update as factors: both must be in the validated range."""
    for name, value in (("lam", lam), ("feature_scale", feature_scale)):
        validate.check_scale(
            [float(value) ** 2 if abs(float(value)) < 1e154 else np.inf],
            f"{name}²",
            what=f"{name} = {float(value):.6g}",
            advice=f"choose {name} within [1e-75, 1e75]",
        )


def _check_result_memory(steps, n, m):
    """The result (and the solver's working set) must fit in the memory the process may use."""
    layers = len(steps) if isinstance(steps, tuple) else 1
    shape = f"({layers}, {n}, {m})" if isinstance(steps, tuple) else f"({n}, {m})"
    nbytes = 8.0 * layers * n * m * 1.2 + 64e6  # the output, its mirror writes, and the solver's blocks
    validate.check_memory(
        nbytes,
        f"the {shape} float64 Gram matrix",
        "write it to disk block by block (dekc.blocks.gram_to_zarr, or dekc gram ... -o K.zarr), use a Nyström "
        "approximation (dekc.nystrom), or use fewer inputs",
    )


def _raise_nonfinite(values, which, what, lam, steps, bound):
    bad = ~np.isfinite(np.asarray(values))
    if bad.any():
        k = int(np.argmax(bad))
        hint = f"lam > {bound:.6g} keeps it bounded" if bound is not None else "a smaller start may help"
        raise ConvergenceError(
            f"the {steps}-step {what} overflows at entry {k} of {which} with lam = {float(lam)}: {hint}"
        )

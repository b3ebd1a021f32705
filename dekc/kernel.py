"""The DEKer runtime: compiled kernels, input moments, the fixed-point and T-step solvers.

For inputs ``x̃ = (input_scale·x, bias)`` and a feature map ``f`` the input moments are
``c(x, x') = s² E[f(w) f(w')]`` and ``μ(x) = s E[f(w)]``, computed by the same
expectation engine (``c(x, x)`` by the one-point form). The kernel is then, entry by entry,

* the diagonal ``a = D(a)`` (a scalar problem per input), and
* every off-diagonal entry ``p = G(p; a, b, c, μ, μ')`` as its own scalar problem,

solved vectorised in fixed-size chunks (memory O(n²) for the result plus O(chunk)).

**Fixed point** (``steps=None``): a safeguarded Newton iteration that returns the root the plain
iteration reaches from ``psi0``. Each entry keeps a bracket: where ``G(p) > p`` the iteration
moves up, so the root it reaches lies above ``p`` (``lo = p``), and below where ``G(p) < p``
(``hi = p``). A Newton step is taken only when ``G'(p) < 1`` (it then moves in the direction of
the iteration) and lands inside the bracket; otherwise the plain step ``G(p)`` (or the bracket
midpoint). Every root found this way has ``G − p`` decreasing through it, i.e. ``G' ≤ 1``: a
repelling root (``G' > 1``, such as full correlation under a Heaviside ``ρ``) is never returned.
An entry has converged when a Newton step is below ``1e-9`` of its scale (``√(ab)`` off the
diagonal, ``a`` on it); convergence is quadratic, so the value after that step is exact to
rounding: ``|G(p) − p| ≤ 1e-13·scale`` is tested.

**Gradients** with respect to ``lam``, ``feature_scale``, ``input_scale`` and ``bias`` use the
implicit function theorem at the fixed point, ``dp/dθ = (∂G/∂θ)/(1 − ∂G/∂p)``, implemented as
one Newton correction whose denominator is held constant: the solver's loop is never unrolled.

**Identical inputs** (equal ``x̃`` rows; equal moments in :meth:`Kernel.from_moments`) get the
diagonal value; ``diagonal="limit"`` solves the off-diagonal equation there instead, starting
just below full correlation, which gives ``lim_{x'→x} k(x, x')`` (the kernel has a nugget under a Heaviside ``ρ``).
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import sympy as sp

from . import codegen
from ._jax import jax, jnp
from . import validate
from .errors import ConvergenceError, DekcWarning, InputError
from .budget import limited
from .expectations import _TINY, check_tolerance, gaussian_expectation
from .expressions import as_eta_expression, parse_number
from .links import link as derive_link
from .registry import family as lookup_family
from .validate import is_traced

#: an entry has converged once a Newton step is below this fraction of its scale: convergence is
#: quadratic, so the value after that step is accurate to rounding (|G(p) − p| ≤ 1e-13·scale is tested)
STEP_TOL = 1e-9
#: or once its bracket is this narrow (when Newton is not usable)
BRACKET_TOL = 1e-14
MAX_ITER = 200
_ESCAPE = 1e150  # iterates beyond this are diverging
_LIMIT_START = 1 - 1e-6  # starts (and diagonal="limit") stay this far inside full correlation
_CHUNK = 1 << 17
_MIN_COMPACT = 256
_DOT_COLUMNS = 64


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


# -- solvers ---------------------------------------------------------------------------------------

def _newton_iteration(step, p, lo, hi, scale):
    """One safeguarded Newton iteration for ``p = G(p)``, elementwise (see the module docstring).

    ``step(p) -> (G(p), G'(p))``. Returns ``(p, lo, hi, converged)``.
    """
    g, dg = step(p)
    F = g - p
    lo = jnp.where(F > 0, jnp.maximum(lo, p), lo)
    hi = jnp.where(F < 0, jnp.minimum(hi, p), hi)
    slope = dg - 1.0
    newton = p - F / jnp.where(slope < 0, slope, -1.0)
    # G' may be infinite where it is legitimately so (full correlation under a Heaviside ρ):
    # Newton is then skipped for the plain step (or the bracket's midpoint)
    use_newton = (slope < 0) & (newton >= lo) & (newton <= hi)
    middle = jnp.where(hi < jnp.inf, 0.5 * (lo + hi), g)
    new = jnp.where(use_newton, newton, jnp.where((g > lo) & (g < hi), g, middle))
    new = jnp.where(F == 0, p, new)
    small = jnp.abs(new - p) <= STEP_TOL * scale
    converged = (F == 0) | (small & use_newton) | (hi - lo <= BRACKET_TOL * scale)
    return new, lo, hi, converged


_UNROLL = 1  # iterations per compiled call (then finished entries can leave at once)


def _iterate(step, state, scale):
    p, lo, hi, done = state
    for _ in range(_UNROLL):
        new, lo, hi, converged = _newton_iteration(step, p, lo, hi, scale)
        # converged entries stay put: at a root, rounding flips the sign of G − p and could
        # otherwise send a bracket step away from it
        p = jnp.where(done, p, new)
        done = done | converged
    broken = ~jnp.isfinite(p) | (jnp.abs(p) > _ESCAPE)
    finished = done | broken
    return (p, lo, hi, done), finished, broken, jnp.sum(~finished)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def _pair_iteration(step, state, a, b, c, mux, muy, lam):
    sab = jnp.maximum(jnp.sqrt(a * b), 1e-300)
    return _iterate(lambda p: step(p, a, b, c, mux, muy, lam), state, sab)


@functools.partial(jax.jit, static_argnums=0)
def _diagonal_iteration(step, state, cd, mu, lam):
    return _iterate(lambda a: step(a, cd, mu, lam), state, jnp.maximum(jnp.abs(state[0]), 1e-300))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _loop(iteration, step, state, *args):
    """The iteration under tracing: a ``while_loop`` (its iterations are never differentiated)."""
    def cond(carry):
        return (carry[3] < MAX_ITER) & jnp.any(~carry[1])

    def body(carry):
        new, finished, broken, _ = iteration(step, carry[0], *args)
        return new, finished, broken, carry[3] + _UNROLL

    p = state[0]
    init = (state, jnp.zeros(p.shape, bool), jnp.zeros(p.shape, bool), jnp.asarray(0))
    return jax.lax.while_loop(cond, body, init)


def _newton(iteration, step, p0, lo, hi, args, traced):
    """Iterate from ``p0`` until every entry has converged or failed. Returns ``(p, status)``:
    0 converged, 1 diverged or non-finite, 2 out of iterations.

    Eagerly, every few iterations are one compiled call over the whole chunk (top-level XLA
    fusions use every core, loop bodies do not), and entries that have finished leave the
    arrays: once at most a quarter is still active, the rest are gathered into a smaller
    power-of-two size (few compiled shapes). Under tracing, a ``while_loop``.
    """
    state = (p0, lo, hi, jnp.zeros(p0.shape, bool))
    if traced:
        (p, _, _, _), finished, broken, _ = _loop(iteration, step, state, *args)
        return p, jnp.where(finished & ~broken, 0, jnp.where(broken, 1, 2))
    size = p0.shape[0]
    where = np.arange(size)  # position in the caller's arrays of each working entry
    p_out, status_out = np.empty(size), np.full(size, 2)
    args = [jnp.broadcast_to(x, p0.shape) if np.ndim(x) else x for x in args]
    for _ in range(0, MAX_ITER, _UNROLL):
        state, finished, broken, active = iteration(step, state, *args)
        active = int(active)
        n = state[0].shape[0]
        if active == 0 or (active <= n // 4 and n > _MIN_COMPACT):
            p, finished, broken = np.asarray(state[0]), np.asarray(finished), np.asarray(broken)
            p_out[where[finished]] = p[finished]
            status_out[where[finished]] = np.where(broken[finished], 1, 0)
            if active == 0:
                break
            keep = np.flatnonzero(~finished)
            keep = np.concatenate([keep, np.full(max(_MIN_COMPACT, _pow2_at_least(active)) - active, keep[0])])
            state, args = _gather(state, args, jnp.asarray(keep.astype(np.int32)))
            where = where[keep]  # padding repeats an active entry: it writes the same value
    else:
        p, finished = np.asarray(state[0]), np.asarray(finished)
        p_out[where[~finished]] = p[~finished]
    return jnp.asarray(p_out), jnp.asarray(status_out)


@jax.jit
def _gather(state, args, keep):
    """The entries ``keep`` of every working array, on the device (one call, no host copies);
    scalar arguments pass through."""
    return tuple(x[keep] for x in state), [x[keep] if jnp.ndim(x) else x for x in args]


def _implicit(step, p_star):
    """``p*`` with the derivative ``(∂G/∂θ)/(1 − G')`` attached (one Newton correction, frozen slope)."""
    p = jax.lax.stop_gradient(p_star)
    g, dg = step(p)
    slope = jax.lax.stop_gradient(1.0 - dg)
    return p + (g - p) / jnp.where(slope == 0, 1.0, slope)


# -- the compiled kernel ---------------------------------------------------------------------------

class Kernel:
    """A compiled DEKer. Build it with :func:`compile_kernel`.

    Attributes: ``family`` (name), ``sigma``, ``rho``, ``R`` (sympy in ``eta``), ``methods``
    (``{"sigma,sigma": "closed-form", ...}``), ``error_bounds``, ``source`` (the generated
    module's text), ``path`` (its cache file), ``module`` (the imported module).
    """

    def __init__(self, module, path, source: str, link_factory, link=None):
        self.module = module
        self.path = path
        self.source = source
        self.methods = dict(module.METHODS)
        self.error_bounds = dict(module.ERROR_BOUNDS)
        self.family = module.METADATA["family"]
        self._link_factory = link_factory
        self._link = link
        self._pair_step = jax.jit(module.update_and_dp)
        self._diag_step = jax.jit(module.diagonal_update_and_da)
        # quadrature kernels evaluate NODES_PER_ENTRY points per entry: bound the chunk by 2^24 points
        self._chunk = max(1, min(_CHUNK, (1 << 24) // max(1, module.NODES_PER_ENTRY)))

    # -- link data (derived again lazily when the module came from the cache) --------------------
    @property
    def link(self):
        if self._link is None:
            self._link = self._link_factory()
        return self._link

    sigma = property(lambda self: self.link.sigma, doc="The activation σ = (A∘R)' (sympy, in eta).")
    rho = property(lambda self: self.link.rho, doc="ρ = R' (sympy, in eta).")
    R = property(lambda self: self.link.R, doc="The link reparameterisation R (sympy, in eta).")

    def __repr__(self) -> str:
        meta = self.module.METADATA
        return f"Kernel({self.family}, {meta['route']}={meta['spec']!r}, methods={self.methods})"

    def lambda_bound(self, c=1.0, mu=0.0):
        """``√(lim_{a→∞} λ²D(a)/a)`` for an input with ``c(x, x) = c`` and ``μ(x) = mu``: for smaller
        ``λ`` the diagonal iteration diverges from large starts. ``0.0`` when ``D`` grows slower
        than ``a``; ``None`` when it grows faster (then no ``λ`` bounds it from every start)."""
        m = self.module
        c = validate.real(c, "c", nonnegative=True, what="lambda_bound")
        mu = validate.real(mu, "mu", what="lambda_bound")
        validate.check_scale([c, mu * mu if abs(mu) < 1e154 else np.inf], "c and mu²", what="lambda_bound",
                             advice="rescale the input moments")
        # far enough out that the lower-order terms (c, μ√a) are below 1e-3 of the leading one
        a = jnp.asarray([1e12, 1e16]) * max(1.0, c, mu * mu)
        growth = (m.K_sigma_sigma_one_point(a) - 2 * mu * m.K_sigma_rho_one_point(a) + c * m.K_rho_rho_one_point(a))
        ratio = np.asarray(growth) / np.asarray(a)
        if not np.all(np.isfinite(ratio)) or ratio[1] > 2 * abs(ratio[0]) + 1e-12:
            return None
        if abs(ratio[1]) <= 1e-12:
            return 0.0
        return float(np.sqrt(abs(ratio[1]))) if abs(ratio[1] - ratio[0]) <= 1e-3 * abs(ratio[1]) else None

    # -- public entry points ----------------------------------------------------------------------
    def gram(self, X, Y=None, *, lam=2.0, feature_scale=1.0, input_scale=1.0, bias=0.0, features="relu",
             steps=None, psi0="input", diagonal="exact", progress=None):
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
        _check_result_memory(steps, X.shape[0], Y.shape[0])
        if not traced:
            _check_parameter_scales(lam, feature_scale)
            for which, inputs in (("X", X), ("Y", Y)):
                validate.check_scale(_squared_norms(np.asarray(inputs), input_scale, bias),
                                     "|x̃|² = input_scale²|x|² + bias²", what=f"inputs {which}",
                                     advice="rescale the inputs (X, input_scale, bias)")
        Ef = _feature_expectations(features)
        xt = _augment(X, input_scale, bias)
        yt = xt if symmetric else _augment(Y, input_scale, bias)
        nx, ny = jnp.sum(xt * xt, axis=1), jnp.sum(yt * yt, axis=1)
        # x̃·ỹ entry by entry from the rows for few columns (no n × m temporary, and every entry
        # is computed the same way whichever matrix it belongs to); as a matrix product otherwise
        gx = (xt.T, yt.T) if xt.shape[1] <= _DOT_COLUMNS else xt @ yt.T
        s2 = jnp.square(feature_scale)
        cdx, cdy = s2 * Ef["ff"].one_point(nx), s2 * Ef["ff"].one_point(ny)
        mux, muy = feature_scale * Ef["f1"].one_point(nx), feature_scale * Ef["f1"].one_point(ny)
        if not traced:
            for which, moments in (("X", cdx), ("Y", cdy)):
                validate.check_scale(moments, "c(x, x)", what=f"input moments of {which}",
                                     advice="rescale feature_scale or the inputs")
        entries = (Ef["entries"], (*_row_ids(xt, yt, symmetric), nx, ny, gx, cdx, s2))
        start = _start(psi0, nx, ny, gx, symmetric, X.shape[0])
        return self._solve(cdx, cdy, mux, muy, entries, start, lam, steps, diagonal, symmetric,
                           traced, (X.shape[0], Y.shape[0]), progress)

    def from_moments(self, c, mu, *, lam=2.0, steps=None, psi0="constant", diagonal="exact", progress=None):
        """The same kernel from input moments: ``c`` ``(n, n)`` PSD and ``mu`` ``(n,)``.

        Entries with ``c_ij = c_ii = c_jj`` and ``μ_i = μ_j`` are identical inputs (diagonal
        value). ``psi0`` is ``"constant"`` (every entry 1) or an ``(n, n)`` array.
        """
        traced = is_traced(c, mu, lam, psi0)
        if not traced:
            c, mu = validate.input_moments(c, mu)
            validate.check_scale(np.diagonal(c), "c(x, x)", what="input moments",
                                 advice="rescale c by t and mu by √t (for a positively homogeneous kernel the result "
                                        "scales by t)")
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
        start = _start(psi0, None, None, None, True, n)
        return self._solve(cd, cd, mu, mu, (_moment_entries, (c, cd, mu)), start, lam, steps, diagonal, True,
                           traced, (n, n), progress)

    # -- the solver -------------------------------------------------------------------------------
    def _solve(self, cdx, cdy, mux, muy, entries, start, lam, steps, diagonal, symmetric, traced, shape,
               progress=None):
        """Diagonal first, then every entry ``(i, j)`` (``i ≤ j`` when symmetric) in chunks.

        ``steps``: None (the fixed point), an int, or a tuple of ints (a stack of T-step kernels).
        """
        n, m = shape
        (a0x, a0y), (corr_fn, corr_args) = start
        entries_fn, entries_args = entries
        stops = steps if isinstance(steps, tuple) else None if steps is None else (steps,)
        ax = self._diagonal(a0x, cdx, mux, lam, stops, traced, "X")
        ay = ax if symmetric else self._diagonal(a0y, cdy, muy, lam, stops, traced, "Y")
        total = n * (n + 1) // 2 if symmetric else n * m
        chunk = min(self._chunk, _pow2_at_least(total))
        pieces = []
        layers = 1 if stops is None else len(stops)
        out = jnp.zeros((layers, *shape)) if traced else np.empty((layers, *shape))
        values = []
        limit = diagonal == "limit" and steps is None
        report = _progress(None if traced else progress, total, chunk)
        try:
            for lo in range(0, total, chunk):
                i, j = _entries_of(lo, min(lo + chunk, total), n, m, symmetric)
                k = i.size
                if k < chunk:  # pad with the first entry: one compiled shape for every chunk
                    i, j = np.concatenate([i, np.full(chunk - k, i[0])]), np.concatenate([j, np.full(chunk - k, j[0])])
                problem = _prepare(entries_fn, corr_fn, limit, i, j, ax if stops else ax[-1], ay if stops else ay[-1],
                                   mux, muy, entries_args, corr_args)
                if stops is None:
                    v = self._fixed_chunk(problem, lam, diagonal, traced, i, j)[None]
                else:
                    v = self._steps_chunk(problem, lam, stops, traced, i, j)
                v = v[:, :k]
                if traced:
                    values.append(v)
                    pieces.append((i[:k], j[:k]))
                else:
                    v = np.asarray(v)
                    for layer in range(layers):
                        _write(out[layer], i[:k], j[:k], v[layer], symmetric)
                    report(lo + k)
        finally:
            report(None)
        if traced:
            v = jnp.concatenate(values, axis=1)
            rows, cols = (np.concatenate(idx) for idx in zip(*pieces))
            out = out.at[:, rows, cols].set(v)
            if symmetric:
                out = out.at[:, cols, rows].set(v)
        return out if isinstance(steps, tuple) else out[0]

    def _diagonal(self, a0, cd, mu, lam, stops, traced, which):
        """Diagonal values: the fixed point ``(1, n)``, or for T-step kernels the rows ``(start,
        c(x, x), values after each stop in sorted order)``, ``(2 + #stops, n)``: the off-diagonal
        iteration recomputes the diagonal trajectory as it goes (memory O(n), whatever T)."""
        if stops is not None:
            order = tuple(sorted(set(stops)))
            at_stops = _diagonal_steps(self._diag_step, order, a0, cd, mu, lam)
            if not traced:
                _raise_nonfinite(at_stops[-1], which, "diagonal", lam, order[-1], self.lambda_bound())
                self._check_diagonal_scale(at_stops, which, lam)
            return jnp.concatenate([jnp.broadcast_to(a0, cd.shape)[None], cd[None], at_stops])
        sg = jax.lax.stop_gradient
        start = jnp.maximum(sg(a0), 0.0)
        a, status = _newton(_diagonal_iteration, self._diag_step, start, jnp.zeros_like(start),
                            jnp.full_like(start, jnp.inf), (sg(cd), sg(mu), sg(lam)), traced)
        if not traced:
            self._report(status, a0=a0, which=which, lam=lam, cd=cd, mu=mu)
            self._check_diagonal_scale(a, which, lam)
            return a[None, :]
        a = jnp.where(status == 0, a, jnp.nan)
        return _implicit(lambda t: self._diag_step(t, cd, mu, lam), a)[None, :]

    @staticmethod
    def _check_diagonal_scale(values, which, lam):
        validate.check_scale(values, "k(x, x)", what=f"the kernel's diagonal for {which} (lam = {float(lam):.6g})",
                             advice="rescale the inputs or feature_scale, or choose lam further from the value "
                                    "that makes the kernel vanish or blow up")

    def _fixed_chunk(self, problem, lam, diagonal, traced, i, j):
        a, b, c, c_s, mux, muy, p0, same = problem
        sg = jax.lax.stop_gradient
        sab = _bounds(a, b)
        if diagonal == "exact":  # identical inputs take the diagonal value: their bracket [0, 0] is solved at once
            lo, hi = jnp.where(same, 0.0, -sab), jnp.where(same, 0.0, sab)
        else:
            lo, hi = -sab, sab
        p, status = _newton(_pair_iteration, self._pair_step, sg(p0), lo, hi,
                            (sg(a), sg(b), sg(c_s), sg(mux), sg(muy), sg(lam)), traced)
        if not traced:
            self._report(status, a=a, b=b, c=c, mux=mux, muy=muy, lam=lam, i=i, j=j, same=same)
        else:
            p = jnp.where(status == 0, p, jnp.nan)
            p = _implicit(lambda q: self._pair_step(q, a, b, c_s, mux, muy, lam), p)
        return _finish(p, a, b, same, diagonal == "exact")

    def _steps_chunk(self, problem, lam, stops, traced, i, j):
        """The T-step values ``(len(stops), chunk)`` of one chunk."""
        p = _pair_steps(self._pair_step, self._diag_step, stops, *problem, lam)
        if not traced:
            bad = ~np.isfinite(np.asarray(p))
            if bad.any():
                layer, k = np.unravel_index(int(np.argmax(bad)), bad.shape)
                raise ConvergenceError(f"the {stops[layer]}-step kernel overflows at entry ({i[k]}, {j[k]}) with "
                                       f"lam = {float(lam)}: use fewer steps, a larger lam or a smaller psi0")
        return p

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
            hint = "the off-diagonal map has no attracting root reachable from the start (a larger lam makes it contract)"
        elif bound is None:
            hint = "D(a) grows faster than a (sigma or rho grows faster than linearly): no lam bounds the iteration " \
                   "from every start"
        elif bound > 0:
            hint = f"the diagonal iteration needs lam > {bound:.6g} to stay bounded for every start"
        else:
            hint = "the map has no fixed point reachable from this start"
        if i is None:
            where = f"diagonal entry {k} of {which}"
            detail = f"start a0 = {pick['a0']:.6g}, c(x, x) = {pick['cd']:.6g}, mu = {pick['mu']:.6g}"
        else:
            where = f"entry ({int(i[k])}, {int(j[k])})" + (
                " (identical inputs: the continuous part asked for by diagonal='limit')" if identical else "")
            detail = (f"a = {pick['a']:.6g}, b = {pick['b']:.6g}, c = {pick['c']:.6g}, mu(x) = {pick['mux']:.6g}, "
                      f"mu(x') = {pick['muy']:.6g}")
        raise ConvergenceError(f"the fixed-point iteration {what} at {where} ({detail}, lam = {float(lam):.6g}); "
                               f"{hint}. Try a larger lam, a smaller start (psi0) or a finite number of steps.")


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
    counts = np.minimum(offsets[first + 1:last + 2], stop) - np.maximum(offsets[first:last + 1], start)
    rows = np.repeat(np.arange(first, last + 1), counts)
    return rows, rows + np.arange(start, stop, dtype=np.int64) - np.repeat(offsets[first:last + 1], counts)


def _write(out, rows, cols, values, symmetric):
    """``out[rows, cols] = values`` (and the mirror image) for indices in row-major order, by
    contiguous row segments (much faster than fancy indexing)."""
    cuts = np.flatnonzero(np.diff(rows)) + 1
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, rows.size]):
        r, c0, c1 = rows[start], cols[start], cols[stop - 1] + 1
        out[r, c0:c1] = values[start:stop]
        if symmetric:
            out[c0:c1, r] = values[start:stop]


# -- per-chunk compiled pieces ---------------------------------------------------------------------

def _gram_entries(pair, i, j, same_x, same_y, nx, ny, gx, cdx, s2):
    """``c(x_i, y_j)`` and whether the two inputs are identical.

    ``same_x``, ``same_y`` are row ids (equal ids: equal ``x̃`` rows), or the ``x̃`` rows
    themselves (compared entry by entry) when they are traced. ``pair`` is the feature pair form
    for positive variances; a zero variance is floored at 1e-300 (the limit).
    """
    if same_x.ndim == 1:
        same = same_x[i] == same_y[j]
    else:
        same = jnp.all(same_x[i] == same_y[j], axis=1)
    # identical pairs take the one-point value; the pair form sees c = 0 there (its gradient at
    # full correlation is infinite and would poison the where)
    c = jnp.where(same, cdx[i], s2 * pair(jnp.maximum(nx[i], _TINY), jnp.maximum(ny[j], _TINY),
                                           jnp.where(same, 0.0, _dot(gx, i, j))))
    return c, same


def _dot(gx, i, j):
    """``x̃_i·ỹ_j``: ``gx`` is the matrix of products or the pair of transposed inputs ``(x̃ᵀ, ỹᵀ)``
    (one gather per column and input: much cheaper than gathering rows)."""
    if isinstance(gx, tuple):
        xs, ys = gx
        out = xs[0][i] * ys[0][j]
        for k in range(1, xs.shape[0]):
            out = out + xs[k][i] * ys[k][j]
        return out
    return gx[i, j]


def _moment_entries(i, j, c, cd, mu):
    same = (c[i, j] == cd[i]) & (cd[i] == cd[j]) & (mu[i] == mu[j])
    return c[i, j], same


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _prepare(entries_fn, corr_fn, limit, i, j, ax, ay, mux, muy, entries_args, corr_args):
    """The scalar problems of one chunk: ``(a, b, c, c for the solve, μ, μ', start, identical)``.

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
    if a.ndim == 2:  # T-step trajectories: start from the first row
        return a, b, c_s, mx, my, corr * jnp.sqrt(a[0] * b[0]), same
    return a, b, c, c_s, mx, my, corr * jnp.sqrt(a * b), same


@jax.jit
def _bounds(a, b):
    """``√(ab)``: an off-diagonal entry lies in ``[−√(ab), √(ab)]`` (Cauchy–Schwarz)."""
    return jax.lax.stop_gradient(jnp.sqrt(a * b))


@functools.partial(jax.jit, static_argnums=4)
def _finish(p, a, b, same, exact):
    p = jnp.where((a > 0) & (b > 0), p, 0.0)  # Ψ(x, x) = 0 means z(x) = 0
    return jnp.where(same, a, p) if exact else p


def _slots(order):
    """``slot[t]``: the row of the output that receives the value after ``t`` steps (−1: none)."""
    slot = np.full(order[-1] + 1, -1, dtype=np.int32)
    slot[list(order)] = np.arange(len(order))
    return jnp.asarray(slot)


def _keep(slot, t, value, out):
    return jax.lax.cond(slot[t] >= 0, lambda: out.at[slot[t]].set(value), lambda: out)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _diagonal_steps(update, order, a0, cd, mu, lam):
    """The diagonal values after each number of steps in ``order`` (sorted), ``(len(order), n)``,
    from ``a0``: one loop, memory O(n) whatever the number of steps."""
    slot = _slots(order)
    a0 = jnp.broadcast_to(a0, cd.shape)

    def step(t, carry):
        a = update(carry[0], cd, mu, lam)[0]  # the fixed point's generated update (its derivative is dropped)
        return a, _keep(slot, t + 1, a, carry[1])

    out = _keep(slot, 0, a0, jnp.zeros((len(order), *cd.shape), cd.dtype))
    return jax.lax.fori_loop(0, order[-1], step, (a0, out))[1]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _pair_steps(update, diagonal_update, stops, a, b, c, mux, muy, p0, same, lam):
    """Iterations of the off-diagonal map: the values after each number of steps in ``stops`` (a
    tuple), ``(len(stops), chunk)``, from one run.

    ``a`` and ``b`` are the rows ``(start, c(x, x), diagonal values at the sorted stops)`` of the two
    inputs (see :meth:`Kernel._diagonal`); the diagonal trajectories are advanced alongside the
    entry, so memory is O(chunk) whatever the number of steps. The T-step kernel is continuous in
    the inputs, so identical inputs take the diagonal values under either ``diagonal`` option.
    """
    order = tuple(sorted(set(stops)))
    slot = _slots(order)

    def step(t, carry):
        p, at, bt, out = carry
        p = update(p, at, bt, c, mux, muy, lam)[0]
        at = diagonal_update(at, a[1], mux, lam)[0]
        bt = diagonal_update(bt, b[1], muy, lam)[0]
        return p, at, bt, _keep(slot, t + 1, p, out)

    # one loop (the update is compiled once, whatever the number of stops)
    out = _keep(slot, 0, p0, jnp.zeros((len(order), *p0.shape), p0.dtype))
    out = jax.lax.fori_loop(0, order[-1], step, (p0, a[0], b[0], out))[3]
    out = jnp.where(same, a[2:], out)
    return out[jnp.asarray([order.index(stop) for stop in stops])]


# -- inputs ----------------------------------------------------------------------------------------

def _row_ids(xt, yt, symmetric):
    """Integer ids with equal ids exactly for equal rows of ``x̃`` (rows themselves when traced)."""
    if is_traced(xt, yt):
        return xt, yt
    rows = np.asarray(xt) if symmetric else np.concatenate([np.asarray(xt), np.asarray(yt)])
    ids = np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int32)
    return (jnp.asarray(ids), jnp.asarray(ids)) if symmetric else (jnp.asarray(ids[:len(xt)]), jnp.asarray(ids[len(xt):]))


def _augment(X, input_scale, bias):
    """``x̃ = (input_scale·x, bias)``."""
    return jnp.concatenate([input_scale * X, jnp.full((X.shape[0], 1), 1.0) * bias], axis=1)


def _check_options(steps, diagonal):
    """Validate ``steps`` and ``diagonal``; returns ``steps`` as None, an int or a tuple of ints."""
    validate.choice(diagonal, "diagonal", ("exact", "limit"))
    if steps is None:
        return None
    what = (f"steps must be None (the fixed point), a whole number of iterations up to {validate.MAX_STEPS} or a "
            "non-empty sequence of them (a stack of T-step kernels)")
    try:
        if isinstance(steps, (list, tuple, range, np.ndarray)):
            if np.ndim(steps) != 1 or len(steps) == 0:
                raise InputError("")
            return tuple(validate.count(t, "steps", maximum=validate.MAX_STEPS) for t in steps)
        return validate.count(steps, "steps", maximum=validate.MAX_STEPS)
    except InputError:
        raise InputError(f"{what}, got {steps!r}") from None


def _squared_norms(X: np.ndarray, input_scale: float, bias: float) -> np.ndarray:
    """``|x̃|²`` for each row, computed so that it neither underflows nor overflows before the range
    check (a row of 1e-170s has |x̃|² ≈ 1e-340: reported, not flushed to 0)."""
    xt = np.concatenate([X * float(input_scale), np.full((X.shape[0], 1), float(bias))], axis=1)
    top = np.max(np.abs(xt), axis=1)
    safe = np.where(top > 0, top, 1.0)
    with np.errstate(over="ignore", under="ignore"):
        log_norm = 2 * np.log10(safe) + np.log10(np.sum(np.square(xt / safe[:, None]), axis=1))
        return np.where(top > 0, 10.0 ** np.clip(log_norm, -320, 400), 0.0)  # 1e-320: still non-zero


def _check_parameter_scales(lam, feature_scale) -> None:
    """``λ²`` and ``s²`` enter every update as factors: both must be in the validated range."""
    for name, value in (("lam", lam), ("feature_scale", feature_scale)):
        validate.check_scale([float(value) ** 2 if abs(float(value)) < 1e154 else np.inf], f"{name}²",
                             what=f"{name} = {float(value):.6g}", advice=f"choose {name} within [1e-75, 1e75]")


def _check_result_memory(steps, n, m):
    """The result (and the solver's working set) must fit in the memory the process may use."""
    layers = len(steps) if isinstance(steps, tuple) else 1
    shape = f"({layers}, {n}, {m})" if isinstance(steps, tuple) else f"({n}, {m})"
    nbytes = 8.0 * layers * n * m * 1.2 + 64e6  # the output, its mirror writes, and the solver's blocks
    validate.check_memory(nbytes, f"the {shape} float64 Gram matrix",
                          "compute it in blocks of rows (gram(X[i:j], X)) and save each, or use fewer inputs")


def _correlation(dot, var_i, var_j):
    """``dot/√(var_i var_j)`` clipped to ``[−1, 1]``; 0 where a variance is 0."""
    norm = jnp.sqrt(var_i * var_j)
    return jnp.where(norm > 0, jnp.clip(dot / jnp.where(norm > 0, norm, 1.0), -1.0, 1.0), 0.0)


def _input_correlation(i, j, nx, ny, gx):
    return _correlation(_dot(gx, i, j), nx[i], ny[j])


def _array_correlation(i, j, psi, d):
    return _correlation(psi[i, j], d[i], d[j])


def _unit_correlation(i, j):
    return jnp.ones(i.shape)


def _start(psi0, nx, ny, gx, symmetric, n):
    """Diagonal starts ``(a0 for X, a0 for Y)`` and ``(function, arguments)`` giving the start
    correlation of entries ``(i, j)``."""
    if isinstance(psi0, str):
        if psi0 == "constant":
            ones = jnp.ones(n) if nx is None else jnp.ones_like(nx)
            return (ones, ones if ny is None else jnp.ones_like(ny)), (_unit_correlation, ())
        if psi0 == "input":
            return (nx, ny), (_input_correlation, (nx, ny, gx))
        raise InputError(f"psi0 must be 'input', 'constant' or an (n, n) array, got {psi0!r}")
    if psi0 is None or isinstance(psi0, (int, float, bool)):
        raise InputError(f"psi0 must be 'input', 'constant' or an (n, n) array, got {psi0!r}")
    if not symmetric:
        raise InputError("an array psi0 needs the square Gram matrix (Y omitted): it must give Psi_0 for every pair")
    if is_traced(psi0):
        psi = jnp.asarray(psi0, dtype=jnp.float64)
        if psi.shape != (n, n):
            raise InputError(f"psi0 must have shape ({n}, {n}), got {psi.shape}")
    else:
        psi = validate.square_matrix(psi0, "psi0", n)
        if np.any(np.diagonal(psi) < 0):
            raise InputError("psi0 must have a non-negative diagonal (Psi_0(x, x) = |z_0(x)|^2)")
        psi = jnp.asarray(psi)
    d = jnp.diagonal(psi)
    return (d, d), (_array_correlation, (psi, d))


def _raise_nonfinite(values, which, what, lam, steps, bound):
    bad = ~np.isfinite(np.asarray(values))
    if bad.any():
        k = int(np.argmax(bad))
        hint = f"lam > {bound:.6g} keeps it bounded" if bound is not None else "a smaller start may help"
        raise ConvergenceError(f"the {steps}-step {what} overflows at entry {k} of {which} with lam = {float(lam)}: {hint}")


@functools.lru_cache(maxsize=64)
def _feature_expectations_cached(f):
    ff = gaussian_expectation(f, f)
    # one function object per feature map, so the compiled chunk preparation is reused
    return {"ff": ff, "f1": gaussian_expectation(f, sp.Integer(1)),
            "entries": functools.partial(_gram_entries, ff._functions["positive"])}


def _feature_expectations(features):
    return _feature_expectations_cached(as_eta_expression(features, what="features"))


# -- compile ---------------------------------------------------------------------------------------

def compile_kernel(family, reparam=None, activation=None, *, kappa=None, tol: float = 1e-9, cache: bool = True,
                   **parameters) -> Kernel:
    """Compile the DEKer for ``family`` with a link ``reparam=`` or an ``activation=``.

    Runs link -> expectations -> code generation and imports the generated module. The module
    is cached (see :mod:`dekc.codegen`) under a hash of the inputs; a cached kernel loads without
    deriving anything. ``tol`` is the accuracy asked of quadrature-backed expectations.
    ``cache=False`` regenerates and overwrites the cache file.
    """
    fam = lookup_family(family, **parameters)
    if (reparam is None) == (activation is None):
        derive_link(fam, reparam, activation)  # raises the link stage's error
    tol = check_tolerance(tol)
    if not isinstance(cache, bool):
        raise InputError(f"cache must be True or False, got {cache!r}")
    kappa = None if kappa is None else parse_number(kappa, what="kappa")
    route, spec = ("reparam", reparam) if reparam is not None else ("activation", activation)
    spec_expr = as_eta_expression(spec, what=route)
    metadata = {"family": fam.name, "route": route, "spec": str(spec_expr),
                "kappa": None if kappa is None else str(kappa),
                "parameters": {k: str(v) for k, v in fam.parameters.items()}}
    digest = codegen.input_hash({**metadata, "A": str(fam.A), "domain": fam.domain_text, "theta": str(fam.theta),
                                 "tol": tol})
    path = codegen.cache_dir() / "kernels" / f"{fam.name}_{digest[:16]}.py"

    def make_link():
        return derive_link(fam, **{route: spec_expr}, kappa=kappa)

    the_link = None
    text = codegen.read_cached(path, digest) if cache else None
    if text is None:
        the_link = make_link()
        with limited(f"compiling the kernel of family '{fam.name}' with {route} = {str(spec_expr)[:80]}"):
            text = codegen.build_source(the_link, tol=tol, digest=digest, metadata=metadata)
        try:
            codegen.write_atomic(path, text)
        except OSError as exc:
            fallback = codegen.cache_dir_fallback()
            warnings.warn(f"cannot write the kernel cache {path} ({exc}); using {fallback}. Set DEKC_CACHE_DIR to a "
                          "writable directory.", DekcWarning, stacklevel=2)
            path = fallback / path.name
            codegen.write_atomic(path, text)
    module = codegen.load_module(text, path, digest)
    return Kernel(module, path, text, make_link, the_link)

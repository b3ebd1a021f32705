"""The scalar solvers of the DEKer: a safeguarded Newton iteration for fixed points, implicit
gradients, and T-step loops. Every routine works elementwise on arrays of independent scalar
problems ``p = G(p)``; nothing here knows about kernels or inputs.

**Fixed point**: a safeguarded Newton iteration that returns the root the plain iteration
``p ← G(p)`` reaches from the start. Each entry keeps a bracket: where ``G(p) > p`` the iteration
moves up, so the root it reaches lies above ``p`` (``lo = p``), and below where ``G(p) < p``
(``hi = p``). A Newton step is taken only when ``G'(p) < 1`` and it lands inside the bracket;
otherwise the plain step (or the bracket's midpoint). Every root found this way has ``G − p``
decreasing through it (``G' ≤ 1``): a repelling root is never returned. An entry has converged
when a Newton step is below :data:`STEP_TOL` of its scale, or its bracket is narrower than
:data:`BRACKET_TOL` of it.

**Gradients** at a fixed point use the implicit function theorem, ``dp/dθ = (∂G/∂θ)/(1 − ∂G/∂p)``,
as one Newton correction with its denominator held constant (:func:`implicit`): the loop is
never unrolled under differentiation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from . import programs
from ._jax import jax, jnp

#: an entry has converged once a Newton step is below this fraction of its scale: convergence is
#: quadratic, so the value after that step is accurate to rounding (|G(p) − p| ≤ 1e-13·scale is tested)
STEP_TOL = 1e-9
#: or once its bracket is this narrow (when Newton is not usable)
BRACKET_TOL = 1e-14
#: or (whole-array passes) once two Newton steps in a row estimate the error below this
#: fraction of the scale (see :func:`_fast_pass`)
QUADRATIC_TOL = 1e-16
#: iterations before an entry is reported as not converging
MAX_ITER = 200
#: status codes of :func:`newton`
CONVERGED, DIVERGED, EXHAUSTED = 0, 1, 2
_ESCAPE = 1e150  # iterates beyond this are diverging
_MIN_COMPACT = 256
#: the fewest off-diagonal problems that start with whole-array passes
MIN_PASSES_SIZE = 2 * _MIN_COMPACT
_UNROLL = 1  # iterations per compiled call (then finished entries can leave at once)
#: whole-chunk passes of :func:`newton` before the entries still moving are gathered (from the
#: input correlation most entries of a Gram matrix converge within four iterations)
FAST_PASSES = 4

#: ``step(p) -> (G(p), G'(p))``
Step = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


class Solution(NamedTuple):
    """Roots ``p`` and a status per entry: :data:`CONVERGED`, :data:`DIVERGED` (or non-finite)
    or :data:`EXHAUSTED` (out of iterations); numpy arrays, JAX arrays under tracing."""

    p: np.ndarray | jax.Array
    status: np.ndarray | jax.Array


def pow2_at_least(n: int) -> int:
    """The smallest power of two ``≥ n`` (1 for ``n ≤ 1``)."""
    return 1 << max(0, int(n - 1).bit_length())


def newton_iteration(step: Step, p, lo, hi, scale):
    """One safeguarded Newton iteration for ``p = G(p)``, elementwise. Returns ``(p, lo, hi, converged)``."""
    return _safeguarded(step, p, lo, hi, scale)[:4]


def _safeguarded(step: Step, p, lo, hi, scale):
    """:func:`newton_iteration`, and whether each step was a Newton step."""
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
    return new, lo, hi, converged, use_newton


def _iterate(step, state, scale):
    p, lo, hi, done = state
    for _ in range(_UNROLL):
        new, lo, hi, converged = newton_iteration(step, p, lo, hi, scale)
        # converged entries stay put: at a root, rounding flips the sign of G − p and could
        # otherwise send a bracket step away from it
        p = jnp.where(done, p, new)
        done = done | converged
    broken = ~jnp.isfinite(p) | (jnp.abs(p) > _ESCAPE)
    finished = done | broken
    return (p, lo, hi, done), finished, broken, jnp.sum(~finished)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def pair_iteration(step, state, a, b, c, mux, muy, lam, *extra):
    """One iteration of off-diagonal problems ``step(p, a, b, c, mux, muy, lam, *extra)``, scale ``√(ab)``."""
    sab = jnp.maximum(jnp.sqrt(a * b), 1e-300)
    return _iterate(lambda p: step(p, a, b, c, mux, muy, lam, *extra), state, sab)


@functools.partial(jax.jit, static_argnums=0)
def diagonal_iteration(step, state, cd, mu, lam):
    """One iteration of diagonal problems ``step(a, cd, mu, lam)``, scale ``|a|``."""
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


def _after_move(p, prev, lo, hi):
    """The bracket once the move ``prev → p`` is known: it followed the sign of ``G(prev) − prev``
    (see :func:`_fast_pass`), so ``prev`` becomes its lower end after a move up, its upper end
    after a move down."""
    return jnp.where(p > prev, jnp.maximum(lo, prev), lo), jnp.where(p < prev, jnp.minimum(hi, prev), hi)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _fast_pass(step, first, z, prev, lo, hi, a, b, c, mux, muy, lam, *extra):
    """One safeguarded Newton iteration of :func:`pair_iteration` whose only output computed from
    ``G`` is ``z = p + i·flag`` (complex128): the flag is 1 for an entry that has converged, −1
    for one still moving whose last step was a Newton step, 0 for the others.

    XLA:CPU fuses every output separately and evaluates ``G`` once per output that depends on it
    (six times for ``(p, lo, hi, converged)``). So the bracket is updated from the previous move
    instead: every step goes in the direction of the sign of ``G(p) − p`` (Newton with ``G' < 1``,
    the plain step, or the midpoint of a bracket that has just been moved to ``p``), so the move
    ``prev → p`` tells which end ``prev`` becomes. Converged entries stay put.

    Besides :func:`newton_iteration`'s tests, an entry has converged after two Newton steps in a
    row, ``s₁`` then ``s₂``, that show quadratic convergence well under way: the error after
    ``s₂`` is then ``C·s₂²`` with ``C ≈ s₂/s₁²``; it counts when that estimate, ``|s₂|³/s₁²``, is
    below :data:`QUADRATIC_TOL` of the scale, ``|s₂| ≤ |s₁|/100`` and ``|s₂|`` is a millionth of
    the distance to full correlation (where ``G`` may be singular). This saves the pass that
    would only confirm the root.
    """
    if first:  # z is the start p0 (real)
        p, done, newton_before = z, jnp.zeros(z.shape, bool), jnp.zeros(z.shape, bool)
    else:
        p, flag = jnp.real(z), jnp.imag(z)
        done, newton_before = flag > 0, flag < 0
        lo, hi = _after_move(p, jnp.real(prev), lo, hi)
    sab = jnp.maximum(jnp.sqrt(a * b), 1e-300)
    new, _, _, converged, newton = _safeguarded(lambda t: step(t, a, b, c, mux, muy, lam, *extra), p, lo, hi, sab)
    s1, s2 = jnp.abs(p - jnp.real(prev)), jnp.abs(new - p)
    quadratic = (
        newton_before
        & newton
        & (sab >= 1e-90)
        & (sab <= 1e90)  # where the cube below neither overflows nor underflows
        & (s2 * s2 * s2 <= QUADRATIC_TOL * sab * s1 * s1)
        & (100.0 * s2 <= s1)
        & (s2 <= 1e-6 * (sab - jnp.abs(new)))
    )
    flag = jnp.where(done | converged | quadratic, 1.0, jnp.where(newton, -1.0, 0.0))
    return jax.lax.complex(jnp.where(done, p, new), flag), lo, hi


@jax.jit
def _resume(z, prev, lo, hi, args, keep):
    """The working state of the entries ``keep`` after the fast passes (the bracket of their last
    move applied) and their arguments, gathered on the device."""
    p = jnp.real(z)[keep]
    lo, hi = _after_move(p, jnp.real(prev)[keep], lo[keep], hi[keep])
    return (p, lo, hi, jnp.zeros(p.shape, bool)), [x[keep] if jnp.ndim(x) else x for x in args]


def newton(iteration, step, p0, lo, hi, args, traced: bool) -> Solution:
    """Iterate from ``p0`` with bracket ``[lo, hi]`` until every entry has converged or failed.

    ``iteration`` is :func:`pair_iteration` or :func:`diagonal_iteration`, ``args`` its
    arguments after the state. Under tracing, a ``while_loop``. Eagerly, off-diagonal problems
    first take :data:`FAST_PASSES` whole-chunk passes (:func:`fast_passes`, one compiled call);
    the entries still moving then continue (:func:`resume`).
    """
    passes = FAST_PASSES
    if iteration is pair_iteration and p0.ndim == 1 and uses_passes(p0.shape[0]):
        if traced:
            return Solution(*_pair_loop(step, passes, p0, lo, hi, *args))
        state = _fast_passes(step, passes, p0, lo, hi, *args)
        packed = np.asarray(state[0])
        p_out, done = packed.real.copy(), packed.imag > 0
        status_out = np.where(done, CONVERGED, EXHAUSTED)
        keep = np.flatnonzero(~done)
        if keep.size:
            p_out[keep], status_out[keep] = resume(step, passes, state, args, keep)
        return Solution(p_out, status_out)
    state = (p0, lo, hi, (jnp if traced else np).zeros(p0.shape, bool))
    if traced:
        (p, _, _, _), finished, broken, _ = _loop(iteration, step, state, *args)
        return Solution(p, jnp.where(finished & ~broken, CONVERGED, jnp.where(broken, DIVERGED, EXHAUSTED)))
    return _compacting(iteration, step, state, _broadcast(args, p0.shape), 0)


def newton_whole(iteration, step, p0, lo, hi, args) -> Solution:
    """:func:`newton` for a small array of cheap problems in one compiled call (the
    ``while_loop`` of the traced path, then one copy to the host): no compaction, whose host
    round trip per iteration costs more than it saves for a closed-form update below a few
    thousand entries (measured for 1000 diagonal problems: 0.25–0.5 ms in one call, against
    0.6–1.0 ms by the per-iteration loop); a costly update (quadrature) gains from compaction,
    as every entry stays in the loop until the last converges. Host arrays."""
    state = (p0, lo, hi, np.zeros(np.shape(p0), bool))
    (p, _, _, _), finished, broken, _ = programs.call(_loop, (iteration, step), (state, *args))
    p, finished, broken = np.asarray(p), np.asarray(finished), np.asarray(broken)
    return Solution(p, np.where(finished & ~broken, CONVERGED, np.where(broken, DIVERGED, EXHAUSTED)))


def uses_passes(size: int) -> bool:
    """Whether :func:`newton` starts ``size`` off-diagonal problems with whole-array passes."""
    return bool(FAST_PASSES) and size >= MIN_PASSES_SIZE


def _broadcast(args, shape):
    return [jnp.broadcast_to(x, shape) if 0 < np.ndim(x) <= len(shape) and np.shape(x) != shape else x for x in args]


def fast_passes(step, passes: int, p0, lo, hi, *args):
    """``passes`` (≥ 1) whole-array passes of :func:`_fast_pass` from ``p0``, traceable (callers
    compile it with the work around it). Returns the state ``(z, prev, lo, hi)``: ``z`` packs
    ``p + i·converged``, ``prev`` the iterate before, ``[lo, hi]`` the bracket before the last move."""
    z = prev = p0
    for k in range(passes):
        new, lo, hi = _fast_pass(step, k == 0, z, prev, lo, hi, *args)
        # without the barrier XLA fuses consecutive passes and evaluates G many times over
        prev, z, lo, hi = jax.lax.optimization_barrier((z, new, lo, hi))
    return z, prev.astype(z.dtype), lo, hi


_fast_passes = jax.jit(fast_passes, static_argnums=(0, 1))


def resume(step, passes: int, state, args, keep: np.ndarray) -> Solution:
    """Continue the entries ``keep`` (host indices, not converged) of a :func:`fast_passes` state
    with the per-iteration loop; their roots and statuses, numpy arrays of ``keep``'s size."""
    active = keep.size
    keep = np.concatenate([keep, np.full(max(_MIN_COMPACT, pow2_at_least(active)) - active, keep[0])])
    z = state[0]
    state, args = _resume(*state, _broadcast(args, z.shape), jnp.asarray(keep.astype(np.int32)))
    p, status = _compacting(pair_iteration, step, state, args, passes)
    return Solution(p[:active], status[:active])


def _compacting(iteration, step, state, args, first: int) -> Solution:
    """The per-iteration loop from iteration ``first``: each iteration is one compiled call over the
    entries still moving (top-level XLA fusions use every core, loop bodies do not), and entries
    that have finished leave the arrays: once at most a quarter is still active, the rest are
    gathered into a smaller power-of-two size (few compiled shapes)."""
    size = state[0].shape[0]
    where = np.arange(size)  # position in the caller's arrays of each working entry
    p_out, status_out = np.empty(size), np.full(size, EXHAUSTED)
    for _ in range(first, MAX_ITER, _UNROLL):
        state, finished, broken, active = iteration(step, state, *args)
        active = int(active)
        n = state[0].shape[0]
        if active == 0 or (active <= n // 4 and n > _MIN_COMPACT):
            p, finished, broken = np.asarray(state[0]), np.asarray(finished), np.asarray(broken)
            p_out[where[finished]] = p[finished]
            status_out[where[finished]] = np.where(broken[finished], DIVERGED, CONVERGED)
            if active == 0:
                break
            keep = np.flatnonzero(~finished)
            keep = np.concatenate([keep, np.full(max(_MIN_COMPACT, pow2_at_least(active)) - active, keep[0])])
            state, args = _gather(state, args, jnp.asarray(keep.astype(np.int32)))
            where = where[keep]  # padding repeats an active entry: it writes the same value
    else:
        p, finished = np.asarray(state[0]), np.asarray(finished)
        p_out[where[~finished]] = p[~finished]
    return Solution(p_out, status_out)


def _unfinished(z):
    p = jnp.real(z)
    return (jnp.imag(z) <= 0) & jnp.isfinite(p) & (jnp.abs(p) <= _ESCAPE)


def _passes(step, z, prev, lo, hi, args, count):
    """``while_loop`` of :func:`_fast_pass` (after the first) until every entry has finished or
    ``count`` reaches :data:`MAX_ITER`."""

    def cond(carry):
        return (carry[4] < MAX_ITER) & jnp.any(_unfinished(carry[0]))

    def body(carry):
        z, prev, lo, hi, k = carry
        new, lo, hi = _fast_pass(step, False, z, prev, lo, hi, *args)
        return new, z, lo, hi, k + 1

    return jax.lax.while_loop(cond, body, (z, prev, lo, hi, count))


def solve_passes(step, passes: int, p0, lo, hi, *args):
    """:func:`newton` for off-diagonal problems inside one traceable program, with the eager
    path's work: :func:`fast_passes`, then a ``while_loop`` over the entries still moving,
    gathered into an eighth of the array when they fit there (otherwise over the whole array).
    Returns ``(p, status)``."""
    z, prev, lo, hi = fast_passes(step, passes, p0, lo, hi, *args)
    count = jnp.asarray(passes)
    size = p0.shape[0] // 8
    moving = _unfinished(z)

    def few(z, prev, lo, hi):
        keep = jnp.nonzero(moving, size=size, fill_value=jnp.argmax(moving))[0]
        sub = [x[keep] if jnp.ndim(x) else x for x in args]
        state = _passes(step, z[keep], prev[keep], lo[keep], hi[keep], sub, count)
        return z.at[keep].set(state[0]), state[4]

    def many(z, prev, lo, hi):
        state = _passes(step, z, prev, lo, hi, args, count)
        return state[0], state[4]

    z, count = jax.lax.cond(jnp.sum(moving) <= size, few, many, z, prev, lo, hi)
    p, done = jnp.real(z), jnp.imag(z) > 0
    broken = ~jnp.isfinite(p) | (jnp.abs(p) > _ESCAPE)
    return p, jnp.where(done & ~broken, CONVERGED, jnp.where(broken, DIVERGED, EXHAUSTED))


_pair_loop = jax.jit(solve_passes, static_argnums=(0, 1))


@jax.jit
def _gather(state, args, keep):
    """The entries ``keep`` of every working array, on the device (one call, no host copies);
    scalar arguments pass through."""
    return tuple(x[keep] for x in state), [x[keep] if jnp.ndim(x) else x for x in args]


def implicit(step, p_star, *theta):
    """``p*`` (a root of ``p = G(p; θ)``, ``step(p, *θ) -> (G, G')``) with the derivative
    ``dp/dθ = (∂G/∂θ)/(1 − G')`` attached; ``p*`` itself is not differentiated. The correction
    is computed only when something is differentiated: a traced forward pass costs nothing more."""
    return _implicit(step, jax.lax.stop_gradient(p_star), *theta)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _implicit(step, p, *theta):
    return p


@_implicit.defjvp
def _implicit_jvp(step, primals, tangents):
    p, *theta = primals
    (_, dg), (dG, _) = jax.jvp(lambda *th: step(p, *th), tuple(theta), tuple(tangents[1:]))
    slope = 1.0 - dg
    return p, dG / jnp.where(slope == 0, 1.0, slope)


# -- T-step loops ----------------------------------------------------------------------------------


def _slots(order):
    """``slot[t]``: the row of the output that receives the value after ``t`` steps (−1: none)."""
    slot = np.full(order[-1] + 1, -1, dtype=np.int32)
    slot[list(order)] = np.arange(len(order))
    return jnp.asarray(slot)


def _keep(slot, t, value, out):
    return jax.lax.cond(slot[t] >= 0, lambda: out.at[slot[t]].set(value), lambda: out)


@functools.partial(jax.jit, static_argnums=(0, 1))
def diagonal_steps(update, order, a0, cd, mu, lam):
    """The diagonal values after each number of steps in ``order`` (sorted), ``(len(order), n)``,
    from ``a0``: one loop, memory O(n) whatever the number of steps. ``update`` is the fused
    ``(D(a), D'(a))`` (the derivative is dropped)."""
    slot = _slots(order)
    a0 = jnp.broadcast_to(a0, cd.shape)

    def step(t, carry):
        a = update(carry[0], cd, mu, lam)[0]
        return a, _keep(slot, t + 1, a, carry[1])

    out = _keep(slot, 0, a0, jnp.zeros((len(order), *cd.shape), cd.dtype))
    return jax.lax.fori_loop(0, order[-1], step, (a0, out))[1]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def pair_steps(update, diagonal_update, stops, a, b, c, mux, muy, p0, same, lam, diagonal_mu=None):
    """Iterations of the off-diagonal map: the values after each number of steps in ``stops`` (a
    tuple), ``(len(stops), *shape)``, from one run.

    ``a`` and ``b`` are the rows ``(start, c(x, x), diagonal values at the sorted stops)`` of the two
    inputs; the diagonal trajectories are advanced alongside the entry, so memory is O(chunk)
    whatever the number of steps. Identical inputs (``same``) take the diagonal values.
    ``diagonal_mu``: the inputs' ``(μ, μ')`` in the shapes of ``a[0]`` and ``b[0]`` (a tile's
    rows and columns, whose trajectories its entries share), when ``mux``, ``muy`` are zero for
    identical inputs.
    """
    order = tuple(sorted(set(stops)))
    slot = _slots(order)
    mu_a, mu_b = (mux, muy) if diagonal_mu is None else diagonal_mu

    def step(t, carry):
        p, at, bt, out = carry
        p = update(p, at, bt, c, mux, muy, lam)[0]
        at = diagonal_update(at, a[1], mu_a, lam)[0]
        bt = diagonal_update(bt, b[1], mu_b, lam)[0]
        return p, at, bt, _keep(slot, t + 1, p, out)

    # one loop (the update is compiled once, whatever the number of stops)
    out = _keep(slot, 0, p0, jnp.zeros((len(order), *p0.shape), p0.dtype))
    out = jax.lax.fori_loop(0, order[-1], step, (p0, a[0], b[0], out))[3]
    out = jnp.where(same, a[2:], out)
    return out[jnp.asarray([order.index(stop) for stop in stops])]

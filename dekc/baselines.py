"""Deep NNGP and NTK Gram functions: the baselines the DEKer is compared against (the kernel ridge regression experiment).

For a fully connected network with ``L`` hidden layers of activation ``σ``, weight variance
``w`` and inputs ``x̃ = (input_scale·x, bias)``, the infinite-width kernels are

    Σ⁰(x, x') = x̃·x̃'
    Σ^{l+1}(x, x') = w E[σ(u) σ(v)]
    Θ⁰ = Σ⁰,   Θ^{l+1} = Σ^{l+1} + w E[σ'(u) σ'(v)] Θ^l
    (u, v) ~ N(0, [[Σ^l(x, x), Σ^l(x, x')], [Σ^l(x, x'), Σ^l(x', x')]])

with NNGP ``= Σ^L`` and NTK ``= Θ^L``. Both expectations come from dekc's own engine
(:func:`dekc.expectations.gaussian_expectation`): closed forms where they exist (ReLU: the
arc-cosine kernels; erf: arcsine kernels), quadrature otherwise. ``σ'`` is the derivative in the
sense of distributions, taken by sympy (ReLU' = Heaviside).

Identical inputs (equal ``x̃`` rows) and the diagonal use the one-point forms
``E[σ(u)²]``, ``u ~ N(0, Σ^l(x, x))``: at full correlation the pair form's gradient is infinite
(and rounding could push ``c/√(ab)`` past 1), so there the pair form sees ``c = 0`` and its value
is discarded.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from numpy.typing import ArrayLike

from . import moments, validate
from ._jax import jax, jnp
from .errors import InputError
from .expectations import derived_expectation, gaussian_expectation
from .expressions import ETA, as_eta_expression
from .gaussian import VARIANCE_FLOOR


class NNGP:
    """The deep NNGP Gram function ``K(X, Y=None, *, input_scale=1.0, bias=0.0) = Σ^L``.

    ``Σ⁰(x, x') = x̃·x̃'`` with ``x̃ = (input_scale·x, bias)`` and
    ``Σ^{l+1}(x, x') = w E[σ(u) σ(v)]``, ``(u, v) ~ N(0, [[Σ^l(x,x), Σ^l(x,x')], [Σ^l(x,x'), Σ^l(x',x')]])``
    for ``L = depth`` hidden layers and ``w = weight_variance``. Build it with :func:`nngp`.

    Attributes: ``activation`` (σ, sympy in ``eta``), ``depth``, ``weight_variance``, ``methods``
    (how each expectation is computed, e.g. ``{"sigma,sigma": "closed-form"}``).
    """

    def __init__(self, activation: str | sp.Expr, depth: int, *, weight_variance: float = 1.0):
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
            raise InputError(f"depth must be a positive integer (the number of hidden layers), got {depth!r}")
        self.activation = as_eta_expression(activation, what="activation")
        self.depth = int(depth)
        self.weight_variance = validate.real(weight_variance, "weight_variance", positive=True)
        self._sigma = gaussian_expectation(self.activation, self.activation)
        self.methods = {"sigma,sigma": self._sigma.method}
        self._compiled: dict = {}  # the plain call's program, per symmetry (jax.jit: one per shape)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(activation={self.activation}, depth={self.depth}, "
            f"weight_variance={self.weight_variance!r})"
        )

    def __call__(
        self, X: ArrayLike, Y: ArrayLike | None = None, *, input_scale: float = 1.0, bias: float = 0.0
    ) -> np.ndarray | jax.Array:
        """The Gram matrix ``K(X_i, Y_j)`` (``Y = X`` when omitted): a float64 numpy array ``(n, m)``,
        or a JAX array when an argument is a JAX tracer (under ``jit``/``grad``)."""
        traced = validate.is_traced(X, Y, input_scale, bias)
        X = validate.matrix(X, "X")
        symmetric = Y is None
        Y = X if symmetric else validate.matrix(Y, "Y")
        if X.shape[1] != Y.shape[1]:
            raise InputError(f"X has {X.shape[1]} columns and Y has {Y.shape[1]}; they must match")
        if not traced:
            validate.real(input_scale, "input_scale")
            validate.real(bias, "bias")
        n, m = X.shape[0], Y.shape[0]
        validate.check_memory(
            48.0 * n * m,
            f"the ({n}, {m}) {type(self).__name__} Gram matrix and its working arrays",
            "compute it in blocks of rows and save each, or use fewer inputs",
        )
        if traced:
            i, j = _entry_indices(n, m, symmetric)
            xt = moments.augment(X, input_scale, bias)
            yt = xt if symmetric else moments.augment(Y, input_scale, bias)
            ids_x, ids_y = moments.row_ids(xt, yt, symmetric)
            return self._gram(X, Y, input_scale, bias, ids_x, ids_y, i, j, symmetric)
        # a plain call runs the program the caller's own jax.jit would build (one per shape): the
        # entries' indices are constants there, which made it 1.6-1.8 times faster than taking
        # them as arguments
        if symmetric not in self._compiled:
            self._compiled[symmetric] = jax.jit(
                lambda X, Y, input_scale, bias: self(X, None if symmetric else Y, input_scale=input_scale, bias=bias)
            )
        out = self._compiled[symmetric](X, Y, float(input_scale), float(bias))
        return np.asarray(out, dtype=np.float64)

    def _gram(self, X, Y, input_scale, bias, ids_x, ids_y, i, j, symmetric: bool):
        """The Gram matrix from the inputs, their row ids (:func:`dekc.moments.row_ids`) and the
        entries ``(i, j)`` to compute."""
        xt = moments.augment(X, input_scale, bias)
        yt = xt if symmetric else moments.augment(Y, input_scale, bias)
        n, m = X.shape[0], Y.shape[0]
        same = moments.same_rows(ids_x, ids_y, i, j)
        products = moments.pair_products(xt, yt)
        diag_x, _, entries = self._layers(
            jnp.sum(xt * xt, axis=1), jnp.sum(yt * yt, axis=1), moments.dot(products, i, j), i, j, same
        )
        values = jnp.where(same, diag_x[i], entries)
        out = jnp.zeros((n, m)).at[i, j].set(values)
        if symmetric:
            out = out.at[j, i].set(values)
        return out

    def _step(self, E, sx, sy, s, i, j, same):
        """``w E[f(u) g(v)]`` on the diagonals (one-point form) and on the entries (pair form,
        fed ``c = 0`` at identical inputs, whose value the caller replaces by the diagonal)."""
        w = self.weight_variance
        pair = E(jnp.maximum(sx[i], VARIANCE_FLOOR), jnp.maximum(sy[j], VARIANCE_FLOOR), jnp.where(same, 0.0, s))
        return w * E.one_point(sx), w * E.one_point(sy), w * pair

    def _layers(self, sx, sy, s, i, j, same):
        """``(Σ^L(x, x), Σ^L(y, y), Σ^L(x_i, y_j))`` from layer 0."""
        for _ in range(self.depth):
            sx, sy, s = self._step(self._sigma, sx, sy, s, i, j, same)
        return sx, sy, s


def _entry_indices(n: int, m: int, symmetric: bool):
    """The entries ``(i, j)`` a Gram matrix computes (int32 host arrays: constants of the traced
    program): only the upper triangle with its diagonal when symmetric, so the result is exactly
    symmetric whatever the rounding of the pair forms."""
    i, j = np.triu_indices(n) if symmetric else (np.repeat(np.arange(n), m), np.tile(np.arange(m), n))
    return i.astype(np.int32), j.astype(np.int32)


class NTK(NNGP):
    """The deep NTK Gram function ``K(X, Y=None, *, input_scale=1.0, bias=0.0) = Θ^L``.

    ``Θ⁰ = Σ⁰ = x̃·x̃'`` and ``Θ^{l+1} = Σ^{l+1} + w E[σ'(u) σ'(v)] Θ^l`` with ``Σ^l`` and ``(u, v)``
    as in :class:`NNGP` and ``σ'`` the distributional derivative (ReLU' = Heaviside). Build it
    with :func:`ntk`. Attributes as :class:`NNGP`, plus ``derivative`` (σ', sympy in ``eta``).
    """

    def __init__(self, activation: str | sp.Expr, depth: int, *, weight_variance: float = 1.0):
        super().__init__(activation, depth, weight_variance=weight_variance)
        self.derivative = sp.diff(self.activation, ETA)
        if self.derivative.has(sp.DiracDelta):
            # E[σ'(u)²] = E[δ(u)²]·… diverges: the NTK of a discontinuous activation is infinite on the diagonal
            raise InputError(
                f"the NTK needs a continuous activation: {self.activation} jumps, so its derivative "
                f"{self.derivative} has a Dirac delta and the kernel is infinite at identical inputs; "
                "use a continuous activation, or nngp() for this one"
            )
        self._dsigma = derived_expectation(self.derivative, self.derivative)
        self.methods["dsigma,dsigma"] = self._dsigma.method

    def _layers(self, sx, sy, s, i, j, same):
        """``(Θ^L(x, x), Θ^L(y, y), Θ^L(x_i, y_j))``: ``Σ^l`` and ``Θ^l`` advance together."""
        tx, ty, t = sx, sy, s
        for _ in range(self.depth):
            dx, dy, d = self._step(self._dsigma, sx, sy, s, i, j, same)
            sx, sy, s = self._step(self._sigma, sx, sy, s, i, j, same)
            tx, ty, t = sx + dx * tx, sy + dy * ty, s + d * t
        return tx, ty, t


def nngp(activation: str | sp.Expr, depth: int, *, weight_variance: float = 1.0) -> NNGP:
    """The deep NNGP kernel ``Σ^L`` of ``depth`` hidden layers of ``activation`` (a shorthand, an
    expression in ``eta`` or sympy); see :class:`NNGP`."""
    return NNGP(activation, depth, weight_variance=weight_variance)


def ntk(activation: str | sp.Expr, depth: int, *, weight_variance: float = 1.0) -> NTK:
    """The deep NTK ``Θ^L`` of ``depth`` hidden layers of ``activation``; see :class:`NTK`."""
    return NTK(activation, depth, weight_variance=weight_variance)

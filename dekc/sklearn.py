"""scikit-learn adaptor: a deep equilibrium kernel as a :class:`sklearn.gaussian_process.kernels.Kernel`.

Import it explicitly (``dekc`` itself never imports scikit-learn, which is slow to import)::

    from dekc.sklearn import DEKernel
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import WhiteKernel

    gp = GaussianProcessRegressor(DEKernel(lam=2.0) + WhiteKernel(0.1)).fit(X, y)

``DEKernel`` wraps :func:`dekc.compile_kernel` and :meth:`dekc.Kernel.gram`; the Gram matrix is
exactly ``compile_kernel(family, reparam=..., activation=...).gram(X, Y, lam=..., ...)``.
It also works wherever scikit-learn accepts a Gaussian-process kernel as a pairwise kernel, e.g.
``KernelRidge(kernel=DEKernel(...))`` (``pairwise_kernels`` calls ``kernel(X, Y)``).

Hyper-parameters and ``theta``
------------------------------
scikit-learn's ``theta`` is the vector of the *logarithms* of the free (non-fixed) positive
hyper-parameters, in alphabetical order of their names. ``lam``, ``feature_scale`` and
``input_scale`` are positive and free by default. ``bias`` (the constant appended to the scaled
input, ``x̃ = (input_scale·x, bias)``) may be negative or zero, which a log-scale parameter cannot
represent, so it is **fixed by default** (``bias_bounds="fixed"``): set it directly
(``DEKernel(bias=-0.5)``, ``set_params(bias=...)``, or a grid search over ``bias``). Passing
``bias_bounds=(lo, hi)`` with ``0 < lo < hi`` makes it a free log-scale hyper-parameter like the
others; it then has to be positive.

Default bounds
--------------
``lam_bounds="auto"``: the fixed point exists only for ``λ`` above a divergence bound
``Kernel.lambda_bound()`` (``1/√2`` for the Gaussian family with ``R = ReLU``, where
``k(x, x) = c(x, x)/(2λ² − 1)``; ``1`` for the canonical Gaussian kernel ``k = c/(λ² − 1)``;
``v/√2`` for a Gaussian with variance ``v``), and the kernel blows up as ``λ`` approaches it.
``"auto"`` is ``(1.5 × bound, 1e3)`` (at least ``0.1`` below; ``1.1`` when no ``λ`` bounds the
iteration); pass a pair to choose your own. ``feature_scale_bounds`` and ``input_scale_bounds``
default to ``(1e-3, 1e3)``.
Errors raised by dekc (``ConvergenceError`` when ``λ`` is too small, ``InputError``,
``LinkError``, ...) propagate unchanged.

Gradients
---------
``kernel(X, eval_gradient=True)`` returns ``(K, dK)`` with ``dK[..., k] = θ_k ∂K/∂θ_k`` (the
derivative with respect to ``log θ_k``), computed with ``jax.jacfwd`` through the Gram matrix
(implicit differentiation at the fixed point).
"""

from __future__ import annotations

import functools
import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

try:
    from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
    from sklearn.exceptions import NotFittedError
    from sklearn.gaussian_process.kernels import Hyperparameter
    from sklearn.gaussian_process.kernels import Kernel as _SkKernel
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("dekc.sklearn needs scikit-learn, an optional dependency: pip install 'dekc[sklearn]'") from exc

from . import validate
from ._jax import jax, jnp  # float64 enabled
from .compiler import compile_kernel
from .errors import InputError
from .nystrom import DEFAULT_BLOCK, RCOND, NystromMap, NystromRidge, choose_landmarks

__all__ = ["DEKNystroem", "DEKNystroemRegressor", "DEKernel"]

#: a hyper-parameter's bounds: ``(low, high)``, ``"fixed"`` or (``lam`` only) ``"auto"``
Bounds = tuple[float, float] | str

_POSITIVE = ("feature_scale", "input_scale", "lam")
_DIAG_BLOCK = 128  # diag(X): Gram matrices of diagonal blocks, O(n · block) entries


@functools.lru_cache(maxsize=32)
def _compiled(family, reparam, activation):
    # one Kernel object per specification: its jitted update functions (and their XLA
    # compilations) are then shared by every DEKernel, clone and call
    return compile_kernel(family, reparam=reparam, activation=activation)


def _check_bounds(name, bounds):
    if isinstance(bounds, str):
        if bounds != "fixed":
            extra = ", 'auto'" if name == "lam" else ""
            raise InputError(
                f"{name}_bounds must be 'fixed'{extra} or a pair (low, high) with 0 < low < high, got {bounds!r}"
            )
        return bounds
    try:
        lo, hi = (float(b) for b in np.asarray(bounds, dtype=float).reshape(-1))
    except (TypeError, ValueError):
        raise InputError(
            f"{name}_bounds must be 'fixed' or a pair (low, high) with 0 < low < high, got {bounds!r}"
        ) from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise InputError(
            f"{name}_bounds must be 'fixed' or a pair (low, high) with 0 < low < high (theta is the log "
            f"of the hyper-parameter), got {bounds!r}"
        )
    return (lo, hi)


class DEKernel(_SkKernel):
    """The deep equilibrium kernel (DEKer) of ``family`` as a scikit-learn GP kernel.

    Parameters
    ----------
    family : str
        A registered family (``dekc.families()``).
    reparam, activation : str or None
        The link, as for :func:`dekc.compile_kernel` (give at most one). When both are ``None``
        the paper's kernel ``reparam="relu"`` is used.
    lam, feature_scale, input_scale, bias : float
        As in :meth:`dekc.Kernel.gram`. ``lam``, ``feature_scale``, ``input_scale`` are free
        log-scale hyper-parameters by default; ``bias`` is fixed by default (it may be ``<= 0``).
    features : str
        The data feature map ``f`` (``"relu"``, ``"identity"``, ...).
    steps : int or None
        ``None`` for the fixed point, ``T`` for the ``T``-step kernel.
    lam_bounds, feature_scale_bounds, input_scale_bounds, bias_bounds : pair or "fixed"
        Bounds of the hyper-parameters (not of their logs); ``"fixed"`` excludes one from
        ``theta``; ``lam_bounds="auto"`` (default) starts above the kernel's divergence bound.
        See the module docstring for the defaults.
    """

    def __init__(
        self,
        family: str = "gaussian",
        reparam: str | None = None,
        activation: str | None = None,
        lam: float = 2.0,
        feature_scale: float = 1.0,
        input_scale: float = 1.0,
        bias: float = 0.0,
        features: str = "relu",
        steps: int | None = None,
        lam_bounds: Bounds = "auto",
        feature_scale_bounds: Bounds = (1e-3, 1e3),
        input_scale_bounds: Bounds = (1e-3, 1e3),
        bias_bounds: Bounds = "fixed",
    ):
        self.family = family
        self.reparam = reparam
        self.activation = activation
        self.lam = lam
        self.feature_scale = feature_scale
        self.input_scale = input_scale
        self.bias = bias
        self.features = features
        self.steps = steps
        self.lam_bounds = lam_bounds
        self.feature_scale_bounds = feature_scale_bounds
        self.input_scale_bounds = input_scale_bounds
        self.bias_bounds = bias_bounds

    # -- hyper-parameters (sklearn collects every ``hyperparameter_*`` attribute) -----------------
    @property
    def hyperparameter_lam(self):
        bounds = self.lam_bounds
        if isinstance(bounds, str) and bounds == "auto":
            bound = self.compiled.lambda_bound()
            low = 1.1 if bound is None else max(1.5 * bound, 0.1)
            bounds = (low, max(1e3, 10 * low))
        return Hyperparameter("lam", "numeric", _check_bounds("lam", bounds))

    @property
    def hyperparameter_feature_scale(self):
        return Hyperparameter("feature_scale", "numeric", _check_bounds("feature_scale", self.feature_scale_bounds))

    @property
    def hyperparameter_input_scale(self):
        return Hyperparameter("input_scale", "numeric", _check_bounds("input_scale", self.input_scale_bounds))

    @property
    def hyperparameter_bias(self):
        return Hyperparameter("bias", "numeric", _check_bounds("bias", self.bias_bounds))

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def compiled(self):
        """The compiled :class:`dekc.Kernel` (cached per family and link)."""
        reparam, activation = self.reparam, self.activation
        if reparam is None and activation is None:
            reparam = "relu"
        for name, value in (("family", self.family), ("reparam", reparam), ("activation", activation)):
            if value is not None and not isinstance(value, str):
                raise InputError(f"DEKernel: {name} must be a string (a name or an expression in eta), got {value!r}")
        return _compiled(self.family, reparam, activation)

    def _values(self):
        """The hyper-parameter values, validated."""
        values = {}
        for name in _POSITIVE:
            values[name] = validate.real(getattr(self, name), name, positive=True, what="DEKernel")
        b = validate.real(self.bias, "bias", what="DEKernel")
        if not self.hyperparameter_bias.fixed and b <= 0:
            raise InputError(
                f"DEKernel: bias = {b!r} must be positive while it is a free (log-scale) hyper-parameter; "
                "use bias_bounds='fixed' for a zero or negative bias"
            )
        values["bias"] = float(b)
        _ = self.hyperparameters  # validates every *_bounds
        steps = self.steps
        if steps is not None and (not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0):
            raise InputError(f"DEKernel: steps must be None (the fixed point) or a non-negative integer, got {steps!r}")
        return values

    def _gram(self, X, Y=None, **values):
        return self.compiled.gram(X, Y, features=self.features, steps=self.steps, **values)

    # -- the sklearn kernel interface -------------------------------------------------------------
    def __call__(
        self, X: ArrayLike, Y: ArrayLike | None = None, eval_gradient: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """``K(X, Y)``; with ``eval_gradient`` (only for ``Y=None``) also ``dK/dlog θ``, shape
        ``(n, n, n_free)`` in the order of ``theta``."""
        values = self._values()
        if Y is X:
            Y = None  # pairwise_kernels passes Y = X: the symmetric path is half the work
        X = _inputs(X, "X")
        if Y is not None:
            if eval_gradient:
                raise InputError("DEKernel: the gradient can only be evaluated when Y is None")
            Y = _inputs(Y, "Y")
        K = np.asarray(self._gram(X, Y, **values))  # eager: dekc's errors are raised here
        if not eval_gradient:
            return K
        free = [hp.name for hp in self.hyperparameters if not hp.fixed]
        if not free:
            return K, np.empty((X.shape[0], X.shape[0], 0))

        # differentiate with respect to all four values, whichever are free: one compiled shape
        # per n (jax compiles the traced solver again for every tangent count), then
        # d/dlog θ = θ ∂/∂θ for the free ones, in theta's (alphabetical) order
        names = sorted(values)

        def gram_of(v):
            return self._gram(X, **dict(zip(names, (v[k] for k in range(len(names))))))

        J = jax.jacfwd(gram_of)(jnp.asarray([values[name] for name in names]))
        dK = np.stack([values[name] * np.asarray(J[..., names.index(name)]) for name in free], axis=-1)
        if not np.all(np.isfinite(dK)):
            raise FloatingPointError(
                "DEKernel: the gradient of the Gram matrix is not finite (the fixed point is "
                f"singular at {values}); move lam away from its divergence bound"
            )
        return K, dK

    def diag(self, X: ArrayLike) -> np.ndarray:
        """``np.diag(self(X))`` without the off-diagonal blocks: identical inputs get this value."""
        values = self._values()
        X = _inputs(X, "X")
        out = np.empty(X.shape[0])
        for lo in range(0, X.shape[0], _DIAG_BLOCK):
            out[lo : lo + _DIAG_BLOCK] = np.diag(np.asarray(self._gram(X[lo : lo + _DIAG_BLOCK], **values)))
        return out

    def is_stationary(self) -> bool:
        """A DEKer depends on the inputs themselves (their norms), not only on ``x − x'``."""
        return False

    def __repr__(self):
        link = (
            f"activation={self.activation!r}"
            if self.activation is not None
            else f"reparam={self.reparam if self.reparam is not None else 'relu'!r}"
        )
        extra = "" if self.steps is None else f", steps={self.steps!r}"
        return (
            f"DEKernel({self.family!r}, {link}, lam={_fmt(self.lam)}, feature_scale={_fmt(self.feature_scale)}, "
            f"input_scale={_fmt(self.input_scale)}, bias={_fmt(self.bias)}, features={self.features!r}{extra})"
        )


def _inputs(X, name):
    """scikit-learn passes 2-D inputs; a 1-D array is one input (``np.atleast_2d``), as sklearn does."""
    try:
        flat = np.ndim(X) == 1 and not isinstance(X, (str, bytes))
    except (ValueError, TypeError):
        flat = False
    return np.asarray(validate.matrix(np.atleast_2d(X) if flat else X, name))


def _fmt(value):
    return f"{value:.3g}" if isinstance(value, numbers.Real) else repr(value)


# -- Nyström: a transformer and a regressor ------------------------------------------------------------


class _NystroemParams(BaseEstimator):
    """The parameters the Nyström estimators share (see :class:`DEKNystroem`)."""

    def _kernel_and_params(self) -> tuple:
        kernel = DEKernel(
            self.family,
            self.reparam,
            self.activation,
            lam=self.lam,
            feature_scale=self.feature_scale,
            input_scale=self.input_scale,
            bias=self.bias,
            features=self.features,
            steps=self.steps,
        )
        values = kernel._values()
        params = dict(values, features=self.features, steps=self.steps)
        return kernel.compiled, params

    def _fit_map(self, X) -> NystromMap:
        X = validate.matrix(X, "X")
        compiled, params = self._kernel_and_params()
        Z = choose_landmarks(X, min(self.n_components, X.shape[0]), self.landmarks, seed=self.random_state)
        return NystromMap(compiled, Z, params, rcond=self.rcond).fit()


class DEKNystroem(TransformerMixin, _NystroemParams):
    """Nyström features of a DEKer: ``transform(X)`` gives ``φ(X)`` ``(n, r)`` with
    ``φ(x)·φ(x') ≈ k(x, x')`` (:mod:`dekc.nystrom`), for any linear model downstream (works in
    ``Pipeline`` and ``GridSearchCV``; every argument is a parameter).

    ``n_components`` landmarks (at most ``n``) chosen by ``landmarks`` (``"uniform"`` or
    ``"kmeans"``) with ``random_state``; the kernel arguments are :class:`DEKernel`'s. ``block``:
    rows of the cross kernel computed at a time. Fitted attributes: ``landmarks_`` ``(m, d)``,
    ``components_`` ``(m, r)`` (``K_ZZ^{-1/2}``), ``eigenvalues_``, ``n_features_in_``.
    """

    def __init__(
        self,
        family: str = "gaussian",
        reparam: str | None = None,
        activation: str | None = None,
        lam: float = 2.0,
        feature_scale: float = 1.0,
        input_scale: float = 1.0,
        bias: float = 0.0,
        features: str = "relu",
        steps: int | None = None,
        n_components: int = 100,
        landmarks: str = "uniform",
        random_state: int = 0,
        rcond: float = RCOND,
        block: int = DEFAULT_BLOCK,
    ):
        self.family = family
        self.reparam = reparam
        self.activation = activation
        self.lam = lam
        self.feature_scale = feature_scale
        self.input_scale = input_scale
        self.bias = bias
        self.features = features
        self.steps = steps
        self.n_components = n_components
        self.landmarks = landmarks
        self.random_state = random_state
        self.rcond = rcond
        self.block = block

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> DEKNystroem:
        """Choose the landmarks and factor their Gram matrix (``y`` is ignored)."""
        self.map_ = self._fit_map(X)
        self.landmarks_ = self.map_.landmarks
        self.components_ = self.map_.components
        self.eigenvalues_ = self.map_.eigenvalues
        self.n_features_in_ = self.landmarks_.shape[1]
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        """``φ(X)`` ``(n, r)``, computed in blocks of ``block`` rows."""
        if not hasattr(self, "map_"):
            raise NotFittedError("DEKNystroem is not fitted yet: call fit(X) first")
        return self.map_.features(X, block=self.block)


class DEKNystroemRegressor(RegressorMixin, _NystroemParams):
    """Kernel ridge regression with a DEKer, Nyström-approximated: the posterior mean of GP
    regression with noise variance ``alpha`` (subset of regressors). ``fit`` streams the ``n × m``
    cross kernel in blocks (memory O(m² + block·m)); ``predict(X, return_std=True)`` also gives
    the predictive standard deviation of the latent function. ``client``: a
    ``dask.distributed`` client or scheduler address to compute ``fit``'s blocks on a cluster (give
    the address, a string, in a grid search: scikit-learn copies parameters when it clones).
    Other arguments as :class:`DEKNystroem`.
    """

    def __init__(
        self,
        family: str = "gaussian",
        reparam: str | None = None,
        activation: str | None = None,
        lam: float = 2.0,
        feature_scale: float = 1.0,
        input_scale: float = 1.0,
        bias: float = 0.0,
        features: str = "relu",
        steps: int | None = None,
        n_components: int = 1000,
        landmarks: str = "kmeans",
        random_state: int = 0,
        rcond: float = RCOND,
        block: int = DEFAULT_BLOCK,
        alpha: float = 1e-3,
        client: Any = None,
    ):
        self.family = family
        self.reparam = reparam
        self.activation = activation
        self.lam = lam
        self.feature_scale = feature_scale
        self.input_scale = input_scale
        self.bias = bias
        self.features = features
        self.steps = steps
        self.n_components = n_components
        self.landmarks = landmarks
        self.random_state = random_state
        self.rcond = rcond
        self.block = block
        self.alpha = alpha
        self.client = client

    def fit(self, X: ArrayLike, y: ArrayLike) -> DEKNystroemRegressor:
        """Choose the landmarks, then stream the cross kernel to solve the ridge problem."""
        feature_map = self._fit_map(X)
        self.model_ = NystromRidge(feature_map, self.alpha).fit(X, y, block=self.block, client=self.client)
        self.landmarks_ = feature_map.landmarks
        self.n_features_in_ = self.landmarks_.shape[1]
        return self

    def predict(self, X: ArrayLike, return_std: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The predictive mean (and with ``return_std`` the latent function's standard deviation)."""
        if not hasattr(self, "model_"):
            raise NotFittedError("DEKNystroemRegressor is not fitted yet: call fit(X, y) first")
        return self.model_.predict(X, block=self.block, return_std=return_std)

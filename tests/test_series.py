"""The Mehler series path: coefficient tables, the truncation bound, and Gram matrices that
replace quadrature by the series (with entries the series cannot certify solved by quadrature)."""

import math
import types
import warnings

import mpmath as mp
import numpy as np
import pytest

import dekc
from dekc import series
from dekc._jax import jnp, jsp


def _hermite_coefficient(f, a, k):
    """``E[f(√a Z) He_k(Z)]/√(k!)`` by mpmath (He_k(z) = 2^(−k/2) H_k(z/√2))."""
    with mp.workdps(25):
        s = mp.sqrt(a)
        density = lambda z: mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)
        he = lambda z: mp.hermite(k, z / mp.sqrt(2)) * mp.mpf(2) ** (-mp.mpf(k) / 2)
        value = mp.quad(lambda z: f(s * z) * density(z) * he(z), [-14, -2, 0, 2, 14])
        return float(value / mp.sqrt(mp.factorial(k)))


@pytest.mark.parametrize("a", [1e-4, 0.3, 3.0])
def test_coefficients_match_mpmath(a):
    table = series.Table(jnp.tanh, (), np.array([a]))
    scale = math.sqrt(float(table.second[0]))
    for k in (0, 1, 3, 8, 40, 200):
        expected = _hermite_coefficient(mp.tanh, a, k)
        assert abs(float(table.coef[0, k]) - expected) <= 1e-13 * scale


def test_erf_series_reproduces_the_arcsine_closed_form_within_its_bound():
    """erf·erf has the closed form (2/π) asin(2c/√((1 + 2a)(1 + 2b))): the truncated series agrees
    within the certified bound, and the bound certifies at moderate variance."""
    a = np.array([1e-3, 0.1, 0.5, 2.0])
    b = np.array([0.7, 1e-2, 1.5, 0.3])
    f, g = series.Table(jsp.erf, (), a), series.Table(jsp.erf, (), b)
    for r in (-0.999, -0.4, 0.0, 0.6, 0.999, 1.0):
        c = r * np.sqrt(a * b)
        exact = 2 / np.pi * np.arcsin(2 * c / np.sqrt((1 + 2 * a) * (1 + 2 * b)))
        for t, terms in enumerate(series.TERMS):
            value = np.asarray(jnp.sum(f.coef[:, :terms] * g.coef[:, :terms] * r ** jnp.arange(terms), axis=1))
            scale = np.sqrt(np.asarray(f.second * g.second))
            bound = abs(r) ** terms * np.sqrt(np.asarray(f.tail[:, t] * g.tail[:, t])) + 1e-14
            assert np.all(np.abs(value - exact) <= bound * scale)
        assert np.all(np.abs(value - exact) <= 1e-12 * scale)


def test_steep_functions_are_not_certified():
    """erf(√a z) at a = 1e4 is a step on the grid's scale: its tail stays large (the series is not
    trusted there), and a small one is not claimed."""
    table = series.Table(jsp.erf, (), np.array([1e4, 1.0]))
    assert float(table.tail[0, -1]) > 1e-6
    assert float(table.tail[1, -1]) < 1e-20 + 1e-14


def _relu_coefficient_cut(k: int, L: float = 10.0) -> float:
    """``∫_0^L z He_k(z) φ(z) dz / √(k!)`` for ``k ≥ 2`` exactly (60 digits): ``z He_k = He_(k+1) +
    k He_(k−1)`` and ``∫_0^L He_m φ = He_(m−1)(0) φ(0) − He_(m−1)(L) φ(L)``; normalised
    ``h_m = He_m/√(m!)`` by their recurrence."""
    with mp.workdps(60):
        phi = lambda z: mp.exp(-z * z / 2) / mp.sqrt(2 * mp.pi)

        def h(m, z):
            prev, cur = mp.mpf(0), mp.mpf(1)
            for n in range(m):
                prev, cur = cur, (z * cur - mp.sqrt(n) * prev) / mp.sqrt(n + 1)
            return cur

        L = mp.mpf(L)
        # He_(k+1) and k He_(k−1) integrated: He_k and k He_(k−2) at the ends, normalised by √(k!)
        top = h(k, 0) * phi(0) - h(k, L) * phi(L)
        low = (h(k - 2, 0) * phi(0) - h(k - 2, L) * phi(L)) * k / mp.sqrt(k * (k - 1))
        return float(top + low)


def test_long_series_coefficients_are_exact_to_high_order():
    """The long series' grid resolves ``He_k`` up to its last term: relu's coefficients (cut at
    ``|z| = 10``, as the grid integrates) against their exact values."""
    table = series.Table(lambda x: jnp.maximum(x, 0.0), (0.0,), np.array([1.0]), checkpoints=(series.LONG_TERMS,))
    assert table.coef.shape == (1, series.LONG_TERMS)
    scale = math.sqrt(float(table.second[0]))
    for k in (2, 3, 30, 255, 1000, 1001, series.LONG_TERMS - 1):
        assert abs(float(table.coef[0, k]) - _relu_coefficient_cut(k)) <= 1e-14 * scale, k
    # relu's relative tail: 0.084 K^(-3/2) asymptotically (its coefficients decay like k^(-5/4))
    assert 0.8 < float(table.tail[0, 0]) / (0.084 * series.LONG_TERMS**-1.5) < 1.25


@pytest.mark.parametrize("terms", [7, 300])
def test_polynomial_value_and_slope(terms):
    """Horner's rule, unrolled (up to 256 terms) and looped (beyond), against numpy."""
    coef = jnp.asarray(np.random.default_rng(1).normal(size=(5, terms)) / np.arange(1, terms + 1))
    r = jnp.asarray(np.linspace(-0.9, 0.9, 5))
    value, slope = series.polynomial(coef, r)
    for row in range(5):
        p = np.polynomial.Polynomial(np.asarray(coef[row]))
        assert abs(float(value[row]) - p(float(r[row]))) < 1e-14
        assert abs(float(slope[row]) - p.deriv()(float(r[row]))) < 1e-13


def _relu_through_the_series(ker):
    """The closed-form gaussian + relu kernel with its (σ, σ) pair moved to the series path:
    the same kernel, so the closed-form Gram is an independent reference."""
    m = ker.module
    fake = types.SimpleNamespace(**{k: getattr(m, k) for k in dir(m) if not k.startswith("__")})
    fake.SERIES = ("sigma,sigma",)
    fake.KINKS = {"sigma": (0.0,), "rho": (0.0,)}

    def closed(p, a, b, c, mu_x, mu_y, lam):
        g = (-mu_y * m.K_sigma_rho(a, b, p) - mu_x * m.K_sigma_rho(b, a, p) + c * m.K_rho_rho(a, b, p)) / lam**2
        dg = (
            -mu_y * m.K_sigma_rho_dc(a, b, p) - mu_x * m.K_sigma_rho_dc(b, a, p) + c * m.K_rho_rho_dc(a, b, p)
        ) / lam**2
        return g, dg

    fake.update_and_dp_closed = closed
    return dekc.kernel.Kernel(fake, ker.path, ker.source, ker.family, lambda: ker.link)


def test_series_path_reproduces_a_closed_form_gram(monkeypatch):
    """relu's Hermite coefficients decay slowly (tail ~ K^(−3/2)), but the DEKer's correlations
    stay below 0.9 (the nugget of a Heaviside ρ): every entry is certified with 256 terms and
    agrees with the closed form."""
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    through = _relu_through_the_series(ker)
    X = np.random.default_rng(5).normal(size=(40, 3))
    X[1] = X[0] + 1e-3  # a nearly identical pair
    expected = ker.gram(X, lam=2.0, bias=0.5)
    got = through.gram(X, lam=2.0, bias=0.5)
    d = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
    assert np.max(np.abs(got - expected) / d) < 1e-10
    assert through.diagnostics == dekc.kernel.GramDiagnostics(820, series.TERMS[-1], 0, 0)
    # with a certification threshold of 1e-300, every off-diagonal entry the series cannot certify
    # is solved again, by the long series and then by the kernel's own update, counted and announced
    monkeypatch.setattr(series, "TOLERANCE", 1e-300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = through.gram(X, lam=2.0, bias=0.5)
    assert np.max(np.abs(got - expected) / d) < 1e-10
    # relu's relative tail is 0.084 K^(-3/2) (its Hermite coefficients): about 1e-4 after 256
    # terms, 9e-7 after 2048. The first series certifies where r^256 · 1e-4 ≤ 1e-300 (r < 0.07),
    # the long one where r^2048 · 9e-7 ≤ 1e-300 (r < 0.719)
    r = np.abs(expected / d)[np.triu_indices(40, 1)]
    assert np.count_nonzero(r >= 0.1) > 100 and np.count_nonzero(r >= 0.71) >= 1
    redone = through.diagnostics.long_series_entries + through.diagnostics.fallback_entries
    assert np.count_nonzero(r >= 0.1) <= redone <= np.count_nonzero(r >= 0.06)
    assert np.count_nonzero(r >= 0.725) <= through.diagnostics.fallback_entries <= np.count_nonzero(r >= 0.71)
    assert any("certified neither" in str(w.message) for w in caught)
    # two different sets of inputs: the long series' tables for rows and columns apart
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cross = through.gram(X[:25], X[15:], lam=2.0, bias=0.5)
    assert through.diagnostics.long_series_entries > 100
    assert np.max(np.abs(cross - expected[:25, 15:]) / d[:25, 15:]) < 1e-10


def test_series_tiles_certify_converged_roots_with_every_term(monkeypatch):
    """A series kernel's Gram matrix is solved by tiles with the first 32 terms; roots those
    cannot certify are solved again from there with every term. Over tiles cut at the matrix's
    edges and several calls (two tiles each), square and rectangular, every entry agrees with
    the closed form."""
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    through = _relu_through_the_series(ker)
    X = np.random.default_rng(6).normal(size=(200, 3))
    expected = ker.gram(X, lam=2.0, bias=0.5)
    d = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
    r = np.abs(expected / d)[np.triu_indices(200, 1)]
    # relu's relative tail after K terms is about 0.084 K^(-3/2): to 1e-11, 32 terms certify
    # |r| below about 0.57 (r^32 · 4.6e-4 <= 1e-11) and 256 terms every entry here (|r| <= 0.72)
    assert np.count_nonzero(r > 0.6) > 500
    passes = []
    series_pass = dekc.kernel.Kernel._series_pass

    def counted(self, gram_series, part, *args):
        passes.append(part.size)
        return series_pass(self, gram_series, part, *args)

    monkeypatch.setattr(dekc.kernel.Kernel, "_series_pass", counted)
    monkeypatch.setattr(dekc.kernel.Kernel, "_tiles_per_call", lambda self, tiles, chunk=None: 2)
    got = through.gram(X, lam=2.0, bias=0.5)
    assert np.max(np.abs(got - expected) / d) < 1e-10
    assert sum(passes) >= np.count_nonzero(r > 0.6)  # solved again with every term
    assert through.diagnostics.long_series_entries == 0  # (the long series: the test above)
    cross = through.gram(X[:130], X[70:], lam=2.0, bias=0.5)
    assert np.max(np.abs(cross - expected[:130, 70:]) / d[:130, 70:]) < 1e-10


@pytest.fixture(scope="module")
def logistic():
    return dekc.compile_kernel("bernoulli", reparam="identity")


@pytest.mark.slow
def test_series_gram_solves_the_quadrature_fixed_point(logistic):
    """Entries computed with the series satisfy the fixed-point equation of the kernel's own
    quadrature update to the solver's tolerance."""
    X = np.random.default_rng(3).normal(size=(7, 3)) / np.sqrt(3)
    K = logistic.gram(X, lam=3.0)
    assert logistic.diagnostics.series_terms in series.TERMS
    assert logistic.diagnostics.fallback_entries == 0
    m = logistic.module
    xt = dekc.moments.augment(jnp.asarray(X), 1.0, 0.0)
    nx = jnp.sum(xt * xt, axis=1)
    c = np.asarray(dekc.gaussian_expectation("relu", "relu")(nx[:, None], nx[None, :], xt @ xt.T))
    mu = np.asarray(dekc.gaussian_expectation("relu", "1").one_point(nx))
    i, j = np.triu_indices(7, 1)
    a, b = np.diag(K)[i], np.diag(K)[j]
    G = np.asarray(m.update(K[i, j], a, b, c[i, j], mu[i], mu[j], 3.0))
    assert np.max(np.abs(G - K[i, j]) / np.sqrt(a * b)) < 1e-10
    D = np.asarray(m.diagonal_update(np.diag(K), np.diag(c), mu, 3.0))
    assert np.max(np.abs(D - np.diag(K)) / np.diag(K)) < 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("scale, long, quadrature", [(400.0, 1, 0), (1e4, 0, 1)])
def test_uncertified_entries_are_solved_again_and_counted(logistic, scale, long, quadrature):
    """At variances where the first series cannot certify its tolerance, an entry is solved again
    with the long series; closer still to full correlation, where that cannot certify either, by the
    quadrature update (counted in ``diagnostics`` and announced by a warning). Either way it
    satisfies the quadrature update's fixed-point equation."""
    c = np.array([[scale, scale - 1], [scale - 1, scale + 1]])
    mu = np.zeros(2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        K = logistic.from_moments(c, mu, lam=1.5)
    d = logistic.diagnostics
    assert (d.long_series_entries, d.fallback_entries) == (long, quadrature)
    assert any("certified neither" in str(w.message) for w in caught) == bool(quadrature)
    m = logistic.module
    G = float(m.update(K[0, 1], K[0, 0], K[1, 1], c[0, 1], 0.0, 0.0, 1.5))
    assert abs(G - K[0, 1]) <= 1e-10 * np.sqrt(K[0, 0] * K[1, 1])

"""The link stage: σ = (A∘R)' and ρ = R' checked by numerical differentiation, plus worked cases."""

import functools
import warnings

import mpmath
import pytest
import sympy as sp
from helpers import ETA_POINTS, numeric, quiet_link
from hypothesis import given, settings
from hypothesis import strategies as st

import dekc
from dekc.expressions import ETA, sigmoid, softplus

FAMILIES = sorted(dekc.families())


def _assert_link_identities(link):
    """(A∘R)' = σ and R' = ρ by mpmath's numerical derivative; R ∈ Θ and R finite."""
    fam = link.family
    a_of_r = numeric(fam.A.subs(fam.theta, link.R))
    r, sigma, rho = numeric(link.R), numeric(link.sigma), numeric(link.rho)
    lo, hi = fam.domain.start, fam.domain.end
    with mpmath.workdps(40):
        for x in ETA_POINTS:
            assert abs(mpmath.diff(a_of_r, x) - sigma(x)) < 1e-25 * (1 + abs(sigma(x))), (link, x)
            assert abs(mpmath.diff(r, x) - rho(x)) < 1e-25 * (1 + abs(rho(x))), (link, x)
            value = r(x)
            assert mpmath.isfinite(value)
            assert (lo == -sp.oo or value >= lo) and (hi == sp.oo or value <= hi)


@pytest.mark.parametrize("name", FAMILIES)
def test_canonical_link_gives_A_prime(name):
    fam = dekc.family(name)
    if not fam.canonical_link_admissible:
        with pytest.raises(dekc.LinkError, match="leaves"):
            dekc.link(name, reparam="identity")
        return
    link = dekc.link(name, reparam="identity")
    assert sp.simplify(link.sigma - fam.canonical_sigma) == 0
    assert link.rho == 1
    _assert_link_identities(link)


def _reparams_for(fam):
    lo, hi = fam.domain.start, fam.domain.end
    if lo == -sp.oo and hi == sp.oo:
        return ["identity", "relu", "tanh", "2*eta - 1", "eta**3"]
    return [f"{hi} - exp(-eta)", f"{hi} - softplus(-eta)", f"{hi} - 1 - sigmoid(-eta)"]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_derived_link_satisfies_its_identities(name):
    fam = dekc.family(name)
    for reparam in _reparams_for(fam):
        link = quiet_link(name, reparam=reparam)
        assert link.route == "reparam"
        _assert_link_identities(link)


# (family, activation) pairs for which a valid R exists
ACTIVATION_CASES = [
    ("gaussian", "relu"),
    ("gaussian", "identity"),
    ("gaussian", "tanh"),
    ("gaussian", "gelu"),
    ("gaussian", "exp"),
    ("gaussian", "heaviside"),
    ("bernoulli", "sigmoid"),
    ("bernoulli", "Phi(eta)"),
    ("binomial", "2*sigmoid(eta)"),
    ("poisson", "sigmoid"),
    ("poisson", "exp"),
    ("poisson", "relu"),
    ("exponential", "sigmoid"),
    ("exponential", "exp"),
    ("gamma", "1"),
    ("negative_binomial", "exp"),
    pytest.param("inverse_gaussian", "exp(-exp(-eta))*exp(-eta)", marks=pytest.mark.slow),  # ~40 s
]


@pytest.mark.parametrize("name, activation", ACTIVATION_CASES)
def test_activation_route_recovers_the_activation(name, activation):
    link = quiet_link(name, activation=activation)
    assert link.route == "activation"
    target = numeric(dekc.expressions.as_eta_expression(activation))
    sigma = numeric(link.sigma)
    r = numeric(link.R)
    with mpmath.workdps(40):
        for x in ETA_POINTS:
            assert abs(sigma(x) - target(x)) < 1e-25 * (1 + abs(target(x)))
        values = [r(x) for x in ETA_POINTS]
    assert all(b >= a for a, b in zip(values, values[1:])), "R must be non-decreasing"
    _assert_link_identities(link)


# -- the worked cases of the issue, against formulas written out here -------------------------


def test_gaussian_relu():
    link = dekc.link("gaussian", reparam="relu")
    assert link.sigma == sp.Max(ETA, 0)
    assert link.rho == sp.Heaviside(ETA)


def test_exponential_relu_reaches_its_domain_end_without_a_false_alarm():
    """R = (1 − e^{−η²/2})H(η) − 1 equals −e^{−η²/2} for η > 0: at η = 13 the subtraction cancels 37
    digits, which the identity check must resolve with more digits rather than report."""
    link = quiet_link("exponential", activation="relu")
    assert link.sigma == sp.Max(ETA, 0)
    with mpmath.workdps(80):
        for x in (0.5, 3.0, 13.0):
            R = sp.sympify(link.R).subs(ETA, sp.Float(x, 80)).evalf(80)
            assert abs(R + sp.exp(-(sp.Float(x, 80) ** 2) / 2)) < sp.Float(10) ** -70


def test_bernoulli_identity_gives_sigmoid():
    link = dekc.link("bernoulli", reparam="identity")
    assert sp.simplify(link.sigma - sigmoid(ETA)) == 0


def test_poisson_sigmoid_gives_log_softplus():
    """R = log softplus; ρ = sigmoid/softplus, whose float64 form takes the limit 1 in the far left tail
    (there both underflow, and the ratio is 1 + O(e^η): within 1e-17 below η = −40)."""
    link = dekc.link("poisson", activation="sigmoid")
    assert sp.simplify(link.R - sp.log(softplus(ETA))) == 0
    rho = numeric(link.rho)
    with mpmath.workdps(40):
        for x in [*ETA_POINTS, -39, -41, -100, -1000, 30, 1000]:
            x = mpmath.mpf(x)
            exact = 1 / ((1 + mpmath.exp(-x)) * mpmath.log1p(mpmath.exp(x)))
            assert abs(rho(x) - exact) <= (1e-25 if abs(x) < 40 else 1e-17) * exact, x


@pytest.mark.parametrize("k", [1, 2, 3.5])
def test_gamma_negative_exponential(k):
    link = dekc.link("gamma", reparam="-exp(-eta)", k=k)
    assert sp.simplify(link.sigma - sp.Rational(str(k))) == 0
    assert sp.simplify(link.rho - sp.exp(-ETA)) == 0


def test_gaussian_activation_route_inverts_the_reparam_route():
    for reparam in ("relu", "identity"):
        forward = dekc.link("gaussian", reparam=reparam)
        back = dekc.link("gaussian", activation=forward.sigma)
        assert sp.simplify(back.R - forward.R) == 0


@settings(max_examples=15, deadline=None)
@given(scale=st.floats(0.1, 5), shift=st.floats(-3, 3))
def test_affine_reparam_of_bernoulli(scale, shift):
    """R = aη + b gives σ(η) = a·sigmoid(aη + b) and ρ = a."""
    a, b = sp.Rational(str(scale)), sp.Rational(str(shift))
    link = dekc.link("bernoulli", reparam=a * ETA + b)
    assert sp.simplify(link.sigma - a * sigmoid(a * ETA + b)) == 0
    assert link.rho == a


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, complaint",
    [
        ("gaussian", {"activation": "-1"}, "no valid R"),
        ("gaussian", {"activation": "sin"}, "changes sign more than once"),
        ("gaussian", {"activation": "-tanh(eta)"}, r"from \+ to -"),
        ("gaussian", {"activation": "0"}, "constant R"),
        ("bernoulli", {"activation": "tanh"}, "no minimum"),
        ("poisson", {"activation": "-exp(eta)"}, "R would have to decrease"),
        ("inverse_gaussian", {"activation": "sigmoid"}, "unbounded above"),
        ("exponential", {"reparam": "identity"}, "leaves"),
        ("poisson", {"activation": "eta**2*sigmoid(eta)"}, "cannot integrate"),
        ("exponential", {"reparam": "Min(eta, 0)"}, "A is infinite"),
        ("poisson", {"reparam": "log(eta)"}, "not finite and real"),
        ("gaussian", {}, "exactly one"),
        ("gaussian", {"reparam": "relu", "activation": "relu"}, "exactly one"),
        ("gaussian", {"reparam": "relu", "kappa": 1}, "only to the activation route"),
    ],
)
def test_invalid_requests_are_refused(name, kwargs, complaint):
    with pytest.raises(dekc.LinkError, match=complaint):
        dekc.link(name, **kwargs)


def test_bad_expression_is_an_expression_error():
    with pytest.raises(dekc.ExpressionError, match="unknown name 'x'"):
        dekc.link("gaussian", reparam="x + 1")


def test_free_kappa_is_announced_and_can_be_chosen():
    with pytest.warns(dekc.DekcWarning, match="kappa"):
        link = dekc.link("poisson", activation="relu")
    assert link.kappa == 1
    chosen = quiet_link("poisson", activation="relu", kappa=3)
    # S = relu²/2 + 3, R = log S
    assert sp.simplify(chosen.R.subs(ETA, 2) - sp.log(5)) == 0


def test_boundary_contact_is_allowed_with_a_warning():
    theta = sp.Symbol("theta", real=True)
    # A = e^θ on the open half-line: finite at the end 0 that R = min(η, 0) reaches
    half = dekc.Family(
        name="half_poisson",
        log_partition=sp.exp(theta),
        natural_domain=sp.Interval.open(-sp.oo, 0),
        support="test only",
    )
    with pytest.warns(dekc.DekcWarning, match="boundary"):
        link = dekc.link(half, reparam="Min(eta, 0)")
    assert link.notes
    # the closed end of the inverse Gaussian's domain is reached without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", dekc.DekcWarning)
        assert not dekc.link("inverse_gaussian", reparam="Min(eta, 0) - 1").notes


def test_domain_membership_says_how_it_was_established():
    assert dekc.link("gamma", reparam="-exp(-eta)").domain_check == "proved by sympy"
    sampled = dekc.link("negative_binomial", activation="exp").domain_check
    assert sampled.startswith("checked at") and "could not prove" in sampled


# -- float64 forms of link-derived σ and ρ -----------------------------------------------------
#
# σ and ρ are printed to JAX and evaluated in float64 at |η| up to 1e4. The references below are
# written out here in mpmath (60 digits): S(η) = κ + ∫σ by hand-derived antiderivatives (the
# dilogarithm by mpmath.polylog), and ρ = σ / A'(A⁻¹(S)) with A'∘A⁻¹ of each family by hand.

FLOAT_ETAS = sorted([s * m for m in (1e-8, 1e-3, 0.1, 1, 10, 30, 100, 1e3, 1e4) for s in (-1, 1)] + [0.0])


def _neg_li2_exp(x):
    """−Li₂(−e^x) by mpmath.polylog; for x > 0 through Li₂(−e^x) = −π²/6 − x²/2 − Li₂(−e^{−x})."""
    if x <= 0:
        return -mpmath.polylog(2, -mpmath.exp(x))
    return mpmath.pi**2 / 6 + x * x / 2 + mpmath.polylog(2, -mpmath.exp(-x))


def _gelu_integral(x):  # ∫_0^x tΦ(t) dt = ((x² − 1)Φ(x) + xφ(x))/2 + 1/4
    return ((x * x - 1) * mpmath.ncdf(x) + x * mpmath.npdf(x)) / 2 + mpmath.mpf(1) / 4


def _elu_integral(x):  # ∫_0^x elu
    return x * x / 2 if x >= 0 else mpmath.expm1(x) - x


def _silu_integral(x):  # ∫_0^x t sigmoid(t) dt = x softplus(x) − (−Li₂(−e^x)) + π²/12
    return x * mpmath.log1p(mpmath.exp(x)) - _neg_li2_exp(x) + mpmath.pi**2 / 12


def _erf_integral(x):  # ∫_0^x erf = x erf(x) + (e^{−x²} − 1)/√π
    return x * mpmath.erf(x) + mpmath.expm1(-x * x) / mpmath.sqrt(mpmath.pi)


_SIGMA = {
    "relu": lambda x: max(x, 0),
    "erf": mpmath.erf,
    "gelu": lambda x: x * mpmath.ncdf(x),
    "elu": lambda x: x if x > 0 else mpmath.expm1(x),
    "softplus": lambda x: mpmath.log1p(mpmath.exp(x)),
    "eta*sigmoid(eta)": lambda x: x / (1 + mpmath.exp(-x)),
}
_SQRT = lambda x, s: mpmath.sign(x) * mpmath.sqrt(2 * s)  # Gaussian: A = θ²/2, A'(A⁻¹(S)) = ±√(2S)
# (family, activation): (S, A'∘A⁻¹ as a function of η and S)
FLOAT_CASES = {
    ("bernoulli", "relu"): (lambda x: 1 + max(x, 0) ** 2 / 2, lambda x, s: -mpmath.expm1(-s)),
    ("gaussian", "erf"): (_erf_integral, _SQRT),
    ("gaussian", "gelu"): (_gelu_integral, _SQRT),
    ("gaussian", "elu"): (_elu_integral, _SQRT),
    ("gaussian", "softplus"): (_neg_li2_exp, lambda x, s: mpmath.sqrt(2 * s)),
    ("bernoulli", "softplus"): (_neg_li2_exp, lambda x, s: -mpmath.expm1(-s)),
    ("poisson", "softplus"): (_neg_li2_exp, lambda x, s: s),
    ("gaussian", "eta*sigmoid(eta)"): (_silu_integral, _SQRT),
}


def _jax_function(expr):
    import jax.numpy as jnp
    import jax.scipy.special as jsp

    from dekc import printer

    namespace = {"jnp": jnp, "jsp": jsp}
    exec(printer.ARC_HELPERS + "\n\n" + printer.DILOG_HELPER, namespace)
    exec(printer.function_source("f", ["x"], expr, {ETA: "x"}), namespace)
    return lambda xs: [float(v) for v in namespace["f"](jnp.asarray(xs, dtype=jnp.float64))]


def _relative_errors(values, reference):
    for x, v, r in zip(FLOAT_ETAS, values, reference):
        if abs(r) < 1e-290:  # the exact value underflows float64
            yield x, 0.0 if abs(v) <= 1e-280 else float("inf")
        else:
            yield x, float(abs(mpmath.mpf(v) - r) / abs(r)) if mpmath.isfinite(v) else float("inf")


def _tolerance(x):
    """1e-14; in the Gaussian tails JAX's ndtr/erfc carry ~1e-13 (Φ(x) has condition number ~x²)."""
    return 1e-14 if abs(x) <= 10 else 1e-12


@functools.cache
def _float_link(name, activation):
    return quiet_link(name, activation=activation)


_SLOW_FLOAT = {("gaussian", "gelu"), ("gaussian", "erf"), ("gaussian", "eta*sigmoid(eta)"), ("bernoulli", "relu")}


@pytest.mark.parametrize(
    "name, activation",
    [pytest.param(*case, marks=pytest.mark.slow) if case in _SLOW_FLOAT else case for case in sorted(FLOAT_CASES)],
)
def test_link_pairs_are_accurate_in_float64(name, activation):
    """σ and ρ of the activation route, printed to JAX, within 1e-14 of mpmath at |η| from 1e-8 to 1e4."""
    link = _float_link(name, activation)
    S, slope = FLOAT_CASES[(name, activation)]
    sigma = _SIGMA[activation]
    with mpmath.workdps(100):  # S(η) ~ η² cancels in the antiderivatives near 0: 100 digits
        sigma_ref = [sigma(mpmath.mpf(x)) for x in FLOAT_ETAS]
        # at the breakpoint 0 of the Gaussian cases ρ is 0/0: its limit, taken at 1e-20
        at = [mpmath.mpf(x) if x != 0 or name != "gaussian" else mpmath.mpf(10) ** -20 for x in FLOAT_ETAS]
        rho_ref = [sigma(x) / slope(x, S(x)) for x in at]
    for label, expr, reference in (("sigma", link.sigma, sigma_ref), ("rho", link.rho, rho_ref)):
        values = _jax_function(expr)(FLOAT_ETAS)
        bad = [(x, e) for x, e in _relative_errors(values, reference) if not e <= _tolerance(x)]
        assert not bad, (label, expr, bad)


def test_dilogarithm_helper_against_mpmath_polylog():
    """The printer's −Li₂(−e^x) helper within 4 ulp of mpmath.polylog for x from −700 to 1e4, its
    Taylor coefficients from the Bernoulli numbers, and its gradient softplus."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dekc import printer

    namespace = {"jnp": jnp}
    exec(printer.DILOG_HELPER, namespace)
    helper = jax.jit(namespace["_neg_li2_exp"])
    xs = np.concatenate(
        [np.linspace(-40, 40, 801), np.logspace(-12, 4, 60), -np.logspace(-12, np.log10(700), 60), [0.0, 1.0, -1.0]]
    )
    xs = np.concatenate([xs, np.nextafter(xs, np.inf)])
    ours = np.asarray(helper(jnp.asarray(xs)))
    with mpmath.workdps(30):
        exact = np.array([float(_neg_li2_exp(mpmath.mpf(x))) for x in xs])
    assert np.max(np.abs(ours - exact) / np.abs(exact)) <= 4 * np.finfo(float).eps
    # x ≤ 0 straight from polylog, no inversion
    with mpmath.workdps(30):
        for x in (-0.5, -3.0, -30.0):
            assert float(helper(x)) == pytest.approx(float(-mpmath.polylog(2, -mpmath.exp(x))), rel=4e-16)
    with mpmath.workdps(40):
        for m, c in enumerate(printer._NEG_LI2_NEAR, start=1):
            b = (4**m - 1) * mpmath.bernoulli(2 * m) / (2 * m * mpmath.factorial(2 * m))
            assert c == pytest.approx(float(b / (2 * m + 1)), rel=1e-15)
        for x in (-30.0, -0.4, 0.0, 0.7, 25.0):
            assert float(jax.grad(namespace["_neg_li2_exp"])(x)) == pytest.approx(
                float(mpmath.log1p(mpmath.exp(x))), rel=1e-14
            )


def test_dilogarithm_reference_near_zero_agrees_with_polylog():
    """mpmath's −Li₂(−e^x) for |x| < 1 (a Taylor series, used by the link and the reference)
    equals polylog to the working precision, 20 and 60 digits, on both sides of 0."""
    from dekc.expressions import _neg_li2_exp_mp

    for dps in (20, 60):
        with mpmath.workdps(dps):
            for x in ("-0.999", "-0.25", "-1e-30", "0", "3e-7", "0.5", "0.999"):
                x = mpmath.mpf(x)
                want = _neg_li2_exp(x)
                assert abs(_neg_li2_exp_mp(x) - want) <= 10 * mpmath.eps * abs(want), (dps, x)


def test_negli2exp_is_whitelisted_and_evaluates_by_polylog():
    expr = dekc.expressions.as_eta_expression("negli2exp(2*eta) + elu(eta)")
    f = numeric(expr)
    with mpmath.workdps(40):
        for x in (mpmath.mpf("-3.5"), mpmath.mpf("0.25"), mpmath.mpf(12)):
            elu = x if x > 0 else mpmath.expm1(x)
            assert abs(f(x) - (-mpmath.polylog(2, -mpmath.exp(2 * x)) + elu)) < mpmath.mpf(10) ** -35
    assert sp.diff(dekc.expressions.NegLi2Exp(ETA), ETA) == softplus(ETA)


def test_elu_kink_and_sign_change_are_one_point():
    """ELU's sign change, found numerically near 1e-48, is its kink at 0: the route handles it."""
    written = quiet_link("gaussian", activation="Max(eta, 0) + Min(exp(eta) - 1, 0)")
    shorthand = _float_link("gaussian", "elu")
    assert dekc.expressions.as_eta_expression("elu") == dekc.expressions.as_eta_expression(
        "Max(eta, 0) + Min(exp(eta) - 1, 0)"
    )
    assert written.kappa == 0 and shorthand.kappa == 0
    _assert_link_identities(shorthand)
    r = numeric(shorthand.R)
    with mpmath.workdps(40):
        for x in (mpmath.mpf("-2.5"), mpmath.mpf("-0.01"), mpmath.mpf(3), mpmath.mpf(700)):
            # R = η right of 0, −√(2(e^η − 1 − η)) left of it
            expected = x if x > 0 else -mpmath.sqrt(2 * (mpmath.expm1(x) - x))
            assert abs(r(x) - expected) < mpmath.mpf(10) ** -30 * (1 + abs(expected))


@pytest.mark.parametrize("name, activation", [("gaussian", "softplus"), ("bernoulli", "softplus")])
def test_softplus_links_use_the_dilogarithm(name, activation):
    link = _float_link(name, activation)
    assert link.R.has(dekc.expressions.NegLi2Exp)
    _assert_link_identities(link)

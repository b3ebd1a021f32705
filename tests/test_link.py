"""The link stage: σ = (A∘R)' and ρ = R' checked by numerical differentiation, plus worked cases."""

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
    ("inverse_gaussian", "exp(-exp(-eta))*exp(-eta)"),
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
    link = dekc.link("poisson", activation="sigmoid")
    assert sp.simplify(link.R - sp.log(softplus(ETA))) == 0
    assert sp.simplify(link.rho - sigmoid(ETA) / softplus(ETA)) == 0


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
        ("poisson", {"activation": "softplus"}, "cannot integrate"),
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

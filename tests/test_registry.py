"""Family files: the shipped families are right, and bad files are refused with the promised messages."""

import mpmath
import pytest
import sympy as sp

import dekc
from dekc import registry
from dekc.registry import Y, convexity_deferred, load_family_file

BUILTIN = {
    "gaussian",
    "bernoulli",
    "binomial",
    "poisson",
    "exponential",
    "gamma",
    "negative_binomial",
    "inverse_gaussian",
}


def test_the_shipped_families_are_registered():
    assert BUILTIN <= set(dekc.families())


# interior natural parameters to test at, per domain (three points each)
def _thetas(fam):
    lo, hi = fam.domain.start, fam.domain.end
    if lo == -sp.oo and hi == sp.oo:
        return [-1.3, 0.2, 2.1]
    return [float(hi) - d for d in (0.3, 1.1, 2.7)]


def _measure_integral(fam, weight):
    """∫ or Σ of weight(y) over the support, chosen here from the support text (not from dekc)."""
    support = fam.support
    if support == "reals":
        return mpmath.quad(weight, [-mpmath.inf, 0, mpmath.inf])
    if support == "(0, oo)":
        return mpmath.quad(weight, [0, 1, mpmath.inf])
    if support == "{0, 1}":
        return weight(0) + weight(1)
    if support == "{0, 1, ..., n}":
        return mpmath.fsum(weight(y) for y in range(int(fam.parameters["n"]) + 1))
    if support == "nonnegative integers":
        return mpmath.nsum(weight, [0, mpmath.inf])
    raise AssertionError(f"test does not know support {support!r}")


# every family at its defaults, and each parametrised family again with its parameters set to 3
DENSITY_CASES = [(name, {}) for name in sorted(BUILTIN)] + [
    (name, dict.fromkeys(dekc.family(name).parameters, 3)) for name in sorted(BUILTIN) if dekc.family(name).parameters
]


@pytest.mark.parametrize("name, overrides", DENSITY_CASES)
def test_density_normalises_and_mean_is_A_prime(name, overrides):
    """∫ h(y) e^{θT(y) − A(θ)} dy = 1 and E[T] = A'(θ): checks A, Θ, T and h together."""
    fam = dekc.family(name, **overrides)
    theta = fam.theta
    density = sp.lambdify((Y, theta), fam.h * sp.exp(theta * fam.T - fam.A), "mpmath")
    t_of_y = sp.lambdify(Y, fam.T, "mpmath")
    a_prime = sp.lambdify(theta, sp.diff(fam.A, theta), "mpmath")
    with mpmath.workdps(25):
        for th in _thetas(fam):
            total = _measure_integral(fam, lambda y, th=th: density(y, th))
            mean = _measure_integral(fam, lambda y, th=th: t_of_y(y) * density(y, th))
            assert abs(total - 1) < 1e-12, (name, th, total)
            assert abs(mean - a_prime(th)) < 1e-10 * (1 + abs(mean)), (name, th)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_log_partition_is_convex_by_finite_differences(name):
    fam = dekc.family(name)
    a = sp.lambdify(fam.theta, fam.A, "mpmath")
    with mpmath.workdps(30):
        for th in _thetas(fam):
            assert mpmath.diff(a, th, 2) > 0
    assert fam.convexity.startswith(("symbolic", "sampled"))


def test_parameters_can_be_set_and_are_checked():
    fam = dekc.family("binomial", n=5)
    assert sp.simplify(fam.A - 5 * sp.log(1 + sp.exp(fam.theta))) == 0
    with pytest.raises(dekc.FamilyError, match="unknown parameter.*'k'"):
        dekc.family("binomial", k=2)
    with pytest.raises(dekc.FamilyError, match="not convex"):
        dekc.family("gamma", k=-1)


def test_unknown_family_names_the_registered_ones():
    with pytest.raises(dekc.UnknownFamilyError) as info:
        dekc.family("weibull")
    assert "gaussian" in str(info.value) and "register_family" in str(info.value)


GOOD = """
name = "{name}"
log_partition = "-log(1 - theta)"
natural_domain = "(-oo, 1)"
sufficient_statistic = "y"
support = "(0, oo)"
"""


def test_register_a_file_then_use_it(write_family):
    path = write_family(GOOD.format(name="shifted_exponential"))
    fam = dekc.register_family(path)
    assert dekc.family("shifted_exponential") == fam
    assert "shifted_exponential" in dekc.families()
    assert dekc.register_family(path) == fam  # idempotent
    link = dekc.link("shifted_exponential", reparam="1 - exp(-eta)")
    # A(R) = η, so σ = 1
    assert sp.simplify(link.sigma - 1) == 0


def test_a_different_family_under_a_taken_name_is_refused(write_family):
    path = write_family(GOOD.format(name="gaussian"))
    with pytest.raises(dekc.FamilyError, match="already registered"):
        dekc.register_family(path)


def test_register_a_family_object():
    theta = sp.Symbol("theta", real=True)
    fam = dekc.Family(
        name="scaled_gaussian", log_partition=2 * theta**2, natural_domain=sp.Interval(-sp.oo, sp.oo), support="reals"
    )
    assert dekc.register_family(fam) == fam
    assert sp.simplify(dekc.link("scaled_gaussian", reparam="identity").sigma - 4 * sp.Symbol("eta", real=True)) == 0
    with pytest.raises(dekc.FamilyError, match=r"<Family object>: field 'log_partition': A is not convex"):
        dekc.Family(name="bad", log_partition=-(theta**2), natural_domain=sp.Interval(-sp.oo, sp.oo))


def test_a_deferred_convexity_check_runs_before_the_family_is_used():
    theta = sp.Symbol("theta", real=True)
    with convexity_deferred():
        fam = dekc.Family(name="concave", log_partition=-(theta**2), natural_domain=sp.Interval(-sp.oo, sp.oo))
    for use in (
        lambda: dekc.link(fam, reparam="identity"),
        lambda: dekc.compile_kernel(fam, reparam="identity"),
        fam.check_convexity,
    ):
        with pytest.raises(dekc.FamilyError, match="A is not convex"):
            use()
    with convexity_deferred(), pytest.raises(dekc.FamilyError, match="must depend on the natural parameter"):
        dekc.Family(name="flat", log_partition=sp.Integer(1), natural_domain=sp.Interval(-sp.oo, sp.oo))


def test_a_cached_kernel_loads_without_the_sampled_check(monkeypatch, tmp_path):
    """The sealed kernel is the evidence; the check still runs before anything is derived, and
    the registry never hands out the unchecked family."""
    monkeypatch.setenv("DEKC_CACHE_DIR", str(tmp_path))
    dekc.compile_kernel("gaussian", reparam="relu")
    calls = []
    check = registry._check_convexity
    monkeypatch.setattr(registry, "_check_convexity", lambda *args: calls.append(args[0]) or check(*args))
    for name, value in (("_registry", {}), ("_builtins_loaded", False), ("_lazily_loaded", set())):
        monkeypatch.setattr(registry, name, value)  # the registry of a fresh process
    ker = dekc.compile_kernel("gaussian", reparam="relu")
    assert calls == []
    assert ker.link.rho is not None
    assert len(calls) == 1
    dekc.family("gaussian")
    assert len(calls) == 2
    dekc.compile_kernel("gaussian", reparam="relu", cache=False)
    assert len(calls) == 2  # the registered family was checked when it was loaded


BASE = {
    "name": '"f"',
    "log_partition": '"exp(theta)"',
    "natural_domain": '"(-oo, oo)"',
    "sufficient_statistic": '"y"',
    "support": '"reals"',
}


def _toml(**changes):
    fields = {**BASE, **changes}
    return "\n".join(f"{k} = {v}" for k, v in fields.items() if v is not None) + "\n"


@pytest.mark.parametrize(
    "text, field, complaint",
    [
        (_toml(log_partition=None), "log_partition", "required field is missing"),
        (_toml(support=None), "support", "required field is missing"),
        (_toml(colour='"red"'), "colour", "unknown key"),
        (_toml(log_partition="3"), "log_partition", "expected a string"),
        (_toml(log_partition='"-theta**2"'), "log_partition", "not convex"),
        (_toml(log_partition='"2*theta"'), "log_partition", "linear"),
        (_toml(log_partition='"exp(a*theta)"'), "log_partition", "unknown name 'a'"),
        (_toml(log_partition='"log(theta)"'), "log_partition", "not finite and real"),
        (_toml(natural_domain='"everything"'), "natural_domain", "not an interval"),
        (_toml(natural_domain='"[-oo, 0)"'), "natural_domain", "infinite end must be open"),
        (_toml(natural_domain='"(1, 0)"'), "natural_domain", "must be below"),
        (_toml(sufficient_statistic='"2"'), "sufficient_statistic", "must depend on y"),
        (_toml(name='"Bad Name"'), "name", "not a valid name"),
        (_toml(natural_parameter='"y"'), "natural_parameter", "identifier other than y"),
        (_toml() + '[parameters]\nk = "two"\n', "parameters.k", "expected a real number"),
        (_toml() + "[parameters]\nexp = 1\n", "parameters.exp", "parameter names"),
        (_toml(log_partition='"exp(theta) +"'), "log_partition", "not a valid expression"),
        ('name = "f"\nlog_partition = \n', "<toml>", "not valid TOML"),
    ],
)
def test_malformed_files_name_the_file_and_field(write_family, text, field, complaint):
    path = write_family(text)
    with pytest.raises(dekc.FamilyError) as info:
        load_family_file(path)
    message = str(info.value)
    assert str(path) in message and f"field '{field}'" in message and complaint in message
    assert info.value.field == field


def test_malicious_file_executes_nothing(write_family, tmp_path):
    sentinel = tmp_path / "pwned"
    text = _toml(
        log_partition=f"\"__import__('os').system('touch {sentinel}')\"", base_measure=f"\"open('{sentinel}', 'w')\""
    )
    path = write_family(text)
    with pytest.raises(dekc.FamilyError, match="only plain function names"):
        dekc.register_family(path)
    assert not sentinel.exists()


def test_file_errors(tmp_path):
    with pytest.raises(dekc.FamilyError, match="must end in .toml"):
        load_family_file(tmp_path / "family.py")
    with pytest.raises(dekc.FamilyError, match="no such file"):
        load_family_file(tmp_path / "missing.toml")

"""Gaussian expectations ``K_fg(a, b, c) = E[f(u) g(v)]``, ``(u, v) ~ N(0, [[a, c], [c, b]])``.

Closed forms are *derived*, not tabulated. An expression is canonicalised into a sum of atoms

* ``Mono(n, s)``  ``x^n H(s x)``, ``s = ±1`` (polynomials, ReLU powers, abs, sign, leaky ReLU,
  Heaviside: every piecewise polynomial with its kink at 0);
* ``CExp(s)``     ``e^{s x}``, ``s`` real or imaginary (``exp``, ``sin``, ``cos``);
* ``Erf(α)``      ``erf(α x)`` (also ``Φ``, through ``Φ(x) = (1 + erf(x/√2))/2``);
* ``Bump(β)``     ``e^{−β x²}``, ``β > 0``;

and ``K`` is bilinear, so it is a sum of atom-pair expectations, each from one rule:

* ``Mono × Mono``: by scaling, ``E[u^m H(u) v^n H(v)] = a^{m/2} b^{n/2} J_mn(ρ)``, ``ρ = c/√(ab)``,
  and ``J_mn`` comes from Price's theorem: differentiate ``p + 1 = min(m, n) + 1`` times in ``ρ``
  (``∂_ρ^k J = E[f^{(k)} g^{(k)}]``, distributional derivatives: ``(x^m H)' = m x^{m−1} H``,
  ``H' = δ``), evaluate the base ``E[δ(u) h(v)] = (2π)^{−1/2} E[h(w)]``, ``w ~ N(0, 1 − t²)``
  (``E[δδ] = 1/(2π√(1 − t²))``), and integrate back from the independent case ``ρ = 0``;
  ``H(−x)`` flips the sign of ``ρ``.
* ``Bump(β) × ψ``: the Gaussian factor tilts the law: ``E[e^{−βu²} ψ(v)] = (1 + 2βa)^{−1/2}
  E[ψ(w)]``, ``w ~ N(0, b − 2βc²/(1 + 2βa))``.
* ``CExp × CExp``: the moment generating function ``exp((s²a + 2stc + t²b)/2)``.
* ``CExp(s) × Mono`` (real ``s``): tilting shifts the mean: ``e^{s²a/2} E[(w + sc)^n H(w + sc)]``,
  ``w ~ N(0, b)``, with ``E[(μ + σZ)^n H(μ + σZ)] = μ M_{n−1} + (n − 1)σ² M_{n−2}`` (Stein's lemma),
  ``M_0 = Φ(μ/σ)``, ``M_1 = μΦ(μ/σ) + σφ(μ/σ)``.
* ``Erf(α) × ψ``: one Price step, ``K(c) = E[erf]E[ψ] + ∫_0^c (2α/√π) E[e^{−α²u²} ψ'(v)]|_t dt``
  with ``E[erf(αu)] = 0``; the integrand is a Bump pair, the integral is done by sympy.

Pairs outside these rules use quadrature (:mod:`dekc.quadrature`). Every closed form records
``method = "closed-form"`` and every result is checked against :mod:`dekc.reference` in the tests.
"""

from __future__ import annotations

import dataclasses
import functools

import mpmath
import numpy as np
import sympy as sp

from .budget import limited
from .errors import InputError, NoExpectationError, NotClosedForm, UnprintableError
from .expressions import ETA, as_eta_expression, to_mpmath
from .printer import HELPERS as ARC_HELPERS
from .printer import function_source

A, B = sp.symbols("a b", positive=True)
C = sp.Symbol("c", real=True)
RHO = sp.Symbol("rho", real=True)  # c/√(ab), used by piecewise-polynomial pairs
_T = sp.Symbol("t", real=True)
_MU = sp.Symbol("mu", real=True)
_SIGMA = sp.Symbol("sigma", positive=True)

#: float64 accuracy the closed forms are tested to (relative to the Cauchy–Schwarz scale)
CLOSED_FORM_TOLERANCE = 1e-12


class NormalCdf(sp.Function):
    """``Φ(x)``, kept whole (``(1 + erf(x/√2))/2`` cancels for negative ``x``); printed as ``ndtr``."""

    nargs = 1
    is_real = True

    def fdiff(self, argindex=1):
        x = self.args[0]
        return sp.exp(-(x**2) / 2) / sp.sqrt(2 * sp.pi)

    def _eval_rewrite_as_erf(self, x, **kwargs):
        return (1 + sp.erf(x / sp.sqrt(2))) / 2


# -- atoms ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mono:
    """``x^n H(s x)``."""

    n: int
    s: int


@dataclasses.dataclass(frozen=True)
class CExp:
    """``e^{s x}`` with ``s`` real or purely imaginary."""

    s: sp.Expr


@dataclasses.dataclass(frozen=True)
class Erf:
    """``erf(α x)``."""

    alpha: sp.Expr


@dataclasses.dataclass(frozen=True)
class Bump:
    """``e^{−β x²}``, ``β > 0``."""

    beta: sp.Expr


@dataclasses.dataclass(frozen=True)
class Delta:
    """``δ(x)``; appears only inside Price steps."""


def _linear_coefficient(arg: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """``α`` when ``arg = α x`` exactly, else raise."""
    alpha = sp.simplify(arg / x)
    if alpha.has(x) or not alpha.is_number or alpha == 0:
        raise NotClosedForm(f"{arg} is not a multiple of {x}")
    return alpha


def _to_heaviside_form(expr: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """Max/Min/Abs/sign/normal-cdf rewritten with Heaviside and erf; trig with exponentials."""

    def max_rule(e):
        if len(e.args) != 2:
            raise NotClosedForm(f"{e}: only two-argument Max/Min")
        p, q = e.args
        step = sp.Heaviside(p - q) if isinstance(e, sp.Max) else sp.Heaviside(q - p)
        return q + (p - q) * step

    out = expr.replace(lambda e: isinstance(e, (sp.Max, sp.Min)), max_rule)
    out = out.replace(lambda e: isinstance(e, sp.Abs), lambda e: e.args[0] * (sp.Heaviside(e.args[0]) - sp.Heaviside(-e.args[0])))
    out = out.replace(lambda e: isinstance(e, sp.sign), lambda e: sp.Heaviside(e.args[0]) - sp.Heaviside(-e.args[0]))
    out = out.replace(lambda e: isinstance(e, sp.erfc), lambda e: 1 - sp.erf(e.args[0]))
    out = out.rewrite(sp.cos, sp.exp).rewrite(sp.sin, sp.exp).rewrite(sp.cosh, sp.exp).rewrite(sp.sinh, sp.exp)
    return out


def _normalise_heaviside(e: sp.Heaviside, x: sp.Symbol) -> sp.Expr:
    arg = e.args[0]
    alpha = _linear_coefficient(arg, x)
    if not alpha.is_real:
        raise NotClosedForm(f"{e}: complex argument")
    return sp.Heaviside(x) if alpha > 0 else sp.Heaviside(-x)


def canonicalise(expr: sp.Expr, x: sp.Symbol = ETA) -> list[tuple[sp.Expr, object]]:
    """``expr`` as ``Σ coefficient · atom``; raises :class:`NotClosedForm` when it is not one."""
    work = _to_heaviside_form(sp.sympify(expr), x)
    work = work.replace(lambda e: isinstance(e, sp.Heaviside), lambda e: _normalise_heaviside(e, x))
    work = sp.expand(work, power_exp=True, log=False)
    terms = []
    for term in sp.Add.make_args(work):
        terms.extend(_term_atoms(term, x))
    merged: dict = {}
    for coef, atom in terms:
        merged[atom] = merged.get(atom, 0) + coef
    out = []
    for atom, coef in merged.items():
        coef = sp.simplify(coef)
        if coef != 0:
            out.append((_moderate(coef), atom))
    return out


def _moderate(coef: sp.Expr) -> sp.Expr:
    """A coefficient whose exact rationals are huge (``1 − 10⁻³²⁰``, written ``(10³²⁰ − 1)/10³²⁰``) as a
    30-digit float: exact rationals beyond float64 would otherwise meet in the closed form as
    ``inf/inf``."""
    if coef.is_number and any(abs(r.p) > 10**30 or r.q > 10**30 for r in coef.atoms(sp.Rational)):
        return sp.Float(coef, 30)
    return coef


def _term_atoms(term: sp.Expr, x: sp.Symbol) -> list:
    coef = sp.Integer(1)
    power = 0
    signs = set()
    exponent = sp.Integer(0)
    erfs = []
    for factor in sp.Mul.make_args(term):
        if not factor.has(x):
            coef *= factor
            continue
        base, exp = factor.as_base_exp()
        if base == x and exp.is_Integer and exp > 0:
            power += int(exp)
        elif isinstance(base, sp.Heaviside) and exp.is_Integer and exp > 0:
            signs.add(1 if base.args[0] == x else -1)
        elif isinstance(factor, sp.exp) or (base is sp.E):
            exponent += factor.args[0] if isinstance(factor, sp.exp) else exp
        elif isinstance(base, sp.erf) and exp == 1:
            erfs.append(_linear_coefficient(base.args[0], x))
        else:
            raise NotClosedForm(f"factor {factor} has no closed-form rule")
    if len(signs) == 2:
        return []  # H(x) H(−x) = 0 almost everywhere
    poly = sp.Poly(sp.expand(exponent), x) if exponent != 0 else None
    if poly is not None and poly.degree() > 2:
        raise NotClosedForm(f"exp({exponent}) has no closed-form rule")
    quad = poly.coeff_monomial(x**2) if poly is not None else 0
    lin = poly.coeff_monomial(x) if poly is not None else 0
    const = poly.coeff_monomial(1) if poly is not None else 0
    coef *= sp.exp(const)
    kinds = sum([bool(erfs), quad != 0, lin != 0, bool(signs) or power > 0])
    if kinds > 1 or len(erfs) > 1:
        raise NotClosedForm(f"{term}: products of different kinds of factor have no closed-form rule")
    if erfs:
        return [(coef, Erf(erfs[0]))]
    if quad != 0:
        beta = -quad
        if not (beta.is_real and beta > 0):
            raise NoExpectationError(f"exp({exponent}) grows like exp(x²): its Gaussian expectation exists only for "
                                     "small variances; dekc does not take it")
        return [(coef, Bump(beta))]
    if lin != 0:
        if not (lin.is_real or (sp.re(lin) == 0)):
            raise NotClosedForm(f"exp({exponent}): complex growth rate")
        return [(coef, CExp(lin))]
    if signs:
        return [(coef, Mono(power, signs.pop()))]
    return [(coef, Mono(power, 1)), (coef, Mono(power, -1))]


# -- pair rules ----------------------------------------------------------------------------------


def _half_moment(n: int) -> sp.Expr:
    """``E[Z^n H(Z)]`` for ``Z ~ N(0, 1)``: ``2^{n/2−1} Γ((n+1)/2)/√π``."""
    return sp.simplify(2 ** (sp.Rational(n, 2) - 1) * sp.gamma(sp.Rational(n + 1, 2)) / sp.sqrt(sp.pi))


def _derivative_of_mono(m: int, k: int):
    """``(x^m H(x))^{(k)}``: ``('mono', coef, power)`` or ``('delta', coef)`` (k ≤ m + 1)."""
    if k <= m:
        return ("mono", sp.factorial(m) / sp.factorial(m - k), m - k)
    return ("delta", sp.factorial(m))


@functools.lru_cache(maxsize=None)
def relu_power_kernel(m: int, n: int) -> sp.Expr:
    """``J_mn(ρ) = E[z₁^m H(z₁) z₂^n H(z₂)]`` for unit variances and correlation ``ρ``, by Price's theorem."""
    if m > n:
        return relu_power_kernel(n, m)
    p = m  # min(m, n)
    series = sum(
        _derivative_of_mono(m, k)[1] * _half_moment(m - k) * _derivative_of_mono(n, k)[1] * _half_moment(n - k)
        * RHO**k / sp.factorial(k)
        for k in range(p + 1)
    )
    f_top, g_top = _derivative_of_mono(m, p + 1), _derivative_of_mono(n, p + 1)
    if g_top[0] == "delta":  # m = n: E[δ(u) δ(v)] = 1/(2π√(1 − t²))
        base = f_top[1] * g_top[1] / (2 * sp.pi * sp.sqrt(1 - _T**2))
    else:  # E[δ(u) w^j H(w)], w | u = 0 ~ N(0, 1 − t²)
        j = g_top[2]
        base = f_top[1] * g_top[1] / sp.sqrt(2 * sp.pi) * (1 - _T**2) ** sp.Rational(j, 2) * _half_moment(j)
    integral = sp.integrate((RHO - _T) ** p / sp.factorial(p) * base, (_T, 0, RHO))
    return sp.simplify(series + integral)


def _swap(expr: sp.Expr) -> sp.Expr:
    return expr.subs({A: B, B: A}, simultaneous=True)


def _centred(atom, var: sp.Expr) -> sp.Expr:
    """``E[atom(w)]``, ``w ~ N(0, var)``."""
    if isinstance(atom, Mono):
        return sp.Integer(atom.s) ** atom.n * _half_moment(atom.n) * var ** sp.Rational(atom.n, 2)
    if isinstance(atom, CExp):
        return sp.exp(atom.s**2 * var / 2)
    if isinstance(atom, Erf):
        return sp.Integer(0)
    if isinstance(atom, Bump):
        return 1 / sp.sqrt(1 + 2 * atom.beta * var)
    if isinstance(atom, Delta):
        return 1 / sp.sqrt(2 * sp.pi * var)
    raise NotClosedForm(f"no centred rule for {atom}")


def _shifted_mono(n: int, mu: sp.Expr, sigma: sp.Expr) -> sp.Expr:
    """``E[(μ + σZ)^n H(μ + σZ)]`` by Stein's recursion."""
    cdf = NormalCdf(mu / sigma)
    pdf = sp.exp(-(mu**2) / (2 * sigma**2)) / sp.sqrt(2 * sp.pi)
    moments = [cdf, mu * cdf + sigma * pdf]
    for k in range(2, n + 1):
        moments.append(mu * moments[k - 1] + (k - 1) * sigma**2 * moments[k - 2])
    return moments[n]


def _derivative(atom) -> list:
    if isinstance(atom, Mono):
        return [(sp.Integer(atom.n), Mono(atom.n - 1, atom.s))] if atom.n > 0 else [(sp.Integer(atom.s), Delta())]
    if isinstance(atom, CExp):
        return [(atom.s, atom)]
    if isinstance(atom, Erf):
        return [(2 * atom.alpha / sp.sqrt(sp.pi), Bump(atom.alpha**2))]
    raise NotClosedForm(f"no derivative rule for {atom}")


@functools.lru_cache(maxsize=None)
def atom_pair(phi, psi) -> sp.Expr:
    """``E[φ(u) ψ(v)]`` as an expression in ``a, b, c`` (and ``ρ`` for Mono pairs)."""
    if isinstance(phi, Mono) and isinstance(psi, Mono):
        flip = phi.s * psi.s
        sign = sp.Integer(phi.s) ** phi.n * sp.Integer(psi.s) ** psi.n
        return sign * A ** sp.Rational(phi.n, 2) * B ** sp.Rational(psi.n, 2) * relu_power_kernel(phi.n, psi.n).subs(RHO, flip * RHO)
    if isinstance(phi, Bump):
        var = B - 2 * phi.beta * C**2 / (1 + 2 * phi.beta * A)
        return _centred(psi, var) / sp.sqrt(1 + 2 * phi.beta * A)
    if isinstance(psi, Bump):
        return _swap(atom_pair(psi, phi))
    if isinstance(phi, CExp) and isinstance(psi, CExp):
        return sp.exp((phi.s**2 * A + 2 * phi.s * psi.s * C + psi.s**2 * B) / 2)
    if isinstance(phi, CExp) and isinstance(psi, Mono) and phi.s.is_real:
        mu, sigma = psi.s * phi.s * C, sp.sqrt(B)
        return sp.exp(phi.s**2 * A / 2) * sp.Integer(psi.s) ** psi.n * _shifted_mono(psi.n, mu, sigma)
    if isinstance(psi, CExp) and isinstance(phi, Mono):
        return _swap(atom_pair(psi, phi))
    if isinstance(phi, Erf) and not isinstance(psi, Delta):
        integrand = sum(coef * atom_pair(Bump(phi.alpha**2), d) for coef, d in _derivative(psi))
        integrand = 2 * phi.alpha / sp.sqrt(sp.pi) * integrand
        return _integrate_even_from_zero(integrand, phi, psi)
    if isinstance(psi, Erf):
        return _swap(atom_pair(psi, phi))
    raise NotClosedForm(f"no closed-form rule for {phi} x {psi}")


def _integrate_even_from_zero(integrand: sp.Expr, phi, psi) -> sp.Expr:
    """``∫_0^c h(t) dt`` for an integrand even in ``t`` (a tilted law depends on ``t²`` only).

    sympy's antiderivatives carry branches for ``t² > ab``-type conditions that cannot hold for
    a covariance (``|t| ≤ √(ab)``); integrating for ``t, c > 0`` removes them, and the odd result
    extends to negative ``c``. The reference checks cover both signs.
    """
    t_pos, c_pos = sp.Symbol("t", positive=True), sp.Symbol("c", positive=True)
    primitive = sp.integrate(integrand.subs(C, t_pos), t_pos, conds="none")
    primitive = primitive.replace(lambda e: isinstance(e, sp.Piecewise), lambda e: e.args[-1][0])
    if primitive.has(sp.Integral, sp.Piecewise, sp.I):
        raise NotClosedForm(f"sympy cannot integrate the Price step of {phi} x {psi}")
    at_zero = sp.limit(primitive, t_pos, 0, "+")
    return sp.simplify(primitive.subs(t_pos, c_pos) - at_zero).subs(c_pos, C)


# -- the public object ----------------------------------------------------------------------------


def _rho_expr(expr: sp.Expr) -> sp.Expr:
    """Display form: ``ρ`` replaced by ``c/√(ab)``."""
    return expr.subs(RHO, C / sp.sqrt(A * B))


def _growth_check(f: sp.Expr, what: str) -> None:
    """Refuse functions that are not real and finite on ℝ or that grow like ``exp(x²)``."""
    fn = to_mpmath(f, ETA)

    def evaluate(x, dps):
        with mpmath.workdps(dps):
            try:
                return mpmath.mpmathify(fn(mpmath.mpf(x))), False
            except (ValueError, ZeroDivisionError, OverflowError, TypeError):
                return mpmath.nan, True  # an exact pole or domain error: more digits cannot help

    with mpmath.workdps(30):
        for x in (-1e4, -100, -3, -0.5, 0, 0.7, 2.5, 100, 1e4):  # 0 catches poles such as 1/eta
            value, raised = evaluate(x, 30)
            if not raised and not mpmath.isfinite(value):  # e.g. log(1 + e^x) at x = -1e4 needs ~|x|/ln 10 digits
                value, _ = evaluate(x, 50 + int(abs(x) / 2.3))
            if mpmath.isnan(value) or mpmath.im(value) != 0 or (abs(x) < 1e3 and not mpmath.isfinite(value)):
                raise NoExpectationError(f"{what} {f} is not real and finite at eta = {x}; its Gaussian expectation is undefined")
            if abs(x) >= 1e3 and (not mpmath.isfinite(value) or mpmath.log(abs(value) + 1) / x**2 > 1e-3):
                raise NoExpectationError(f"{what} {f} grows like exp(eta^2) or faster: its Gaussian expectation does not "
                                         "exist for every variance")


class GaussianExpectation:
    """``E(a, b, c) = E[f(u) g(v)]`` for ``(u, v) ~ N(0, [[a, c], [c, b]])``, vectorised.

    Attributes: ``f``, ``g`` (sympy in ``eta``), ``method`` (``"closed-form"`` or
    ``"quadrature"``), ``expr`` (sympy in ``a, b, c`` or ``None``), ``one_point_expr``,
    ``dc_expr``, ``error_bound`` (relative to the Cauchy–Schwarz scale
    ``√(E f(u)² E g(v)²)``). Calls accept numpy or JAX arrays (broadcast together) and return
    the same kind; JAX inputs stay traceable under ``jit`` and ``grad``.
    """

    def __init__(self, f, g, *, tol: float = 1e-9, derived: bool = False):
        """``derived=True``: ``f`` and ``g`` are sympy expressions dekc derived itself (a link's σ
        and ρ), which may contain functions outside the text whitelist."""
        tol = check_tolerance(tol)
        with limited(f"the Gaussian expectation of f = {str(f)[:80]}, g = {str(g)[:80]}"):
            self._derive(f, g, tol, derived)

    def _derive(self, f, g, tol, derived):
        self.f = f if derived and isinstance(f, sp.Expr) else as_eta_expression(f, what="f")
        self.g = g if derived and isinstance(g, sp.Expr) else as_eta_expression(g, what="g")
        _growth_check(self.f, "f")
        _growth_check(self.g, "g")
        self._pair = None
        self._quadrature = None
        try:
            self._pair = closed_form(self.f, self.g)
        except (NotClosedForm, UnprintableError):
            pass
        if self._pair is not None:
            self.method = "closed-form"
            self._rho_form, self._one_point_form = self._pair
            self.expr = sp.simplify(_rho_expr(self._rho_form)) if sp.count_ops(self._rho_form) < 300 else _rho_expr(self._rho_form)
            self.dc_expr = _rho_expr(sp.diff(self._rho_form, C) + sp.diff(self._rho_form, RHO) / sp.sqrt(A * B))
            self.one_point_expr = self._one_point_form
            self.error_bound = CLOSED_FORM_TOLERANCE
            self._functions = exec_functions(self.source("K"), "K")
        else:
            from .quadrature import QuadratureExpectation

            self.method = "quadrature"
            self.expr = self.dc_expr = self.one_point_expr = None
            self._quadrature = QuadratureExpectation(self.f, self.g, tol=tol)
            self.error_bound = self._quadrature.error_bound
            self._functions = self._quadrature.functions()

    def source(self, prefix: str, title: str = "") -> str:
        """Generated module source defining ``prefix``, ``prefix_dc`` and ``prefix_one_point``."""
        if self._quadrature is not None:
            return self._quadrature.source(prefix, title)
        return closed_form_source(prefix, self._rho_form, self._one_point_form, title)

    def __repr__(self) -> str:
        return f"GaussianExpectation(f={self.f}, g={self.g}, method={self.method!r})"

    def __call__(self, a, b, c):
        return _apply(self._functions["pair"], a, b, c)

    def dc(self, a, b, c):
        """``∂K/∂c`` (Price: ``K_{f'g'}``)."""
        return _apply(self._functions["dc"], a, b, c)

    def one_point(self, a):
        """``E[f(u) g(u)]``, ``u ~ N(0, a)``."""
        return _apply(self._functions["one_point"], a)

    def estimate(self, a, b, c):
        """``(value, error estimate)``; the estimate is 0 for closed forms."""
        if self._quadrature is not None:
            return self._quadrature.estimate(a, b, c)
        value = self(a, b, c)
        return value, value * 0


def _hyperbolic(expr: sp.Expr) -> sp.Expr:
    """``k₁e^{P+qc} + k₂e^{P−qc}`` → ``e^P((k₁+k₂)cosh(qc) + (k₁−k₂)sinh(qc))``.

    Trigonometric pairs arrive as such differences; for small ``c`` the difference of
    exponentials cancels catastrophically while ``sinh`` does not.
    """
    groups: dict = {}
    rest = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(expr, power_exp=False)):
        coef, exps = sp.Integer(1), []
        for factor in sp.Mul.make_args(term):
            if isinstance(factor, sp.exp):
                exps.append(factor.args[0])
            else:
                coef *= factor
        if len(exps) != 1 or coef.has(C):
            rest += term
            continue
        q = sp.expand(exps[0]).coeff(C)
        if q.has(C) or not q.is_number:
            rest += term
            continue
        base = sp.expand(exps[0] - q * C)
        groups.setdefault(base, {}).setdefault(abs(q), [0, 0])[0 if q >= 0 else 1] += coef
    total = rest
    for base, by_rate in groups.items():
        for q, (kp, km) in by_rate.items():
            if q != 0 and kp != 0 and km != 0:
                total += sp.exp(base) * ((kp + km) * sp.cosh(q * C) + (kp - km) * sp.sinh(q * C))
            else:  # one exponential: nothing cancels
                total += kp * sp.exp(base + q * C) + km * sp.exp(base - q * C)
    return total


@functools.lru_cache(maxsize=256)
def closed_form(f: sp.Expr, g: sp.Expr):
    """``(K in a, b, c, ρ; one-point form in a)`` or raise :class:`NotClosedForm`."""
    left, right = canonicalise(f), canonicalise(g)
    pair = sum((cf * cg * atom_pair(pf, pg) for cf, pf in left for cg, pg in right), sp.Integer(0))
    pair = sp.sympify(pair)
    if pair.has(sp.I):
        pair = sp.simplify(sp.expand_complex(pair))
        if pair.has(sp.I):
            raise NotClosedForm("complex terms do not cancel")
    if any(e.args[0].has(C) for e in pair.atoms(sp.exp)):
        pair = _hyperbolic(pair)
    one_point = pair.subs(RHO, 1).subs({B: A}).subs(C, A)
    if one_point.has(sp.zoo, sp.nan, sp.oo):
        one_point = sp.limit(pair.subs(RHO, 1).subs(B, A), C, A, "-")
    one_point = sp.simplify(one_point) if sp.count_ops(one_point) < 300 else one_point
    return pair, one_point


# -- numerical functions --------------------------------------------------------------------------

_TINY = 1e-300  # a or b of 0: evaluate at the limit a → 0⁺ along fixed ρ


_SHAPE3 = "jnp.broadcast_to({}, jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b), jnp.shape(c)))"


def closed_form_source(prefix: str, rho_form: sp.Expr, one_point: sp.Expr, title: str = "") -> str:
    """Module source of ``prefix(a, b, c)``, ``prefix_dc(a, b, c)`` and ``prefix_one_point(a)``.

    ``c/√(ab)`` is computed once and clipped to ``[−1, 1]`` (rounding can push it past 1);
    ``a`` or ``b`` equal to 0 uses the exact form where it is finite (``a^{m/2} = 0`` exactly) and
    the limit ``a → 0⁺`` along fixed ``ρ`` elsewhere. ``∂K/∂c = ∂K/∂c|_ρ + ∂K/∂ρ / √(ab)``.
    """
    inv_sab = sp.Symbol("inv_sab", positive=True)
    names = {A: "a", B: "b", C: "c", RHO: "rho", inv_sab: "inv_sab"}
    dc_form = sp.diff(rho_form, C) + sp.diff(rho_form, RHO) * inv_sab
    what = f" of {title}" if title else ""
    parts = [
        function_source(f"_{prefix}_form", ["a", "b", "c"], rho_form, names, result=_SHAPE3, prelude=[
            "sab = jnp.sqrt(a * b)",
            "rho = jnp.where(sab > 0, jnp.clip(c / jnp.where(sab > 0, sab, 1.0), -1.0, 1.0), 0.0)"]),
        f"""def {prefix}(a, b, c):
    \"\"\"E[f(u) g(v)]{what}, (u, v) ~ N(0, [[a, c], [c, b]]).\"\"\"
    exact = _{prefix}_form(a, b, c)
    floored = _{prefix}_form(jnp.maximum(a, {_TINY!r}), jnp.maximum(b, {_TINY!r}), c)
    return jnp.where(jnp.isfinite(exact), exact, floored)
""",
        function_source(f"{prefix}_dc", ["a", "b", "c"], dc_form, names, result=_SHAPE3,
                        doc=f"d/dc E[f(u) g(v)]{what} (Price: E[f'(u) g'(v)]).", prelude=[
                            f"a = jnp.maximum(a, {_TINY!r})",
                            f"b = jnp.maximum(b, {_TINY!r})",
                            "sab = jnp.sqrt(a * b)",
                            "rho = jnp.clip(c / sab, -1.0, 1.0)",
                            "inv_sab = 1.0 / sab"]),
        function_source(f"{prefix}_one_point", ["a"], one_point, {A: "a"}, result="jnp.broadcast_to({}, jnp.shape(a))",
                        doc=f"E[f(u) g(u)]{what}, u ~ N(0, a).", prelude=[f"a = jnp.maximum(a, {_TINY!r})"]),
    ]
    return "\n\n".join(parts)


def exec_functions(source: str, prefix: str) -> dict:
    """Run generated ``source`` and return its jitted ``pair``, ``dc`` and ``one_point`` functions,
    and ``positive``, the pair form for ``a, b > 0`` only (one evaluation instead of two)."""
    from ._jax import jax, jnp, jsp

    namespace = {"jax": jax, "jnp": jnp, "jsp": jsp}
    exec(compile(ARC_HELPERS + "\n\n" + source, f"<dekc {prefix}>", "exec"), namespace)  # printed by dekc.printer
    return {"pair": jax.jit(namespace[prefix]), "dc": jax.jit(namespace[f"{prefix}_dc"]),
            "one_point": jax.jit(namespace[f"{prefix}_one_point"]),
            "positive": jax.jit(namespace[f"_{prefix}_form"])}


def _apply(fn, *args):
    from ._jax import jax

    if any(isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer) for x in args):
        return fn(*args)
    out = fn(*(np.asarray(x, dtype=np.float64) for x in args))
    out = np.asarray(out)
    return out if out.ndim else float(out)


def check_tolerance(tol) -> float:
    """The accuracy asked of quadrature: a number in ``[1e-15, 1e-2]``."""
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating, np.integer)) \
            or not 1e-15 <= float(tol) <= 1e-2:
        raise InputError(f"tol must be a number between 1e-15 and 1e-2 (the relative accuracy asked of quadrature), "
                         f"got {tol!r}")
    return float(tol)


def gaussian_expectation(f, g, *, tol: float = 1e-9) -> GaussianExpectation:
    """The Gaussian expectation engine for the pair ``(f, g)`` (shorthands, text in ``eta``, sympy)."""
    return _cached_expectation(as_eta_expression(f, what="f"), as_eta_expression(g, what="g"), check_tolerance(tol),
                               False)


def derived_expectation(f: sp.Expr, g: sp.Expr, *, tol: float = 1e-9) -> GaussianExpectation:
    """As :func:`gaussian_expectation`, for sympy expressions in ``eta`` that dekc derived itself
    (a link's σ and ρ, an activation's derivative): they may contain functions outside the
    text whitelist that the derivation produced."""
    return _cached_expectation(f, g, check_tolerance(tol), True)


@functools.lru_cache(maxsize=256)
def _cached_expectation(f, g, tol, derived):
    return GaussianExpectation(f, g, tol=tol, derived=derived)

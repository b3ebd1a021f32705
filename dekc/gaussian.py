"""The rule layer of the expectation engine: atoms, their rules, and the table of pair rules.

``K_fg(a, b, c) = E[f(u) g(v)]`` with ``(u, v) ~ N(0, [[a, c], [c, b]])`` is bilinear in ``f`` and
``g``. :func:`canonicalise` writes a function as ``Σ coefficient · atom``; each atom is an
:class:`Atom` subclass that carries its own one-variable rules:

* :meth:`Atom.centred`: ``E[atom(w)]``, ``w ~ N(0, var)``;
* :meth:`Atom.conditional`: ``E[atom(μ + σZ)]``, ``Z ~ N(0, 1)`` (the quadrature engine's
  one-dimensional reduction);
* :meth:`Atom.derivative`: the atom's derivative as ``[(coefficient, atom), ...]`` (distributional:
  ``H' = δ``), used by Price steps.

Two-variable rules live in one table keyed by the two atoms' types (:func:`pair_rule`);
:func:`atom_pair` looks a pair up in either order, exchanging ``a`` and ``b`` when it uses the
mirrored rule. Adding an atom is one class; adding a rule is one decorated function.
The mathematics of each rule is in the documentation (``docs/mathematics.md``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import sympy as sp

from .errors import NoExpectationError, NotClosedForm
from .expressions import ETA, ExpNormalCdf, NormalCdf, expm1

A, B = sp.symbols("a b", positive=True)
C = sp.Symbol("c", real=True)
RHO = sp.Symbol("rho", real=True)  # c/√(ab), used by piecewise-polynomial pairs
MU = sp.Symbol("mu", real=True)  # the mean of a conditional expectation
SIGMA = sp.Symbol("sigma", positive=True)  # its standard deviation
_T = sp.Symbol("t", real=True)

#: a variance of 0 is evaluated at this floor (the limit a → 0⁺ along fixed ρ)
VARIANCE_FLOOR = 1e-300


# -- atoms -----------------------------------------------------------------------------------------


class Atom:
    """One canonical function of ``x``; subclasses carry its one-variable rules."""

    def centred(self, var: sp.Expr) -> sp.Expr:
        """``E[atom(w)]``, ``w ~ N(0, var)``."""
        raise NotClosedForm(f"no centred rule for {self}")

    def conditional(self, mu: sp.Expr, sigma: sp.Expr) -> sp.Expr:
        """``E[atom(μ + σZ)]``, ``Z ~ N(0, 1)``."""
        raise NotClosedForm(f"no conditional rule for {self}")

    def derivative(self) -> list[tuple[sp.Expr, Atom]]:
        """``atom'`` as ``[(coefficient, atom), ...]``."""
        raise NotClosedForm(f"no derivative rule for {self}")


def half_moment(n: int) -> sp.Expr:
    """``E[Z^n H(Z)]`` for ``Z ~ N(0, 1)``: ``2^{n/2−1} Γ((n+1)/2)/√π``."""
    return sp.simplify(2 ** (sp.Rational(n, 2) - 1) * sp.gamma(sp.Rational(n + 1, 2)) / sp.sqrt(sp.pi))


def shifted_mono(n: int, mu: sp.Expr, sigma: sp.Expr) -> sp.Expr:
    """``E[(μ + σZ)^n H(μ + σZ)]`` by Stein's recursion ``M_n = μ M_{n−1} + (n − 1)σ² M_{n−2}``."""
    cdf = NormalCdf(mu / sigma)
    pdf = sp.exp(-(mu**2) / (2 * sigma**2)) / sp.sqrt(2 * sp.pi)
    moments = [cdf, mu * cdf + sigma * pdf]
    for k in range(2, n + 1):
        moments.append(mu * moments[k - 1] + (k - 1) * sigma**2 * moments[k - 2])
    return moments[n]


@dataclasses.dataclass(frozen=True)
class Mono(Atom):
    """``x^n H(s x)``, ``s = ±1``: every piecewise polynomial with its kink at 0."""

    n: int
    s: int

    def centred(self, var):
        return sp.Integer(self.s) ** self.n * half_moment(self.n) * var ** sp.Rational(self.n, 2)

    def conditional(self, mu, sigma):
        return sp.Integer(self.s) ** self.n * shifted_mono(self.n, self.s * mu, sigma)

    def derivative(self):
        if self.n > 0:
            return [(sp.Integer(self.n), Mono(self.n - 1, self.s))]
        return [(sp.Integer(self.s), Delta())]


@dataclasses.dataclass(frozen=True)
class CExp(Atom):
    """``e^{s x}`` with ``s`` real or purely imaginary (``exp``, ``sin``, ``cos``)."""

    s: sp.Expr

    def centred(self, var):
        return sp.exp(self.s**2 * var / 2)

    def conditional(self, mu, sigma):
        return sp.exp(self.s * mu + self.s**2 * sigma**2 / 2)

    def derivative(self):
        return [(self.s, self)]


@dataclasses.dataclass(frozen=True)
class ExpStep(Atom):
    """``e^{s x} H(t x)``, ``s`` real, ``t = ±1``: an exponential on a half-line (ELU's negative
    part is ``e^x H(−x) − H(−x)``). Only one-variable rules: its pairs go to quadrature."""

    s: sp.Expr
    t: int

    def centred(self, var):
        return self.conditional(sp.Integer(0), sp.sqrt(var))

    def conditional(self, mu, sigma):
        # the weight e^{sX}, X = μ + σZ, tilts the law to N(μ + sσ², σ²) with mass e^{sμ + s²σ²/2}
        return ExpNormalCdf(self.s * mu + self.s**2 * sigma**2 / 2, self.t * (mu + self.s * sigma**2) / sigma)


@dataclasses.dataclass(frozen=True)
class Erf(Atom):
    """``erf(α x)`` (also ``Φ``, through ``Φ(x) = (1 + erf(x/√2))/2``)."""

    alpha: sp.Expr

    def centred(self, var):
        return sp.Integer(0)

    def conditional(self, mu, sigma):
        return sp.erf(self.alpha * mu / sp.sqrt(1 + 2 * self.alpha**2 * sigma**2))

    def derivative(self):
        return [(2 * self.alpha / sp.sqrt(sp.pi), Bump(self.alpha**2))]


@dataclasses.dataclass(frozen=True)
class Bump(Atom):
    """``e^{−β x²}``, ``β > 0``."""

    beta: sp.Expr

    def centred(self, var):
        return 1 / sp.sqrt(1 + 2 * self.beta * var)

    def conditional(self, mu, sigma):
        spread = 1 + 2 * self.beta * sigma**2
        return sp.exp(-self.beta * mu**2 / spread) / sp.sqrt(spread)

    def derivative(self):
        return [(-2 * self.beta, MonoBump(1, self.beta))]


@dataclasses.dataclass(frozen=True)
class Delta(Atom):
    """``δ(x)``; appears only inside Price steps."""

    def centred(self, var):
        return 1 / sp.sqrt(2 * sp.pi * var)


def gaussian_moment(n: int, mu: sp.Expr, var: sp.Expr) -> sp.Expr:
    """``E[X^n]`` for ``X ~ N(μ, var)``: ``Σ_k C(n, 2k) μ^{n−2k} var^k (2k − 1)!!``."""
    return sum(
        (sp.binomial(n, 2 * k) * mu ** (n - 2 * k) * var**k * sp.factorial2(2 * k - 1) for k in range(n // 2 + 1)),
        sp.Integer(0),
    )


def _mono_erf(n: int, alpha: sp.Expr) -> Atom:
    """``x^n erf(αx)`` as an atom (``Erf`` for ``n = 0``)."""
    return Erf(alpha) if n == 0 else MonoErf(n, alpha)


def _mono_bump(n: int, beta: sp.Expr) -> Atom:
    """``x^n e^{−βx²}`` as an atom (``Bump`` for ``n = 0``)."""
    return Bump(beta) if n == 0 else MonoBump(n, beta)


@dataclasses.dataclass(frozen=True)
class MonoBump(Atom):
    """``x^n e^{−βx²}``, ``n ≥ 1``, ``β > 0`` (``n = 0`` is :class:`Bump`)."""

    n: int
    beta: sp.Expr

    def centred(self, var):
        # the bump tilts N(0, v) into N(0, v/(1 + 2βv)) with mass (1 + 2βv)^{−1/2}
        spread = 1 + 2 * self.beta * var
        return gaussian_moment(self.n, sp.Integer(0), var / spread) / sp.sqrt(spread)

    def conditional(self, mu, sigma):
        spread = 1 + 2 * self.beta * sigma**2
        return Bump(self.beta).conditional(mu, sigma) * gaussian_moment(self.n, mu / spread, sigma**2 / spread)

    def derivative(self):
        return [
            (sp.Integer(self.n), _mono_bump(self.n - 1, self.beta)),
            (-2 * self.beta, MonoBump(self.n + 1, self.beta)),
        ]


@dataclasses.dataclass(frozen=True)
class MonoErf(Atom):
    """``x^n erf(αx)``, ``n ≥ 1`` (``n = 0`` is :class:`Erf`); GELU is ``x/2 + x erf(x/√2)/2``."""

    n: int
    alpha: sp.Expr

    def centred(self, var):
        # Stein: E[w · w^{n−1} erf(αw)] = v E[(n − 1) w^{n−2} erf(αw) + (2α/√π) w^{n−1} e^{−α²w²}]
        if self.n % 2 == 0:
            return sp.Integer(0)
        lower = _mono_erf(self.n - 2, self.alpha).centred(var) * (self.n - 1) if self.n >= 2 else 0
        bump = _mono_bump(self.n - 1, self.alpha**2).centred(var)
        return var * (lower + 2 * self.alpha / sp.sqrt(sp.pi) * bump)

    def conditional(self, mu, sigma):
        # Stein, X = μ + σZ: E[X^n e(X)] = μ E[X^{n−1} e(X)] + σ² E[(X^{n−1} e(X))'], e = erf(α·)
        moments = [Erf(self.alpha).conditional(mu, sigma)]
        for k in range(1, self.n + 1):
            lower = (k - 1) * moments[k - 2] if k >= 2 else 0
            bump = _mono_bump(k - 1, self.alpha**2).conditional(mu, sigma)
            moments.append(mu * moments[k - 1] + sigma**2 * (lower + 2 * self.alpha / sp.sqrt(sp.pi) * bump))
        return moments[self.n]

    def derivative(self):
        return [
            (sp.Integer(self.n), _mono_erf(self.n - 1, self.alpha)),
            (2 * self.alpha / sp.sqrt(sp.pi), MonoBump(self.n, self.alpha**2)),
        ]


@dataclasses.dataclass(frozen=True)
class ErfBump(Atom):
    """``erf(αx) e^{−βx²}``, ``β > 0`` (a Gaussian tilt of :class:`Erf`)."""

    alpha: sp.Expr
    beta: sp.Expr

    def centred(self, var):
        return sp.Integer(0)

    def conditional(self, mu, sigma):
        spread = 1 + 2 * self.beta * sigma**2
        return Bump(self.beta).conditional(mu, sigma) * Erf(self.alpha).conditional(
            mu / spread, sigma / sp.sqrt(spread)
        )

    # derivative(): −2βx erf(αx) e^{−βx²} is not a sum of atoms; pairs tilt instead (``_erf_bump_any``)


# -- canonical form --------------------------------------------------------------------------------


def _linear_coefficient(arg: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """``α`` when ``arg = α x`` exactly, else raise."""
    alpha = sp.simplify(arg / x)
    if alpha.has(x) or not alpha.is_number or alpha == 0:
        raise NotClosedForm(f"{arg} is not a multiple of {x}")
    return alpha


def _to_heaviside_form(expr: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """Max/Min/Abs/sign/normal-cdf (also ``NormalCdf``) rewritten with Heaviside and erf; trig and
    ``expm1`` with exponentials."""

    def max_rule(e):
        if len(e.args) != 2:
            raise NotClosedForm(f"{e}: only two-argument Max/Min")
        p, q = e.args
        step = sp.Heaviside(p - q) if isinstance(e, sp.Max) else sp.Heaviside(q - p)
        return q + (p - q) * step

    out = expr.replace(lambda e: isinstance(e, (sp.Max, sp.Min)), max_rule)
    out = out.replace(
        lambda e: isinstance(e, sp.Abs), lambda e: e.args[0] * (sp.Heaviside(e.args[0]) - sp.Heaviside(-e.args[0]))
    )
    out = out.replace(lambda e: isinstance(e, sp.sign), lambda e: sp.Heaviside(e.args[0]) - sp.Heaviside(-e.args[0]))
    out = out.replace(lambda e: isinstance(e, sp.erfc), lambda e: 1 - sp.erf(e.args[0]))
    out = out.replace(lambda e: isinstance(e, NormalCdf), lambda e: (1 + sp.erf(e.args[0] / sp.sqrt(2))) / 2)
    out = out.replace(lambda e: isinstance(e, expm1), lambda e: sp.exp(e.args[0]) - 1)
    out = out.rewrite(sp.cos, sp.exp).rewrite(sp.sin, sp.exp).rewrite(sp.cosh, sp.exp).rewrite(sp.sinh, sp.exp)
    return out


def _normalise_heaviside(e: sp.Heaviside, x: sp.Symbol) -> sp.Expr:
    arg = e.args[0]
    if not (arg.is_polynomial(x) and sp.degree(arg, x) <= 1):
        return _monotone_step(arg, x)
    alpha = _linear_coefficient(arg, x)
    if not alpha.is_real:
        raise NotClosedForm(f"{e}: complex argument")
    return sp.Heaviside(x) if alpha > 0 else sp.Heaviside(-x)


def _monotone_step(arg: sp.Expr, x: sp.Symbol) -> sp.Expr:
    """``H(h(x))`` as ``H(±x)`` when ``h``'s only real zero is 0 and it changes sign there
    (``H(e^x − 1) = H(x)``, from ``min(e^x − 1, 0)``); else raise :class:`NotClosedForm`."""
    try:
        zeros = sp.solveset(arg, x, domain=sp.S.Reals)
    except (NotImplementedError, ValueError, TypeError):
        zeros = None
    if zeros != sp.FiniteSet(0):
        raise NotClosedForm(f"Heaviside({arg}): not a step at 0")
    left, right = (sp.sign(sp.N(arg.subs(x, v))) for v in (-1, 1))
    if left == -1 and right == 1:
        return sp.Heaviside(x)
    if left == 1 and right == -1:
        return sp.Heaviside(-x)
    raise NotClosedForm(f"Heaviside({arg}): does not change sign at 0")


def canonicalise(expr: sp.Expr, x: sp.Symbol = ETA) -> list[tuple[sp.Expr, Atom]]:
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
    # e^{sx} beside e^{sx} H(±x) is split into both half-lines: e^{sx} − e^{sx} H(x) would cancel
    # (inf − inf where e^{sx} overflows) where e^{sx} H(−x) is small
    for s in {atom.s for atom in merged if isinstance(atom, ExpStep)}:
        whole = merged.pop(CExp(s), 0)
        for t in (1, -1):
            merged[ExpStep(s, t)] = merged.get(ExpStep(s, t), 0) + whole
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
    """One product term as atoms: ``x^n H(±x)``, ``e^{sx}``, ``e^{−βx²}`` or ``erf(αx)`` times a constant."""
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
    zero = sp.Integer(0)
    quad = poly.coeff_monomial(x**2) if poly is not None else zero
    lin = poly.coeff_monomial(x) if poly is not None else zero
    const = poly.coeff_monomial(1) if poly is not None else zero
    coef *= sp.exp(const)
    if quad != 0:
        beta = -quad
        if not (beta.is_real and beta > 0):
            raise NoExpectationError(
                f"exp({exponent}) grows like exp(x²): its Gaussian expectation exists only for "
                "small variances; dekc does not take it"
            )
    # the products with atoms of their own: x^n erf(αx), x^n e^{−βx²}, erf(αx) e^{−βx²}
    if len(erfs) == 1 and not signs and lin == 0:
        if quad == 0:
            return [(coef, _mono_erf(power, erfs[0]))]
        if power == 0:
            return [(coef, ErfBump(erfs[0], -quad))]
    if quad != 0 and not erfs and not signs and lin == 0:
        return [(coef, _mono_bump(power, -quad))]
    if len(signs) == 1 and lin != 0 and lin.is_real and quad == 0 and not erfs and power == 0:
        return [(coef, ExpStep(lin, signs.pop()))]
    kinds = sum([bool(erfs), quad != 0, lin != 0, bool(signs) or power > 0])
    if kinds > 1 or len(erfs) > 1:
        raise NotClosedForm(f"{term}: products of different kinds of factor have no closed-form rule")
    if lin != 0:
        if not (lin.is_real or (sp.re(lin) == 0)):
            raise NotClosedForm(f"exp({exponent}): complex growth rate")
        return [(coef, CExp(lin))]
    if signs:
        return [(coef, Mono(power, signs.pop()))]
    return [(coef, Mono(power, 1)), (coef, Mono(power, -1))]


# -- pair rules ------------------------------------------------------------------------------------

PairRule = Callable[..., sp.Expr]  # (φ, ψ) -> E[φ(u) ψ(v)]
#: ``(type of φ, type of ψ) → rule(φ, ψ)`` giving ``E[φ(u) ψ(v)]`` in ``a, b, c`` (and ``ρ``)
PAIR_RULES: dict[tuple[type, type], PairRule] = {}


def pair_rule(*pairs: tuple[type, type]) -> Callable[[PairRule], PairRule]:
    """Register the decorated function as the rule for each ``(type of φ, type of ψ)`` in ``pairs``.

    A rule for ``(P, Q)`` also serves ``(Q, P)`` (with ``a`` and ``b`` exchanged) unless that
    pair has a rule of its own."""

    def register(rule: PairRule) -> PairRule:
        for key in pairs:
            if key in PAIR_RULES:
                raise ValueError(f"a pair rule for {key[0].__name__} x {key[1].__name__} already exists")
            PAIR_RULES[key] = rule
        return rule

    return register


def swap_variances(expr: sp.Expr) -> sp.Expr:
    """``expr`` with ``a`` and ``b`` exchanged: ``E[ψ(u) φ(v)]`` from ``E[φ(u) ψ(v)]``."""
    return expr.subs({A: B, B: A}, simultaneous=True)


@functools.cache
def atom_pair(phi: Atom, psi: Atom) -> sp.Expr:
    """``E[φ(u) ψ(v)]`` as an expression in ``a, b, c`` (and ``ρ`` for Mono pairs)."""
    rule = PAIR_RULES.get((type(phi), type(psi)))
    if rule is not None:
        return rule(phi, psi)
    rule = PAIR_RULES.get((type(psi), type(phi)))
    if rule is not None:
        return swap_variances(rule(psi, phi))
    raise NotClosedForm(f"no closed-form rule for {phi} x {psi}")


def _derivative_of_mono(m: int, k: int):
    """``(x^m H(x))^{(k)}``: ``('mono', coef, power)`` or ``('delta', coef)`` (k ≤ m + 1)."""
    if k <= m:
        return ("mono", sp.factorial(m) / sp.factorial(m - k), m - k)
    return ("delta", sp.factorial(m))


@functools.cache
def relu_power_kernel(m: int, n: int) -> sp.Expr:
    """``J_mn(ρ) = E[z₁^m H(z₁) z₂^n H(z₂)]`` for unit variances and correlation ``ρ``, by Price's theorem."""
    if m > n:
        return relu_power_kernel(n, m)
    p = m  # min(m, n)
    series = sum(
        _derivative_of_mono(m, k)[1]
        * half_moment(m - k)
        * _derivative_of_mono(n, k)[1]
        * half_moment(n - k)
        * RHO**k
        / sp.factorial(k)
        for k in range(p + 1)
    )
    f_top, g_top = _derivative_of_mono(m, p + 1), _derivative_of_mono(n, p + 1)
    if g_top[0] == "delta":  # m = n: E[δ(u) δ(v)] = 1/(2π√(1 − t²))
        base = f_top[1] * g_top[1] / (2 * sp.pi * sp.sqrt(1 - _T**2))
    else:  # E[δ(u) w^j H(w)], w | u = 0 ~ N(0, 1 − t²)
        j = g_top[2]
        base = f_top[1] * g_top[1] / sp.sqrt(2 * sp.pi) * (1 - _T**2) ** sp.Rational(j, 2) * half_moment(j)
    integral = sp.integrate((RHO - _T) ** p / sp.factorial(p) * base, (_T, 0, RHO))
    return sp.simplify(series + integral)


@pair_rule((Mono, Mono))
def _mono_mono(phi: Mono, psi: Mono) -> sp.Expr:
    """Scaling and Price's theorem: ``a^{m/2} b^{n/2} J_mn(±ρ)``."""
    flip = phi.s * psi.s
    sign = sp.Integer(phi.s) ** phi.n * sp.Integer(psi.s) ** psi.n
    return (
        sign
        * A ** sp.Rational(phi.n, 2)
        * B ** sp.Rational(psi.n, 2)
        * relu_power_kernel(phi.n, psi.n).subs(RHO, flip * RHO)
    )


@pair_rule(*((Bump, kind) for kind in (Bump, Mono, CExp, Erf, Delta, MonoErf, MonoBump, ErfBump)))
def _bump_any(phi: Bump, psi: Atom) -> sp.Expr:
    """The Gaussian factor tilts the law: ``(1 + 2βa)^{−1/2} E[ψ(w)]``, ``w ~ N(0, b − 2βc²/(1 + 2βa))``."""
    var = B - 2 * phi.beta * C**2 / (1 + 2 * phi.beta * A)
    return psi.centred(var) / sp.sqrt(1 + 2 * phi.beta * A)


@pair_rule((CExp, CExp))
def _exp_exp(phi: CExp, psi: CExp) -> sp.Expr:
    """The moment generating function ``exp((s²a + 2stc + t²b)/2)``."""
    return sp.exp((phi.s**2 * A + 2 * phi.s * psi.s * C + psi.s**2 * B) / 2)


@pair_rule((CExp, Mono))
def _exp_mono(phi: CExp, psi: Mono) -> sp.Expr:
    """Tilting shifts the mean (real ``s``): ``e^{s²a/2} E[(w + sc)^n H(w + sc)]``, ``w ~ N(0, b)``."""
    if not phi.s.is_real:
        raise NotClosedForm(f"no closed-form rule for {phi} x {psi}")
    mu, sigma = psi.s * phi.s * C, sp.sqrt(B)
    return sp.exp(phi.s**2 * A / 2) * sp.Integer(psi.s) ** psi.n * shifted_mono(psi.n, mu, sigma)


@pair_rule((Erf, Mono), (Erf, CExp), (Erf, Erf))
def _erf_any(phi: Erf, psi: Atom) -> sp.Expr:
    """One Price step from the independent case (``E[erf(αu)] = 0``):
    ``∫_0^c (2α/√π) E[e^{−α²u²} ψ'(v)]|_t dt``; the integrand is a Bump pair."""
    integrand = sum(coef * atom_pair(Bump(phi.alpha**2), d) for coef, d in psi.derivative())
    integrand = 2 * phi.alpha / sp.sqrt(sp.pi) * integrand
    return _integrate_even_from_zero(integrand, phi, psi)


@pair_rule((Erf, Delta), (MonoErf, Delta), (MonoBump, Delta), (ErfBump, Delta))
def _any_delta(phi: Atom, psi: Delta) -> sp.Expr:
    """The base case of a Price or Stein step: ``E[φ(u) δ(v)] = (2πb)^{−1/2} E[φ(w)]``,
    ``w ~ N(0, a − c²/b) = N(0, a(1 − ρ²))`` (``u`` given ``v = 0``)."""
    return phi.centred(A * (1 - RHO**2)) / sp.sqrt(2 * sp.pi * B)


def _derivative_pairs(phi: Atom, psi: Atom) -> sp.Expr:
    """``E[φ(u) ψ'(v)]``."""
    return sum((coef * atom_pair(phi, d) for coef, d in psi.derivative()), sp.Integer(0))


@pair_rule(*((MonoErf, kind) for kind in (Mono, CExp, Erf, Bump, MonoErf, MonoBump)))
def _mono_erf_any(phi: MonoErf, psi: Atom) -> sp.Expr:
    """Stein's lemma ``E[u h(u, v)] = a E[∂_u h] + c E[∂_v h]`` with ``h = u^{n−1} erf(αu) ψ(v)``:

    ``E[u^n erf(αu) ψ(v)] = a ((n − 1) E[u^{n−2} erf(αu) ψ(v)] + (2α/√π) E[u^{n−1} e^{−α²u²} ψ(v)])
    + c E[u^{n−1} erf(αu) ψ'(v)]``; each term lowers the power of ``u``."""
    n, alpha = phi.n, phi.alpha
    out = A * 2 * alpha / sp.sqrt(sp.pi) * atom_pair(_mono_bump(n - 1, alpha**2), psi)
    if n >= 2:
        out += A * (n - 1) * atom_pair(_mono_erf(n - 2, alpha), psi)
    return out + C * _derivative_pairs(_mono_erf(n - 1, alpha), psi)


@pair_rule(*((MonoBump, kind) for kind in (Mono, CExp, Erf, Bump, MonoErf, MonoBump)))
def _mono_bump_any(phi: MonoBump, psi: Atom) -> sp.Expr:
    """Stein's lemma with ``h = u^{k−1} e^{−βu²} ψ(v)``; the term ``−2βa E[u^k e^{−βu²} ψ(v)]`` of
    ``a E[∂_u h]`` moves to the left:

    ``(1 + 2βa) E[u^k e^{−βu²} ψ(v)] = a (k − 1) E[u^{k−2} e^{−βu²} ψ(v)] + c E[u^{k−1} e^{−βu²} ψ'(v)]``."""
    k, beta = phi.n, phi.beta
    out = C * _derivative_pairs(_mono_bump(k - 1, beta), psi)
    if k >= 2:
        out += A * (k - 1) * atom_pair(_mono_bump(k - 2, beta), psi)
    return out / (1 + 2 * beta * A)


@functools.cache
def _power_pair(n: int, psi: Atom) -> sp.Expr:
    """``E[u^n ψ(v)]`` by Stein's lemma: ``(n − 1) a E[u^{n−2} ψ(v)] + c E[u^{n−1} ψ'(v)]``, from
    ``E[ψ(v)]``."""
    if n == 0:
        return psi.centred(B)
    out = C * sum((coef * _power_pair(n - 1, d) for coef, d in psi.derivative()), sp.Integer(0))
    if n >= 2:
        out += (n - 1) * A * _power_pair(n - 2, psi)
    return out


def _tilted(expr: sp.Expr, beta: sp.Expr, delta: sp.Expr) -> sp.Expr:
    """``E[φ(u) e^{−βu²} ψ(v) e^{−δv²}]`` from ``expr = E[φ(u) ψ(v)]``.

    The bumps multiply the density by a Gaussian factor: the tilted law is Gaussian with
    ``Σ'^{−1} = Σ^{−1} + diag(2β, 2δ)`` and mass ``det(I + Σ diag(2β, 2δ))^{−1/2}``. With
    ``D = 1 + 2βa + 2δb + 4βδ(ab − c²)`` and ``ab − c² = ab(1 − ρ²)``,

    ``a' = (a + 2δ(ab − c²))/D,  b' = (b + 2β(ab − c²))/D,  c' = c/D,
    ρ' = ρ/√((1 + 2δb(1 − ρ²))(1 + 2βa(1 − ρ²)))``,

    written with ``ρ`` so that full correlation ``|ρ| = 1`` stays exact (``ρ' = ρ``)."""
    gap = 1 - RHO**2
    det = 1 + 2 * beta * A + 2 * delta * B + 4 * beta * delta * A * B * gap
    new = {
        A: (A + 2 * delta * A * B * gap) / det,
        B: (B + 2 * beta * A * B * gap) / det,
        C: C / det,
        RHO: RHO / sp.sqrt((1 + 2 * delta * B * gap) * (1 + 2 * beta * A * gap)),
    }
    return expr.subs(new, simultaneous=True) / sp.sqrt(det)


@pair_rule(*((ErfBump, kind) for kind in (Mono, CExp, Erf, MonoErf, MonoBump, ErfBump)))
def _erf_bump_any(phi: ErfBump, psi: Atom) -> sp.Expr:
    """Gaussian tilting: the bumps of ``erf(αu) e^{−βu²}`` (and of ``ψ``, when it has one) are
    absorbed into the law (:func:`_tilted`), which leaves an ``Erf`` pair (the arcsine form for
    an ``ErfBump`` partner) or a power pair ``E[erf(αu) v^n]`` for a ``MonoBump`` partner."""
    core = Erf(phi.alpha)
    if isinstance(psi, ErfBump):
        return _tilted(atom_pair(core, Erf(psi.alpha)), phi.beta, psi.beta)
    if isinstance(psi, MonoBump):
        return _tilted(swap_variances(_power_pair(psi.n, core)), phi.beta, psi.beta)
    return _tilted(atom_pair(core, psi), phi.beta, sp.Integer(0))


def _integrate_even_from_zero(integrand: sp.Expr, phi, psi) -> sp.Expr:
    """``∫_0^c h(t) dt`` for an integrand even in ``t`` (a tilted law depends on ``t²`` only).

    sympy's antiderivatives carry branches for ``t² > ab``-type conditions that cannot hold for
    a covariance (``|t| ≤ √(ab)``); integrating for ``t, c > 0`` removes them, and the odd result
    extends to negative ``c``.
    """
    t_pos, c_pos = sp.Symbol("t", positive=True), sp.Symbol("c", positive=True)
    integrand = integrand.subs(C, t_pos)
    primitive = _arcsine_primitive(integrand, t_pos)
    if primitive is None:
        primitive = sp.integrate(integrand, t_pos, conds="none")
        primitive = primitive.replace(lambda e: isinstance(e, sp.Piecewise), lambda e: e.args[-1][0])
    if primitive.has(sp.Integral, sp.Piecewise, sp.I):
        raise NotClosedForm(f"sympy cannot integrate the Price step of {phi} x {psi}")
    at_zero = sp.limit(primitive, t_pos, 0, "+")
    return sp.simplify(primitive.subs(t_pos, c_pos) - at_zero).subs(c_pos, C)


def _arcsine_primitive(integrand: sp.Expr, t: sp.Symbol) -> sp.Expr | None:
    """``(k/√Q) asin(√Q t/√P)`` when ``integrand = k (P − Q t²)^(−1/2)`` with ``k``, ``P``, ``Q``
    free of ``t`` (the Price step of an ``Erf`` against ``Erf`` or a half-line step: a Bump pair
    is such a power of a quadratic), else ``None``. sympy finds the same antiderivative in
    seconds; this reads it off the form."""
    factor, rest = integrand.as_independent(t, as_Add=False)
    if not (isinstance(rest, sp.Pow) and rest.exp == sp.Rational(-1, 2)):
        return None
    base = sp.expand(rest.base)
    if not base.is_polynomial(t):
        return None
    poly = sp.Poly(base, t)
    if poly.degree() != 2 or poly.coeff_monomial(t) != 0:
        return None
    P, Q = poly.coeff_monomial(1), -poly.coeff_monomial(t**2)
    if Q.is_positive is not True and not (Q.is_number and Q > 0):
        return None
    return factor / sp.sqrt(Q) * sp.asin(sp.sqrt(Q) * t / sp.sqrt(P))


# -- whole functions -------------------------------------------------------------------------------


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


@dataclasses.dataclass(frozen=True)
class ClosedForm:
    """A closed-form pair expectation: ``pair`` in ``a, b, c`` and ``ρ = c/√(ab)``, ``one_point``
    (``E[f(u) g(u)]``, ``u ~ N(0, a)``) in ``a``."""

    pair: sp.Expr
    one_point: sp.Expr

    def dc(self, inv_sab: sp.Expr = None) -> sp.Expr:
        """``∂K/∂c = ∂K/∂c|_ρ + ∂K/∂ρ · inv_sab``, ``inv_sab = 1/√(ab)`` by default."""
        inv_sab = 1 / sp.sqrt(A * B) if inv_sab is None else inv_sab
        return sp.diff(self.pair, C) + sp.diff(self.pair, RHO) * inv_sab


@functools.lru_cache(maxsize=256)
def closed_form(f: sp.Expr, g: sp.Expr) -> ClosedForm:
    """``E[f(u) g(v)]`` in closed form, or raise :class:`NotClosedForm`."""
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
    return ClosedForm(pair, one_point)


def conditional_expectation(g: sp.Expr) -> sp.Expr:
    """``E[g(μ + σZ)]`` in the symbols :data:`MU` and :data:`SIGMA`; raises :class:`NotClosedForm`."""
    total = sp.Integer(0)
    for coef, atom in canonicalise(g):
        total += coef * atom.conditional(MU, SIGMA)
    if total.has(sp.I):
        total = sp.simplify(sp.expand_complex(total))
        if total.has(sp.I):
            raise NotClosedForm("complex conditional expectation")
    return total


def with_correlation(expr: sp.Expr) -> sp.Expr:
    """Display form: ``ρ`` replaced by ``c/√(ab)``."""
    return expr.subs(RHO, C / sp.sqrt(A * B))

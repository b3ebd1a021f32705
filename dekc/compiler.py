"""``compile_kernel``: family → link → expectations → generated module → :class:`dekc.Kernel`.

The module text comes from :func:`dekc.codegen.kernel_module` and is stored in the sealed cache
(:mod:`dekc.cache`) under a hash of every input; a cached kernel loads without deriving anything.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy as sp

from . import cache as kernel_cache
from . import codegen
from .budget import limited
from .errors import CacheError, InputError
from .expectations import check_tolerance, derived_expectation
from .expressions import as_eta_expression, parse_number
from .kernel import Kernel
from .links import Link
from .links import link as derive_link
from .registry import Family, convexity_deferred
from .registry import family as lookup_family


def build_source(link: Link, *, tol: float, digest: str, metadata: dict) -> str:
    """Derive the expectations of ``(σ, σ)``, ``(σ, ρ)``, ``(ρ, ρ)`` for ``link`` and return the
    sealed module text."""
    functions = {"sigma": link.sigma, "rho": link.rho}
    expectations = {
        (f, g): derived_expectation(functions[f], functions[g], tol=tol).emitted() for f, g in codegen.PAIRS
    }
    fam = link.family
    title = (
        f"Deep equilibrium kernel for the family '{fam.name}': A({fam.theta}) = {fam.A} on {fam.domain_text}"
        + (f", kappa = {link.kappa}" if link.kappa is not None else "")
        + "."
    )
    return codegen.kernel_module(
        title=title,
        sigma=link.sigma,
        rho=link.rho,
        R=link.R,
        digest=digest,
        expectations=expectations,
        metadata=metadata,
    )


def _link_factory(fam: Family, route: str, spec: sp.Expr, kappa) -> Callable[[], Link]:
    """Derives the kernel's link when it is first asked for (a kernel loaded from its text has none)."""

    def make_link() -> Link:
        return derive_link(fam, **{route: spec}, kappa=kappa)

    return make_link


def compile_kernel(
    family: str,
    reparam: str | sp.Expr | None = None,
    activation: str | sp.Expr | None = None,
    *,
    kappa: str | float | None = None,
    tol: float = 1e-9,
    cache: bool = True,
    **parameters: str | float,
) -> Kernel:
    """Compile the DEKer for ``family`` with a link ``reparam=`` or an ``activation=``.

    Runs link -> expectations -> code generation and loads the generated module. The module is
    cached on disk (``$DEKC_CACHE_DIR``, else ``$XDG_CACHE_HOME/dekc``, else ``~/.cache/dekc``)
    under a hash of the inputs; a cached kernel loads without deriving anything. ``tol`` is the
    accuracy asked of quadrature-backed expectations. ``cache=False`` regenerates and overwrites
    the cache file. ``parameters`` fix the family's own parameters (e.g. ``k=2``).
    """
    with convexity_deferred():  # a sealed cached kernel below shows its family passed
        fam = lookup_family(family, **parameters)
    if (reparam is None) == (activation is None):
        derive_link(fam, reparam, activation)  # raises the link stage's error
    tol = check_tolerance(tol)
    if not isinstance(cache, bool):
        raise InputError(f"cache must be True or False, got {cache!r}")
    kappa = None if kappa is None else parse_number(kappa, what="kappa")
    route, spec = ("reparam", reparam) if reparam is not None else ("activation", activation)
    spec_expr = as_eta_expression(spec, what=route)
    metadata = {
        "family": fam.name,
        "route": route,
        "spec": str(spec_expr),
        "kappa": None if kappa is None else str(kappa),
        "parameters": {k: str(v) for k, v in fam.parameters.items()},
    }
    digest = kernel_cache.input_hash(
        {**metadata, "A": str(fam.A), "domain": fam.domain_text, "theta": str(fam.theta), "tol": tol}
    )
    path = kernel_cache.kernel_path(fam.name, digest)

    make_link = _link_factory(fam, route, spec_expr, kappa)

    the_link = None
    text = kernel_cache.read_cached(path, digest) if cache else None
    if text is None:
        fam.check_convexity()
        the_link = make_link()
        with limited(f"compiling the kernel of family '{fam.name}' with {route} = {str(spec_expr)[:80]}"):
            text = build_source(the_link, tol=tol, digest=digest, metadata=metadata)
        path = kernel_cache.store(path, text)
    module = codegen.load_module(text, f"dekc_kernel_{digest[:16]}_{codegen.text_digest(text)[:8]}", str(path))
    return Kernel(module, path, text, fam, make_link, the_link, rebuild=(kernel_from_text, (text, digest, fam)))


#: kernels rebuilt in this process by :func:`kernel_from_text`, by the SHA-256 of their text
_REBUILT: dict[str, Kernel] = {}


def kernel_from_text(text: str, digest: str, family: Family) -> Kernel:
    """The :class:`Kernel` of a generated module ``text`` for the input hash ``digest``: how a
    pickled kernel is rebuilt (a cluster's worker receives the module text in the task, not a
    path to a shared cache). The text runs only if its seal verifies (it is exactly what dekc
    wrote for ``digest``); each text is loaded once per process."""
    if not isinstance(text, str) or not isinstance(digest, str) or not codegen.is_complete(text, digest):
        raise CacheError(
            "the kernel module text received does not verify (it is not exactly what dekc generated for its "
            "input hash): it was changed or truncated on the way; send the Kernel again"
        )
    key = codegen.text_digest(text)
    if key in _REBUILT:
        return _REBUILT[key]
    module = codegen.load_module(text, f"dekc_kernel_{digest[:16]}_{key[:8]}")
    meta = module.METADATA
    route, spec = meta["route"], as_eta_expression(meta["spec"], what=meta["route"])
    kappa = None if meta["kappa"] is None else parse_number(meta["kappa"], what="kappa")

    kernel = Kernel(
        module,
        kernel_cache.kernel_path(family.name, digest),
        text,
        family,
        _link_factory(family, route, spec, kappa),
        rebuild=(kernel_from_text, (text, digest, family)),
    )
    _REBUILT[key] = kernel
    return kernel

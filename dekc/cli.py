"""The ``dekc`` command line: ``families`` and ``link`` (more stages arrive as they are built)."""

from __future__ import annotations

import argparse
import sys
import warnings

from . import __version__
from .errors import DekcError, DekcWarning
from .links import link
from .registry import family, families, register_family


def _parameter(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        number = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"parameter {name!r}: {value!r} is not a number") from None
    return name.strip(), number


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_families(args) -> int:
    rows = [["name", "A(theta)", "Theta", "support", "canonical sigma (R = id)"]]
    for name in families():
        fam = family(name)
        params = ", ".join(f"{k}={v}" for k, v in fam.parameters.items())
        sigma = str(fam.canonical_sigma) if fam.canonical_link_admissible else "n/a (Theta is not the real line)"
        rows.append([name + (f" ({params})" if params else ""), str(fam.A), fam.domain_text, fam.support, sigma])
    print(_table(rows))
    return 0


def cmd_link(args) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DekcWarning)  # the notes are printed with the result
        result = link(args.family, reparam=args.reparam, activation=args.activation,
                      kappa=args.kappa, **dict(args.param))
    print(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dekc", description="Compile deep equilibrium kernels from exponential families.")
    parser.add_argument("--version", action="version", version=f"dekc {__version__}")
    parser.add_argument("--family-file", action="append", default=[], metavar="PATH",
                        help="register a TOML family file before running the command (repeatable)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("families", help="list the registered exponential families")
    p.set_defaults(run=cmd_families)

    p = sub.add_parser("link", help="derive sigma, rho and R for a family")
    p.add_argument("family", help="a registered family name")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--reparam", metavar="R", help="link reparameterisation R(eta): a shorthand or expression (write --reparam=-exp(-eta) when it starts with a minus)")
    how.add_argument("--activation", metavar="S", help="target activation sigma(eta): a shorthand or expression")
    p.add_argument("--param", action="append", default=[], type=_parameter, metavar="NAME=VALUE",
                   help="family parameter value, e.g. --param k=2 (repeatable)")
    p.add_argument("--kappa", type=float, default=None, help="integration constant for --activation")
    p.set_defaults(run=cmd_link)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for path in args.family_file:
            register_family(path)
        return args.run(args)
    except DekcError as exc:
        print(f"dekc: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

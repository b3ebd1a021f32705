"""The ``dekc`` command line: ``families``, ``link``, ``compile``, ``verify`` and ``gram``."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import __version__, validate
from .compiler import compile_kernel
from .errors import DekcError, DekcWarning, InputError
from .io import atomic_output
from .links import link
from .registry import families, family, register_family
from .verification import verify


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
        result = link(
            args.family, reparam=args.reparam, activation=args.activation, kappa=args.kappa, **dict(args.param)
        )
    print(result)
    return 0


def _compile(args):
    """The kernel named by the link options; DekcWarnings are printed as notes on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DekcWarning)
        ker = compile_kernel(
            args.family, reparam=args.reparam, activation=args.activation, kappa=args.kappa, **dict(args.param)
        )
    for warning in caught:
        if issubclass(warning.category, DekcWarning):
            print(f"dekc: note: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    return ker


def _describe_methods(ker) -> list[list[str]]:
    rows = []
    for pair, method in ker.methods.items():
        bound = ker.error_bounds.get(pair)
        detail = f" (estimated error {bound:.1e} of the Cauchy-Schwarz scale)" if method != "closed-form" else ""
        rows.append([f"  {pair}", method + detail])
    return rows


def cmd_compile(args) -> int:
    ker = _compile(args)
    meta = ker.module.METADATA
    rows = [
        ["kernel", f"{ker.family_name}, {meta['route']} = {meta['spec']}"],
        ["cache", str(ker.path)],
        ["methods", ""],
        *_describe_methods(ker),
    ]
    if args.output is not None:
        try:
            with atomic_output(args.output) as handle:
                handle.write(ker.source.encode("utf-8"))
        except OSError as exc:
            raise DekcError(f"cannot write the kernel module to {args.output}: {exc.strerror or exc}") from None
        rows.append(["wrote", f"{args.output} (standalone: it imports only jax)"])
    width = max(len(row[0]) for row in rows)
    print("\n".join(f"{label.ljust(width)}  {value}".rstrip() for label, value in rows))
    return 0


def cmd_verify(args) -> int:
    ker = _compile(args)
    report = verify(
        ker,
        dps=args.dps,
        seed=args.seed,
        points=args.points,
        fixed_points=args.fixed_points,
        lam=args.lam,
        workers=args.workers,
    )
    print(report)
    return 0 if report.ok else 1


def _positive_float(text: str) -> float:
    try:
        return validate.real(float(text), "the value", positive=True)
    except (ValueError, InputError):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}") from None


def _block_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 64 <= value <= 1 << 16:
        raise argparse.ArgumentTypeError(f"expected a whole number of rows from 64 to 65536, got {text!r}")
    return value


def _steps(text: str):
    """``fixed`` (the fixed point), ``T`` or ``T1,T2,...`` (a stack of T-step kernels)."""
    if text.strip().lower() in ("fixed", "none", "inf"):
        return None
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'fixed', a whole number or a comma-separated list, got {text!r}"
        ) from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"steps must be non-negative, got {text}")
    return values[0] if len(values) == 1 else tuple(values)


def _gram_to_zarr(args, ker, X, Y) -> int:
    from .blocks import DEFAULT_BLOCK, gram_to_zarr

    start = time.perf_counter()
    array = gram_to_zarr(
        ker,
        X,
        Y,
        out=args.output,
        block=args.block or DEFAULT_BLOCK,
        client=args.scheduler,
        progress=not args.quiet,
        overwrite=args.overwrite,
        lam=args.lam,
        feature_scale=args.feature_scale,
        input_scale=args.input_scale,
        bias=args.bias,
        features=args.features,
        steps=args.steps,
        psi0=args.psi0,
        diagonal=args.diagonal,
    )
    run = array.attrs["dekc_runs"][-1]
    where = f"on {args.scheduler}" if args.scheduler else "here"
    print(
        f"wrote {args.output}: {' x '.join(map(str, array.shape))} float64 zarr array in blocks of {array.chunks[-1]} "
        f"({run['computed_blocks']} computed {where}, {run['reused_blocks']} kept from an earlier run) "
        f"in {time.perf_counter() - start:.2f} s"
    )
    return 0


def cmd_gram(args) -> int:
    from .io import check_delimiter, read_inputs

    check_delimiter(args.delimiter)
    X = read_inputs(args.data, delimiter=args.delimiter)
    Y = None if args.y is None else read_inputs(args.y, delimiter=args.delimiter)
    if Y is not None and Y.shape[1] != X.shape[1]:
        raise DekcError(f"{args.data} has {X.shape[1]} columns and {args.y} has {Y.shape[1]}; they must match")
    suffix = args.output.suffix.lower()
    if suffix not in (".npy", ".zarr"):
        raise DekcError(
            f"the output {args.output} must be a .npy file (numpy.save format) or a .zarr folder (written in blocks)"
        )
    if suffix == ".npy" and (args.scheduler or args.block or args.overwrite):
        raise DekcError("--block, --scheduler and --overwrite apply to a .zarr output (written in blocks)")
    if not args.output.parent.is_dir():
        raise DekcError(f"cannot write {args.output}: the folder {args.output.parent} does not exist")
    ker = _compile(args)
    if suffix == ".zarr":
        return _gram_to_zarr(args, ker, X, Y)
    start = time.perf_counter()
    K = ker.gram(
        X,
        Y,
        lam=args.lam,
        feature_scale=args.feature_scale,
        input_scale=args.input_scale,
        bias=args.bias,
        features=args.features,
        steps=args.steps,
        psi0=args.psi0,
        diagonal=args.diagonal,
        progress=not args.quiet,
    )
    elapsed = time.perf_counter() - start
    try:
        with atomic_output(args.output) as handle:  # a crash leaves the old file (or none), never half a one
            np.save(handle, K)
    except OSError as exc:
        raise DekcError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    what = (
        "fixed point"
        if args.steps is None
        else f"{args.steps}-step"
        if isinstance(args.steps, int)
        else f"T-step stack {list(args.steps)}"
    )
    print(
        f"wrote {args.output}: {' x '.join(map(str, K.shape))} float64 ({what}, lam = {args.lam:g}) in {elapsed:.2f} s"
    )
    return 0


def _link_options(p) -> None:
    """FAMILY, --reparam | --activation, --param, --kappa (shared by link, compile and verify)."""
    p.add_argument("family", help="a registered family name")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--reparam",
        metavar="R",
        help="link reparameterisation R(eta): a shorthand or expression (write --reparam=-exp(-eta) when it starts with a minus)",
    )
    how.add_argument("--activation", metavar="S", help="target activation sigma(eta): a shorthand or expression")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        type=_parameter,
        metavar="NAME=VALUE",
        help="family parameter value, e.g. --param k=2 (repeatable)",
    )
    p.add_argument(
        "--kappa",
        default=None,
        metavar="NUMBER",
        help="integration constant for --activation: a number or a constant such as 'log(2)'",
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dekc", description="Compile deep equilibrium kernels from exponential families."
    )
    parser.add_argument("--version", action="version", version=f"dekc {__version__}")
    parser.add_argument(
        "--family-file",
        action="append",
        default=[],
        metavar="PATH",
        help="register a TOML family file before running the command (repeatable)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("families", help="list the registered exponential families")
    p.set_defaults(run=cmd_families)

    p = sub.add_parser("link", help="derive sigma, rho and R for a family")
    _link_options(p)
    p.set_defaults(run=cmd_link)

    p = sub.add_parser("compile", help="compile a kernel module (cached) and optionally write it out")
    _link_options(p)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write the generated module here (importable on its own)",
    )
    p.set_defaults(run=cmd_compile)

    p = sub.add_parser("verify", help="check a compiled kernel against the mpmath reference (exit 1 if it fails)")
    _link_options(p)
    p.add_argument("--dps", type=_count, default=30, help="reference precision in digits (default 30, at least 15)")
    p.add_argument("--lam", type=float, default=2.0, help="lambda for the fixed points checked (default 2)")
    p.add_argument(
        "--points",
        type=_count,
        default=3,
        metavar="N",
        help="2-D covariances checked besides the 1-D edge cases: random with a = b, near full "
        "correlation, scales 1e-4 and 1e4, then random (default 3)",
    )
    p.add_argument(
        "--fixed-points",
        type=_count,
        default=2,
        metavar="N",
        help="off-diagonal fixed points checked: collinear, orthogonal, then random (default 2)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random points (default 0)")
    p.add_argument(
        "--workers", type=int, default=None, help="processes for the 2-D reference integrals (default: one per CPU)"
    )
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser(
        "gram", help="compute the DEKer Gram matrix of a data file: .npy in memory, or a .zarr folder in blocks"
    )
    p.add_argument("data", type=Path, help="inputs: .csv/.tsv/.txt (a header line is skipped) or .npy, one row each")
    _link_options(p)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="K.npy|K.zarr",
        help="where to save the Gram matrix: K.npy (computed in memory) or K.zarr (block by block, memory bounded "
        "by the block; a rerun resumes an interrupted one)",
    )
    p.add_argument("--y", type=Path, default=None, metavar="DATA2", help="second inputs: K(DATA, DATA2) instead")
    p.add_argument("--lam", type=_positive_float, default=2.0, help="lambda (default 2)")
    p.add_argument("--feature-scale", type=_positive_float, default=1.0, help="s (default 1)")
    p.add_argument("--input-scale", type=_positive_float, default=1.0, help="input scale (default 1)")
    p.add_argument("--bias", type=float, default=0.0, help="the constant appended to the scaled input (default 0)")
    p.add_argument("--features", default="relu", help="data feature map f: shorthand or expression (default relu)")
    p.add_argument(
        "--steps",
        type=_steps,
        default=None,
        metavar="T",
        help="'fixed' (default: the fixed point), T, or T1,T2,... (a stack of T-step kernels)",
    )
    p.add_argument("--psi0", choices=("input", "constant"), default="input", help="start of the iteration")
    p.add_argument(
        "--diagonal",
        choices=("exact", "limit"),
        default="exact",
        help="identical inputs: the diagonal value (exact) or the continuous part (limit)",
    )
    p.add_argument("--delimiter", default=None, help="text files: the column delimiter (default: by extension)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--block", type=_block_size, default=None, metavar="B", help=".zarr: rows and columns per block (default 4096)"
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help=".zarr: compute the blocks on the Dask cluster of this scheduler (tcp://host:8786); the workers "
        "write to the output path, which they must reach",
    )
    p.add_argument("--overwrite", action="store_true", help=".zarr: replace a store that holds another matrix")
    p.set_defaults(run=cmd_gram)
    return parser


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def main(argv=None) -> int:
    """Run the command line; every error becomes one line on stderr and exit status 2
    (130 for an interruption)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        for path in args.family_file:
            register_family(path)
        return args.run(args)
    except DekcError as exc:
        print(f"dekc: error: {_one_line(exc)}", file=sys.stderr)
    except MemoryError:
        print(
            "dekc: error: out of memory; use fewer inputs or write the Gram matrix in blocks (-o K.zarr)",
            file=sys.stderr,
        )
    except KeyboardInterrupt:
        print("dekc: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else is a defect in dekc: still one line, and what to report
        print(
            f"dekc: error: unexpected {type(exc).__name__}: {_one_line(exc)[:300]} (this is a bug in dekc; "
            "please report it with the command that caused it)",
            file=sys.stderr,
        )
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

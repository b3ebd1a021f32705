"""The on-disk cache of generated kernel modules.

A kernel module is stored under a SHA-256 hash of everything that shapes it (:func:`input_hash`):
the family declaration, the link specification, the tolerance, the dekc version, the module
format and the generator's own code. Files are written atomically (a temporary file in the
cache directory, then ``os.replace``), so processes compiling the same kernel at once each
produce the same complete file and none sees a partial one. A cached text is trusted only when
its seal verifies (:func:`dekc.codegen.is_complete`).

The cache lives in ``$DEKC_CACHE_DIR``, else ``$XDG_CACHE_HOME/dekc``, else ``~/.cache/dekc``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path

from . import codegen
from ._paths import cache_dir
from ._version import __version__
from .errors import CacheError, DekcWarning
from .io import atomic_output

#: the modules whose code shapes a generated module
GENERATOR_MODULES = ("codegen", "printer", "gaussian", "expectations", "quadrature", "links", "expressions")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def cache_dir_fallback() -> Path:
    """A per-user temporary directory, used when the cache directory is not writable."""
    return Path(tempfile.gettempdir()) / f"dekc-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def code_digest(source: str) -> str:
    """SHA-256 of Python ``source`` as code: comments, docstrings and layout do not count."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def generator_digest() -> str:
    """SHA-256 of the code of :data:`GENERATOR_MODULES`, so a changed generator never reuses a
    stale cache file even within one dekc version (editing a comment or a docstring does not
    count: it cannot change the generated code).

    Parsing the modules takes a few hundred milliseconds, so the result is kept in the cache
    directory under the SHA-256 of the modules' exact text; a kept value is used only when it
    is a well-formed digest (anything else is recomputed and replaced)."""
    here = Path(__file__).parent
    texts = [(here / f"{name}.py").read_text(encoding="utf-8") for name in GENERATOR_MODULES]
    exact = hashlib.sha256("\0".join(texts).encode()).hexdigest()
    memo = cache_dir() / f"generator-{exact[:40]}.digest"
    try:
        kept = memo.read_text(encoding="ascii").strip()
        if _HEX64.fullmatch(kept):
            return kept
    except (OSError, UnicodeDecodeError):
        pass
    digest = hashlib.sha256()
    for text in texts:
        digest.update(code_digest(text).encode())
    value = digest.hexdigest()
    try:
        write_atomic(memo, value + "\n")
    except OSError:
        pass  # a read-only cache only costs the parse next time
    return value


def input_hash(fields: dict) -> str:
    """SHA-256 of the compile inputs (family declaration, link spec, tolerances) together with
    the dekc version, the module format and the generator's code."""
    text = json.dumps(
        {**fields, "dekc": __version__, "format": codegen.FORMAT, "generator": generator_digest()},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def kernel_path(family_name: str, digest: str) -> Path:
    """The cache file of a kernel."""
    return cache_dir() / "kernels" / f"{family_name}_{digest[:16]}.py"


def features_path(digest: str) -> Path:
    """The cache file of a feature map's closed-form expectations (:mod:`dekc.moments`)."""
    return cache_dir() / "features" / f"{digest[:16]}.py"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either nothing or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as handle:
        handle.write(text.encode("utf-8"))


def read_cached(path: Path, digest: str) -> str | None:
    """The text of the cache file ``path`` if it is exactly what dekc wrote for ``digest``;
    ``None`` when it is missing, and also (with a warning) when it was changed or corrupted,
    so that the caller regenerates it. A path that is not a regular file raises
    :class:`CacheError` naming what to delete."""
    if not os.path.lexists(path):
        return None
    if path.is_symlink() or not path.is_file():
        raise CacheError(
            f"the kernel cache entry {path} is not a regular file; delete it (rm -r '{path}') or set "
            "DEKC_CACHE_DIR to another directory"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CacheError(
            f"cannot read the kernel cache entry {path} ({exc.strerror or exc}); delete it or set "
            "DEKC_CACHE_DIR to another directory"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and codegen.is_complete(text, digest):
        return text
    warnings.warn(
        f"the cached module {path} was changed or corrupted since dekc wrote it (its SHA-256 does not "
        "match); it is regenerated",
        DekcWarning,
        stacklevel=3,
    )
    return None


def store(path: Path, text: str) -> Path:
    """Write ``text`` to the cache file ``path``, or (with a warning) to the per-user fallback
    directory when ``path`` is not writable; returns where it went."""
    try:
        write_atomic(path, text)
        return path
    except OSError as exc:
        fallback = cache_dir_fallback()
        warnings.warn(
            f"cannot write the kernel cache {path} ({exc}); using {fallback}. Set DEKC_CACHE_DIR to a "
            "writable directory.",
            DekcWarning,
            stacklevel=3,
        )
        path = fallback / path.name
        write_atomic(path, text)
        return path

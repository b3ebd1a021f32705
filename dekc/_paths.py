"""Where dekc keeps its files (no imports from the rest of dekc: :mod:`dekc._jax` needs it first)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where generated kernels are cached (created on demand): ``$DEKC_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/dekc``, else ``~/.cache/dekc``."""
    root = os.environ.get("DEKC_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dekc"


def xla_cache_default() -> Path:
    """The default folder of compiled XLA programs: ``$DEKC_XLA_CACHE_DIR``, else ``xla/`` in
    :func:`cache_dir`."""
    explicit = os.environ.get("DEKC_XLA_CACHE_DIR")
    return Path(explicit) if explicit else cache_dir() / "xla"

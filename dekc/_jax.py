"""JAX with float64 enabled (dekc computes in float64 by default) and its persistent compilation
cache switched on.

XLA compiles every program dekc runs (a kernel's update, the solver's passes, the preparation of
a chunk) the first time a process meets its shapes: 2–6 s before the first Gram matrix. JAX can
keep compiled programs on disk; dekc turns that on at import, unless the cache was configured
already (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) or ``DEKC_XLA_CACHE=0``. The folder is
``$DEKC_XLA_CACHE_DIR``, else ``xla/`` in dekc's kernel cache folder (:func:`dekc.cache.cache_dir`).
Every program is kept (JAX's default keeps only those that took a second to compile), and the
folder is held below 1 GiB, least recently used first. The setting is JAX's, so it also applies
to the caller's own JAX programs in the same process.
"""

import os
from pathlib import Path

import jax

from ._paths import xla_cache_default

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import jax.scipy.special as jsp

__all__ = ["jax", "jnp", "jsp", "xla_cache_dir", "xla_cache_switched_off"]

#: the size at which JAX starts deleting the least recently used programs from the cache
XLA_CACHE_BYTES = 1 << 30


def xla_cache_dir() -> Path | None:
    """Where compiled XLA programs are kept across processes (``None``: not kept)."""
    configured = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]
    return Path(configured) if configured else None


def xla_cache_switched_off() -> bool:
    """Whether ``DEKC_XLA_CACHE`` asks dekc to keep no compiled programs (``0``, ``false``, ``no``,
    ``off``)."""
    return os.environ.get("DEKC_XLA_CACHE", "1").strip().lower() in ("0", "false", "no", "off")


if xla_cache_dir() is None and not xla_cache_switched_off():
    jax.config.update("jax_compilation_cache_dir", str(xla_cache_default()))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", XLA_CACHE_BYTES)

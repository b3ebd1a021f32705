"""JAX with float64 enabled (dekc computes in float64 by default)."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.scipy.special as jsp  # noqa: E402

__all__ = ["jax", "jnp", "jsp"]

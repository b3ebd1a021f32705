"""JAX with float64 enabled (dekc computes in float64 by default)."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import jax.scipy.special as jsp

__all__ = ["jax", "jnp", "jsp"]

"""Type aliases shared across jaxebm.

Public signatures write array shapes in jaxtyping style inside docstrings, e.g.
``Float[Array, "batch n"]``; these aliases keep annotations short without adding a
runtime dependency.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

Array = jax.Array
"""A JAX array."""

ArrayLike = jax.Array | np.ndarray | np.generic | float | int
"""Anything ``jnp.asarray`` accepts as numeric input."""

PRNGKey = jax.Array
"""A PRNG key, from ``jax.random.key`` (typed) or ``jax.random.PRNGKey`` (raw uint32)."""

PyTree = Any
"""A nested structure of arrays (tuple, list, dict, NamedTuple)."""

__all__ = ["Array", "ArrayLike", "PRNGKey", "PyTree"]

"""Guards that keep NaN and Inf local (an output is non-finite only when its
window holds a non-finite input or weight, as with XLA's convolution).

Fast formulations that multiply structural zeros — zero-padded kernels,
Toeplitz blocks, padding zeros meeting the weights — would turn a distant
Inf into NaN.  They run behind :func:`finite_or`, which takes an exact
per-window formulation when an operand is not all finite.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def finite_or(a, fast, safe):
    """``fast()`` when every element of ``a`` is finite, else ``safe()``.

    Integer operands are always finite: ``fast()`` with no conditional.
    """
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        return fast()
    return lax.cond(jnp.all(jnp.isfinite(a)), lambda: fast(), lambda: safe())

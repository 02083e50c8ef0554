"""Guards that keep NaN and Inf local (an output is non-finite only when its
window holds a non-finite input or weight, as with XLA's convolution).

Fast formulations that multiply structural zeros — zero-padded kernels,
Toeplitz blocks, padding zeros meeting the weights — would turn a distant
Inf into NaN.  They run behind :func:`finite_or`, which takes an exact
per-window formulation when an operand is not all finite, or behind
:func:`poison_windows`, which repairs the fast result.

On GPU and TPU a conditional is a host round trip (the predicate is copied
to the host and the stream drained), so the profiles of those devices ask
for *branch-free* guards (``Profile.branch_free``): :func:`finite_or` then
computes both formulations and selects, and the long 1-D depthwise GEMMs
use :func:`poison_windows` instead.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax


def finite_or(a, fast, safe, branch_free=False):
    """``fast()`` when every element of ``a`` is finite, else ``safe()``.

    ``a``: an array or a tuple of arrays (all must be finite).  Integer
    operands are always finite: ``fast()`` with no conditional.
    ``branch_free``: no ``lax.cond``; both are computed and one selected.
    """
    arrays = [v for v in (a if isinstance(a, tuple) else (a,))
              if jnp.issubdtype(v.dtype, jnp.inexact)]
    if not arrays:
        return fast()
    ok = jnp.all(jnp.isfinite(arrays[0]))
    for v in arrays[1:]:
        ok = ok & jnp.all(jnp.isfinite(v))
    if branch_free:
        return jnp.where(ok, fast(), safe())
    return lax.cond(ok, lambda: fast(), lambda: safe())


def poison_windows(x, linear, out_dtype):
    """``linear(x)`` for a window operator whose fast form spreads non-finites.

    ``linear`` maps ``x (..., C)`` to outputs that each sum a window of
    ``x`` (a convolution with a fixed kernel), exactly for finite inputs.
    It runs on ``x`` with its non-finite values replaced by zeros, and
    again, with the kernel's weights all ones (``linear(ind, ones=True)``),
    on the indicator of those values: the outputs whose window held one are
    set to NaN, every other output is the exact sum.  An output whose window
    holds a NaN or Inf is thus non-finite, as in the direct sum, and no
    other is; no conditional.
    """
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return linear(x, False)
    finite = jnp.isfinite(x)
    clean = linear(jnp.where(finite, x, jnp.zeros((), x.dtype)), False)
    hits = linear((~finite).astype(out_dtype), True)
    return jnp.where(hits > 0.5, jnp.array(jnp.nan, clean.dtype), clean)


def tap_hits(bad, kernel, pads, stride, dilation, out, lhs_dilation=None):
    """Which ``(tap, input channel)`` pairs meet a flagged input element.

    ``bad (N, *S, I)``: the input's flags (nonzero where flagged), before
    the lhs dilation ``lhs_dilation`` (default none) and the padding
    ``pads``; ``kernel``, ``stride``, ``dilation`` and the output size
    ``out`` give the windows.  Returns ``(*K, I)`` booleans:
    ``[t, i]`` is True when some image's flagged element of channel ``i``
    is read by tap ``t`` for some output, i.e. exactly the kernel-gradient
    entries ``dw[t, i, :]`` that a non-finite input makes non-finite in the
    definition ``dw[t] = sum_q x[q*s + t*d] (outer) ct[q]``.  One small
    pass per tap over the flags reduced over the batch (a scan over the
    taps: kernels of any size).
    """
    nd = len(kernel)
    lhs_dilation = lhs_dilation or (1,) * nd
    flags = lax.pad(jnp.any(bad != 0, axis=0).astype(jnp.uint8), jnp.uint8(0),
                    [*((lo, hi, s - 1) for (lo, hi), s in zip(pads, lhs_dilation)),
                     (0, 0, 0)]).astype(bool)
    extent = tuple((o - 1) * s + 1 for o, s in zip(out, stride))
    offsets = jnp.asarray(np.array(list(np.ndindex(*kernel)), np.int32).reshape(-1, nd)
                          * np.array(dilation, np.int32))
    zero = jnp.zeros((), jnp.int32)

    def one(_, off):
        win = lax.dynamic_slice(flags, (*(off[a] for a in range(nd)), zero),
                                (*extent, flags.shape[-1]))
        win = win[(*(slice(None, None, s) for s in stride), slice(None))]
        return None, jnp.any(win, axis=tuple(range(nd)))

    if math.prod(out) == 0:
        return jnp.zeros((*kernel, flags.shape[-1]), bool)
    return lax.scan(one, None, offsets)[1].reshape(*kernel, flags.shape[-1])

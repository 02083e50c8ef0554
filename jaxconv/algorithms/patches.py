"""im2col: gather every tap's slice into a patch tensor, then one contraction.

``patches[n, *o, t, c] = x[n, *(o*s + k_t*d), c]`` for every tap ``t``; the
convolution is then a single (grouped) einsum over ``(t, i)``.  This trades
memory (the patch tensor is ``prod(K)`` times the output's spatial size times
``C``) for one large GEMM.
"""

from __future__ import annotations

import jax.numpy as jnp

from .._taps import tap_offsets, tap_slice
from ._common import flat_taps, out_spatial


def extract_patches(x, kernel, out, stride, dilation):
    """Stack the tap slices of ``x (N, *P, C)`` into ``(N, *out, T, C)``."""
    taps = [tap_slice(x, tap, out, stride, dilation) for tap in tap_offsets(kernel)]
    return jnp.stack(taps, axis=-2)


def conv_patches(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """One-contraction (im2col) convolution on the canonical problem."""
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    wt, t = flat_taps(w)
    i, o = wt.shape[-2:]
    p = extract_patches(x, kernel, out, stride, dilation)  # (N, *out, T, C)
    lead = p.shape[:-2]
    p = p.reshape(*lead, t, groups, i)
    wg = wt.reshape(t, i, groups, o // groups)
    res = jnp.einsum(
        "...tgi,tigo->...go", p, wg, precision=precision,
        preferred_element_type=acc_dtype,
    )
    return res.reshape(*lead, o)

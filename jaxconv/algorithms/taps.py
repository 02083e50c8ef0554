"""Shift-and-accumulate: ``out = sum over taps t of slice_t(x) @ w[t]``.

Each kernel tap contributes one strided slice of the input times that tap's
``(I, O)`` weight matrix.  Small kernels unroll the sum (XLA fuses the slices
into the products); large kernels (``> UNROLL_LIMIT`` taps) loop with
``lax.scan`` over ``dynamic_slice`` so compile time stays bounded.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from .._taps import tap_offsets, tap_slice
from ._common import contract_tap, flat_taps, out_spatial

UNROLL_LIMIT = 64


def conv_taps(x, w, *, stride, dilation, groups, precision, acc_dtype):
    """Shift-and-accumulate convolution on the canonical problem."""
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    wt, t = flat_taps(w)
    if t > UNROLL_LIMIT:
        return _taps_scan(x, wt, kernel, out, stride, dilation, groups,
                          precision, acc_dtype)
    acc = None
    for i, tap in enumerate(tap_offsets(kernel)):
        xs = tap_slice(x, tap, out, stride, dilation)
        term = contract_tap(xs, wt[i], groups, precision, acc_dtype)
        acc = term if acc is None else acc + term
    return acc


def _taps_scan(x, wt, kernel, out, stride, dilation, groups, precision, acc_dtype):
    n, c = x.shape[0], x.shape[-1]
    extent = tuple((o - 1) * s + 1 for o, s in zip(out, stride))
    offsets = jnp.asarray(
        np.array(list(tap_offsets(kernel)), dtype=np.int32).reshape(-1, len(kernel))
        * np.array(dilation, dtype=np.int32)
    )
    steps = tuple(slice(None, None, s) for s in stride)

    def step(acc, tap):
        offset, wk = tap
        zero = jnp.zeros((), jnp.int32)
        start = (zero, *(offset[i] for i in range(len(kernel))), zero)
        xs = lax.dynamic_slice(x, start, (n, *extent, c))[(slice(None), *steps)]
        return acc + contract_tap(xs, wk, groups, precision, acc_dtype), None

    init = jnp.zeros((n, *out, wt.shape[-1]), acc_dtype)
    acc, _ = lax.scan(step, init, (offsets, wt))
    return acc


"""Custom derivative rules where autodiff of the fast forward is slow.

Rules are ``jax.custom_jvp`` (not ``custom_vjp``), so forward mode
(``jax.jvp``, ``check_grads(modes=("fwd",))``), reverse mode and every higher
order keep working: the tangent rule is a sum of *linear* convolutions, and
JAX transposes it for reverse mode.  The speed comes from choosing, for each
linear piece, a formulation whose transpose is fast.

Depthwise kernels (``depthwise_with_fast_kernel_grad``).  Autodiff of
``out = sum_t slice_t(x) * w[t]`` gives, for the kernel gradient,
``g[t] = sum over all positions of slice_t(x) * ct``: one XLA reduction per
tap over the leading (row) axis with the slicing fused in, which runs 10-20x
slower than the forward on CPU (it walks rows with a large stride).  The
kernel tangent is therefore written with each tap's weight *doubled up* to
the full output by concatenation (``_unhalve``): its transpose is a pairwise
halving tree of elementwise adds over the rows, then one small reduction
over a single row.  The input tangent uses the fast forward itself (its
transpose — pad and add — is already memory-bound).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from .._taps import tap_offsets, tap_slice
from ._common import flat_taps, out_spatial


@partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def depthwise_with_fast_kernel_grad(x, w, stride, dilation, groups, acc_dtype):
    """``depthwise._depthwise_unrolled`` with the derivative rule above."""
    from .depthwise import _depthwise_unrolled

    return _depthwise_unrolled(x, w, stride, dilation, groups, acc_dtype)


@depthwise_with_fast_kernel_grad.defjvp
def _depthwise_jvp(stride, dilation, groups, acc_dtype, primals, tangents):
    x, w = primals
    tx, tw = tangents
    y = depthwise_with_fast_kernel_grad(x, w, stride, dilation, groups, acc_dtype)
    ty = depthwise_with_fast_kernel_grad(tx, w, stride, dilation, groups, acc_dtype)
    ty = ty + _depthwise_tree(x, tw, stride, dilation, groups, acc_dtype)
    return y, ty


def _unhalve(v, n: int, axis: int):
    """Broadcast a size-1 ``axis`` of ``v`` to size ``n`` by repeated doubling.

    The transpose of this (what reverse mode runs) is a pairwise halving tree
    of elementwise adds: a reduction over ``axis`` that XLA's CPU backend runs
    at memory speed, where its own reduce over a leading axis is 10x slower.
    """
    sizes = []
    while n > 1:
        sizes.append(n)
        n //= 2
    for size in reversed(sizes):
        h = size // 2
        parts = [v, v]
        if size % 2:
            parts.append(lax.slice_in_dim(v, 0, 1, axis=axis))
        v = jnp.concatenate(parts, axis=axis)
        del h
    return v


def _depthwise_tree(x, w, stride, dilation, groups, acc_dtype):
    """The depthwise conv, linear in ``w``, shaped for a fast transpose.

    Each tap's weights are broadcast over the batch and the trailing output
    axes (transpose: one small reduction) and doubled up along the first
    output axis (transpose: a halving tree of elementwise adds), then
    multiplied by that tap's input slice.
    """
    kernel = w.shape[:-2]
    out = out_spatial(x.shape, kernel, stride, dilation)
    wt, t = flat_taps(w)  # (T, 1, O)
    n, c = x.shape[0], x.shape[-1]
    o = wt.shape[-1]
    m = o // groups
    acc = None
    for i, tap in enumerate(tap_offsets(kernel)):
        wi = jnp.broadcast_to(wt[i].astype(acc_dtype).reshape((1,) * (len(out) + 1) + (o,)),
                              (n, 1, *out[1:], o))
        wi = _unhalve(wi, out[0], axis=1)
        xs = tap_slice(x, tap, out, stride, dilation).astype(acc_dtype)
        if m == 1:
            term = xs * wi
        else:
            term = (xs.reshape(*xs.shape[:-1], groups, 1)
                    * wi.reshape(*wi.shape[:-1], groups, m)).reshape(*xs.shape[:-1], o)
        acc = term if acc is None else acc + term
    del c
    return acc
